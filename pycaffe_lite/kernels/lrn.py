"""The Numba running sum of LRN's ACROSS_CHANNELS window; the reference is
layers.lrn.channel_window_sum (the whole-array version, also what CuPy runs)."""
import numpy as np

from . import HAVE_NUMBA

_KERNELS = {}


def _window_sum_loops(a, size, pre_pad, square, factor, start, out):
    # Running sum over channels (Caffe's head-add / tail-subtract), accumulated in float64.
    N, C, M = a.shape
    acc = np.zeros(M, np.float64)
    for n in range(N):
        acc[:] = 0.0
        for c in range(min(size - pre_pad - 1, C)):
            for i in range(M):
                v = a[n, c, i]
                acc[i] += v * v if square else v
        for c in range(C):
            head = c - pre_pad + size - 1
            tail = c - pre_pad - 1
            if head < C:
                for i in range(M):
                    v = a[n, head, i]
                    acc[i] += v * v if square else v
            if tail >= 0:
                for i in range(M):
                    v = a[n, tail, i]
                    acc[i] -= v * v if square else v
            for i in range(M):
                out[n, c, i] = start + factor * acc[i]


def window_sum_kernel():
    """_window_sum_loops compiled (once)."""
    if not HAVE_NUMBA:
        raise RuntimeError("the LRN window-sum kernel needs Numba (kernels.HAVE_NUMBA is False)")
    if "window_sum" not in _KERNELS:
        import numba
        _KERNELS["window_sum"] = numba.njit(cache=True, nogil=True, fastmath=True)(_window_sum_loops)
    return _KERNELS["window_sum"]
