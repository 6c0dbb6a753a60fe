"""Array kernels of the ground floor: plain functions of NumPy / CuPy arrays that
layers, solvers and tools above share."""
