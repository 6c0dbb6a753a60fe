"""Numba kernels of max pooling on the CPU; the reference is layers.pooling.max_pool_forward /
max_pool_backward (the array functions, also what CuPy runs)."""
from . import HAVE_NUMBA

_KERNELS = {}


def _make_max_pool_kernels(KH, KW, SH, SW):
    """Forward and backward loops compiled for one kernel size and stride.

    KH, KW, SH and SW are constants to Numba, so the window loops of windows
    wholly inside the image unroll into branch-free selects that vectorise
    across the row (5x faster than loops with run-time bounds, and a constant
    stride doubles that again); windows clipped by padding or ceil rounding
    take the general loop.  Channels run in parallel."""
    import numba
    from numba import prange

    def forward(x, ph, pw, lowest, top, argk):
        sh, sw = SH, SW
        NC, H, W = x.shape
        Ho, Wo = top.shape[1:]
        lo = min(Wo, (pw + sw - 1) // sw)                 # the first column wholly inside
        hi = max(lo, min(Wo, (W + pw - KW) // sw + 1))    # past the last one
        for nc in prange(NC):
            xs = x[nc]
            for oy in range(Ho):
                hs = oy * sh - ph
                inside = hs >= 0 and hs + KH <= H
                if inside:
                    for ox in range(lo, hi):
                        ws = ox * sw - pw
                        best = lowest
                        which = -1
                        for i in range(KH):
                            for j in range(KW):
                                v = xs[hs + i, ws + j]
                                better = v > best         # strict: the first maximum wins, as Caffe's
                                best = v if better else best
                                which = i * KW + j if better else which
                        top[nc, oy, ox] = best
                        argk[nc, oy, ox] = which
                h0, h1 = max(hs, 0), min(hs + KH, H)
                for ox in range(Wo):
                    if inside and lo <= ox < hi:
                        continue
                    ws = ox * sw - pw
                    best = lowest
                    which = -1
                    for h in range(h0, h1):
                        for w in range(max(ws, 0), min(ws + KW, W)):
                            v = xs[h, w]
                            if v > best:
                                best = v
                                which = (h - hs) * KW + (w - ws)
                    top[nc, oy, ox] = best
                    argk[nc, oy, ox] = which

    def backward(top_diff, argk, ph, pw, grad):
        sh, sw = SH, SW
        NC, Ho, Wo = top_diff.shape
        for nc in prange(NC):
            g = grad[nc]
            g[...] = 0
            for oy in range(Ho):
                for ox in range(Wo):
                    k = argk[nc, oy, ox]
                    if k >= 0:
                        g[oy * sh - ph + k // KW, ox * sw - pw + k % KW] += top_diff[nc, oy, ox]

    jit = numba.njit(parallel=True, nogil=True, cache=True, error_model="numpy")
    return jit(forward), jit(backward)


def max_pool_kernels(kernel, stride):
    """(forward, backward) compiled for this kernel size and stride (kept for the next call)."""
    if not HAVE_NUMBA:
        raise RuntimeError("the max-pooling kernels need Numba (kernels.HAVE_NUMBA is False)")
    key = tuple(kernel) + tuple(stride)
    if key not in _KERNELS:
        _KERNELS[key] = _make_max_pool_kernels(*key)
    return _KERNELS[key]
