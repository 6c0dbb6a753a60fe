"""One-pass parameter updates on the CPU (Numba), for the solvers' hot loop.

Caffe's update is a sequence of BLAS calls, each a pass over the parameter:
normalize, regularize, the solver rule, copy the step into the diff, and
net.update().  On a large net (CaffeNet's 61 M parameters) those passes cost
a quarter of a training iteration.  `sgd_step` does the whole sequence for
one parameter in a single parallel pass, with the same float32 operations in
the same order, so the result is bit-identical to the step-by-step path
(Solver.update_param, which stays the reference, and the path for CuPy arrays
and other solvers).
"""
import numpy as np

from .. import kernels

# Below this many elements the Numba worker threads cost more than they save.
_PARALLEL_MIN = 1 << 16

_KERNELS = {}


def available(*arrays):
    """True when the fused kernels can run on these arrays (NumPy, float32/float64, contiguous)."""
    return kernels.HAVE_NUMBA and all(
        type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous for a in arrays)


def _sgd_kernel(parallel):
    if parallel not in _KERNELS:
        import numba

        @numba.njit(parallel=parallel, nogil=True, cache=True, error_model="numpy")
        def sgd(data, diff, history, scale, decay, l1, lr, momentum):
            for k in numba.prange(data.size):
                g = diff[k]
                if scale != 1:
                    g = g * scale                       # normalize: diff *= 1 / iter_size
                if decay != 0:
                    w = data[k]
                    if not l1:
                        g = g + w * decay               # regularize L2: diff += decay * w
                    elif w > 0:
                        g = g + decay                   # regularize L1: diff += decay * sign(w)
                    elif w < 0:
                        g = g - decay
                    else:
                        g = g + w * decay               # sign(0) = 0, sign(nan) = nan
                h = history[k] * momentum + g * lr      # h = momentum * h + lr * diff
                history[k] = h
                diff[k] = h                             # Caffe leaves the step in the diff
                data[k] = data[k] - h                   # net.update(): data -= diff
        _KERNELS[parallel] = sgd
    return _KERNELS[parallel]


def sgd_step(data, diff, history, *, scale, decay, l1, lr, momentum):
    """Normalize, regularize and momentum-SGD one parameter, then subtract the step from data.

    The scalars must already be in the parameter's dtype (as Caffe computes them)."""
    kernel = _sgd_kernel(data.size >= _PARALLEL_MIN)
    kernel(data.reshape(-1), diff.reshape(-1), history.reshape(-1), scale, decay, bool(l1), lr, momentum)


def all_finite(arrays):
    """Whether every element of every array is finite (one parallel pass, no temporaries)."""
    if "finite" not in _KERNELS:
        import numba

        @numba.njit(parallel=True, nogil=True, cache=True)
        def finite(a):
            bad = 0
            for k in numba.prange(a.size):
                v = a[k]
                bad += not (v - v == 0)                  # inf - inf and nan - nan are nan
            return bad == 0
        _KERNELS["finite"] = finite
    return all(_KERNELS["finite"](a.reshape(-1)) for a in arrays)
