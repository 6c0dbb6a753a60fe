"""Array kernels of the ground floor: plain functions of NumPy / CuPy arrays that layers, solvers and
tools above share (quantize: Ristretto's trims), and the Numba kernels for the CPU hot loops that
whole-array NumPy does badly, with the one switch.

Each Numba kernel has a plain array version (also what CuPy runs) in the module that calls it; REFERENCES
names that version for every kernel, and the tests compare the two.  `HAVE_NUMBA` is False when Numba
cannot be imported, or when PYCAFFE_LITE_NO_NUMBA=1, and the callers then use the array versions
everywhere.  Modules: conv (im2col, col2im, depthwise, Winograd transforms; winograd_codelets is
generated), pooling (max pooling), lrn (LRN's channel window sums), elementwise (per-channel
affine / normalize, ReLU), updates (the fused SGD step, the finiteness check), xnor (bit packing
and the XNOR / AND popcount GEMMs of binary nets).
"""
import importlib
import os

# Numba's OpenMP workers and OpenBLAS's workers take turns on the same cores
# (transform, GEMM, transform).  By default both spin-wait after their parallel
# section, and each then runs against the other's spinning threads: measured on
# 2 cores, Winograd ran 1.35x slower and im2col 1.1x.  Numba's OpenMP pool is
# started lazily, so asking it to sleep when idle still works here; OpenBLAS
# reads OPENBLAS_THREAD_TIMEOUT (4 = sleep at once) only when NumPy is first
# imported, so that one must be set before any `import numpy` (the benchmarks
# do; see the lead's notes for the CLI).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HAVE_NUMBA = False
# Below this many elements of work the plain array versions run instead: waking
# Numba's worker threads costs tens of microseconds on a quiet machine and up
# to a scheduler time slice (milliseconds) on a busy one.
MIN_WORK = int(os.environ.get("PYCAFFE_LITE_NUMBA_MIN_WORK", 1 << 17))
if os.environ.get("PYCAFFE_LITE_NO_NUMBA", "") not in ("1", "true", "yes"):
    try:
        import numba  # noqa: F401
        HAVE_NUMBA = True
    except Exception:  # pragma: no cover - numba missing or broken
        HAVE_NUMBA = False
if HAVE_NUMBA:
    from ._cache import ensure_cache_locator
    HAVE_NUMBA = ensure_cache_locator()

# kernel (module.function here) -> its NumPy reference ("module:function"); the tests compare the two.
REFERENCES = {
    "conv.im2col": "pycaffe_lite.conv.im2col:im2col_array",
    "conv.col2im": "pycaffe_lite.conv.im2col:col2im_array",
    "conv.batch_major": "pycaffe_lite.conv.im2col:batch_major_array",
    "conv.channel_major": "pycaffe_lite.conv.im2col:channel_major_array",
    "conv.depthwise_forward": "pycaffe_lite.conv.im2col:depthwise_forward_array",
    "conv.depthwise_backward_data": "pycaffe_lite.conv.im2col:depthwise_backward_data_array",
    "conv.depthwise_backward_weights": "pycaffe_lite.conv.im2col:depthwise_backward_weights_array",
    "conv.winograd_input": "pycaffe_lite.conv.winograd:input_transform_array",
    "conv.winograd_output": "pycaffe_lite.conv.winograd:output_transform_array",
    "conv.winograd_dy": "pycaffe_lite.conv.winograd:dy_transform_array",
    "conv.winograd_dx": "pycaffe_lite.conv.winograd:dx_transform_array",
    "pooling.max_pool_kernels": "pycaffe_lite.layers.pooling:max_pool_forward",   # and max_pool_backward
    "lrn.window_sum_kernel": "pycaffe_lite.layers.lrn:channel_window_sum",
    "elementwise._affine": "pycaffe_lite.kernels.elementwise:channel_affine_array",
    "elementwise._normalize": "pycaffe_lite.kernels.elementwise:channel_normalize_array",
    "elementwise._relu": "pycaffe_lite.kernels.elementwise:relu_array",
    "updates.sgd_step": "pycaffe_lite.solvers.solver:Solver.update_param",      # Caffe's step-by-step update
    "updates.all_finite": "numpy:isfinite",
    "xnor._xnor_gemm": "pycaffe_lite.kernels.xnor:xnor_gemm_reference",
    "xnor._and_gemm": "pycaffe_lite.kernels.xnor:and_gemm_reference",
}


def reference(kernel):
    """The NumPy reference function of a kernel named as in REFERENCES."""
    module, _, path = REFERENCES[kernel].partition(":")
    value = importlib.import_module(module)
    for part in path.split("."):
        value = getattr(value, part)
    return value
