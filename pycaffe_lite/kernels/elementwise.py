"""Per-channel and elementwise passes over large blobs, on every core.

NumPy runs `x * scale[c] + bias[c]` on one thread and, without `out=`, through
temporaries; on a ResNet these passes (BatchNorm, Scale, ReLU) cost as much as
the convolutions.  Here each is one parallel pass of Numba over (outer, channel)
planes, with the same float32 operations in the same order as the NumPy
expressions they replace (no fused multiply-add), so results are bit-identical.
CuPy arrays, small blobs and machines without Numba take the `xp` ufuncs.

Arrays are viewed as (outer, channels, inner); per-channel vectors have
`channels` entries.
"""
from .. import kernels
from ..backend import get_array_module

if kernels.HAVE_NUMBA:
    from numba import njit, prange, uint64

    @njit(parallel=True, cache=True)
    def _affine(x, mul, add, out):
        outer, channels, inner = x.shape
        with_add = add.shape[0] == channels
        for job in prange(outer * channels):
            o = job // channels
            c = job - o * channels
            src = x[o, c]
            dst = out[o, c]
            m = mul[c]
            if with_add:
                a = add[c]
                for i in range(uint64(inner)):
                    dst[i] = src[i] * m + a
            else:
                for i in range(uint64(inner)):
                    dst[i] = src[i] * m

    @njit(parallel=True, cache=True)
    def _normalize(x, sub, div, out):
        outer, channels, inner = x.shape
        for job in prange(outer * channels):
            o = job // channels
            c = job - o * channels
            src = x[o, c]
            dst = out[o, c]
            s = sub[c]
            d = div[c]
            for i in range(uint64(inner)):
                dst[i] = (src[i] - s) / d

    @njit(parallel=True, cache=True)
    def _relu(x, out, zero):
        flat_x = x.reshape(x.size)
        flat_out = out.reshape(out.size)
        chunk = 1 << 14
        for job in prange((x.size + chunk - 1) // chunk):
            start = job * chunk
            for i in range(uint64(start), uint64(min(start + chunk, x.size))):
                v = flat_x[i]
                flat_out[i] = zero if v <= 0 else v     # as np.maximum(x, 0): NaN stays NaN, -0 -> +0


def _numba_ok(*arrays):
    a = arrays[0]
    return (kernels.HAVE_NUMBA and get_array_module(a).__name__ == "numpy" and a.size >= kernels.MIN_WORK
            and all(b.flags.c_contiguous and b.dtype == a.dtype for b in arrays))


def channel_affine(x3, mul, add, out3):
    """out3 = x3 * mul[c] (+ add[c]); x3, out3 (outer, C, inner), may be the same array."""
    if _numba_ok(x3, out3, mul) and (add is None or add.dtype == x3.dtype):
        _affine(x3, mul, mul[:0] if add is None else add, out3)
        return out3
    return channel_affine_array(x3, mul, add, out3)


def channel_affine_array(x3, mul, add, out3):
    """channel_affine by xp ufuncs (the reference, and the CuPy path)."""
    xp = get_array_module(x3)
    xp.multiply(x3, mul.reshape(1, -1, 1), out=out3)
    if add is not None:
        xp.add(out3, add.reshape(1, -1, 1), out=out3)
    return out3


def channel_normalize(x3, sub, div, out3):
    """out3 = (x3 - sub[c]) / div[c]; x3, out3 (outer, C, inner), may be the same array."""
    if _numba_ok(x3, out3, sub, div):
        _normalize(x3, sub, div, out3)
        return out3
    return channel_normalize_array(x3, sub, div, out3)


def channel_normalize_array(x3, sub, div, out3):
    """channel_normalize by xp ufuncs (the reference, and the CuPy path)."""
    xp = get_array_module(x3)
    xp.subtract(x3, sub.reshape(1, -1, 1), out=out3)
    xp.divide(out3, div.reshape(1, -1, 1), out=out3)
    return out3


def relu(x, out):
    """out = max(x, 0), as np.maximum(x, 0) (NaN propagates); x and out may be the same array."""
    if _numba_ok(x, out) and x.dtype.kind == "f":
        _relu(x, out, x.dtype.type(0))
        return out
    return relu_array(x, out)


def relu_array(x, out):
    """relu by xp.maximum (the reference, and the CuPy path)."""
    return get_array_module(x).maximum(x, 0, out=out)
