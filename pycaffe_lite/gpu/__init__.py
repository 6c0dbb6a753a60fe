"""GPU support on CuPy: kernels, host-to-device staging, device information and timers.

Importing this package does not import CuPy; each function that needs it
imports it on first use (through `backend.cupy_module`, whose error says
how to install it).  Modules:

    kernels   im2col / col2im / pooling as CuPy ElementwiseKernels templated on the dtype,
              each with the NumPy function it mirrors (`KERNELS[name].numpy_reference`)
    staging   DeviceStager: pinned host batches, a copy stream, an event the net waits on
    device    device_query lines, memory, CUDA-event timers
    emulate   the kernels' CUDA code compiled as C++ and run on NumPy arrays (tests)

See docs/gpu.md for running the GPU tests and benchmark on a device machine.
"""
