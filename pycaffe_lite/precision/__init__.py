"""Reduced precision above the Net: Ristretto's quantization tool (ristretto.py).

The number formats are ground-floor array code (pycaffe_lite/kernels/quantize.py), since
the layers that compute in them (layers/ristretto.py, and every layer training in fixed
point through layer.py's wrappers) sit below this package and may not import it.
"""
