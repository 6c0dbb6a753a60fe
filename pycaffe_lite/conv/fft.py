"""The FFT engine: stride-1 convolutions as products of real 2-D spectra.

The output is cut into tiles of T = (Th, Tw) pixels; each needs an input
patch of S = T + extent - 1 pixels, and with FFTs of size S a circular
correlation gives the tile's values exactly (no wrap-around reaches them):

    X = rfft2(input patches)       (F, C, M)    F = Sh*(Sw//2+1), M = N*tiles
    W = conj(rfft2(kernels, S))    (F, K, C)    dilation: zeros inserted first
    Y = W @ X                      one batched complex GEMM over frequencies
    y = irfft2(Y) cropped to T     then put back in NCHW, bias added

The backward passes use the same tiles: dx is the full convolution of dy with
the kernels (irfft2(W^H-ish product) of size S per tile, overlap-added), dw the
correlation of the input patches with dy (irfft2 of sum_m conj(DY) X, cropped
to the kernel).  One tile covering the whole image is the untiled FFT; the
tile size is chosen by a cost model (transforms against frequency-domain
GEMMs), so that large inputs use small FFTs.

`forward(..., ctx=d)` stores the spectra of the input and the kernels in the
dict `d`; `backward(..., ctx=d)` reuses them when input and weights are
unchanged (checked by a fingerprint), saving two of the five transforms.

Array module: numpy with scipy.fft (multi-threaded) when scipy is present,
numpy.fft otherwise, cupy.fft on the GPU.
"""
import math
import os

from ..backend import get_array_module
from .workspace import fingerprint, workspace

_WORKERS = int(os.environ.get("PYCAFFE_LITE_FFT_WORKERS", os.cpu_count() or 1))


def _fft_module(xp):
    if xp.__name__ == "numpy":
        try:
            import scipy.fft as sfft
            return sfft, {"workers": _WORKERS}
        except ImportError:  # pragma: no cover
            return xp.fft, {}
    return xp.fft, {}


def _rfft2(xp, a, s, axes=(-2, -1)):
    mod, kw = _fft_module(xp)
    return mod.rfftn(a, s=s, axes=axes, **kw)


def _irfft2(xp, a, s, axes=(-2, -1)):
    mod, kw = _fft_module(xp)
    return mod.irfftn(a, s=s, axes=axes, **kw)


def supports(geom, x_shape=None, w_shape=None):
    """Stride-1 convolutions (any kernel, pad, dilation and group)."""
    return geom.unit_stride


_GOOD_SIZES = (8, 10, 12, 16, 18, 20, 24, 27, 30, 32, 36, 40, 45, 48, 54, 60, 64, 72, 80, 90, 96,
               108, 120, 128, 144, 160, 180, 192, 216, 240, 256)


def _next_good(n):
    for s in _GOOD_SIZES:
        if s >= n:
            return s
    return 2 ** math.ceil(math.log2(n))


def plan_tiles(x_shape, k, geom, tile=None):
    """((Th, Tw), (Sh, Sw)): output tile and FFT size for this layer.

    A cost model in CPU nanoseconds, fitted on this kind of machine: an S x S
    real FFT costs about 0.75 ns per pixel * log2(pixels), a complex GEMM
    multiply-add about 0.12 ns, and copying a complex value about 2 ns."""
    n, c, h, w = x_shape
    eh, ew = geom.extent
    ho, wo = geom.output_hw(h, w)
    if tile is not None:
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        th, tw = min(th, ho), min(tw, wo)
        return (th, tw), (th + eh - 1, tw + ew - 1)
    g = geom.group
    cg = c // g

    def sizes(out, e):
        full = _next_good(out + e - 1)
        cands = {full}
        for s in _GOOD_SIZES:
            if s - e + 1 >= 1 and s < full:
                cands.add(s)
        return sorted(cands)

    best = None
    for sh in sizes(ho, eh):
        for sw in sizes(wo, ew):
            th, tw = min(sh - eh + 1, ho), min(sw - ew + 1, wo)
            tiles = math.ceil(ho / th) * math.ceil(wo / tw)
            m = n * tiles
            px = sh * sw
            f = sh * (sw // 2 + 1)
            transforms = m * c + k * cg + m * k
            cost = (0.75 * px * math.log2(max(px, 2)) * transforms
                    + 0.12 * 4 * f * m * cg * k
                    + 2.0 * f * (m * c + m * k + k * cg))
            if best is None or cost < best[0]:
                best = (cost, (th, tw), (sh, sw))
    return best[1], best[2]


class _Plan:
    def __init__(self, x_shape, k, geom, tile=None):
        n, c, h, w = x_shape
        self.n, self.c, self.h, self.w, self.k = n, c, h, w, k
        self.g = geom.group
        self.eh, self.ew = geom.extent
        self.ph, self.pw = geom.pad
        self.ho, self.wo = geom.output_hw(h, w)
        (self.th, self.tw), (self.sh, self.sw) = plan_tiles(x_shape, k, geom, tile)
        self.nth = -(-self.ho // self.th)
        self.ntw = -(-self.wo // self.tw)
        self.m = n * self.nth * self.ntw
        self.f = self.sh * (self.sw // 2 + 1)
        # the padded input must reach every tile's patch (S may exceed T + extent - 1)
        self.hx = (self.nth - 1) * self.th + self.sh
        self.wx = (self.ntw - 1) * self.tw + self.sw


def _input_spectra(xp, x, geom, plan, ws):
    """(F, G, Cg, M) spectra of the input patches."""
    p = plan
    xpad = ws.get("fft_xpad", (p.n, p.c, p.hx, p.wx), x.dtype, xp)
    xpad.fill(0)
    xpad[:, :, p.ph:p.ph + p.h, p.pw:p.pw + p.w] = x
    s = xpad.strides
    patches = xp.lib.stride_tricks.as_strided(
        xpad, (p.n, p.c, p.nth, p.ntw, p.sh, p.sw), (s[0], s[1], p.th * s[2], p.tw * s[3], s[2], s[3]))
    spec = _rfft2(xp, patches, (p.sh, p.sw))                   # (N, C, nth, ntw, Sh, Sf)
    spec = spec.transpose(4, 5, 1, 0, 2, 3).reshape(p.f, p.g, p.c // p.g, p.m)
    return xp.ascontiguousarray(spec)


def _dilated(xp, w, geom):
    dh, dw = geom.dilation
    if (dh, dw) == (1, 1):
        return w
    k, cg, kh, kw = w.shape
    eh, ew = geom.extent
    out = xp.zeros((k, cg, eh, ew), w.dtype)
    out[:, :, ::dh, ::dw] = w
    return out


def _kernel_spectra(xp, w, geom, plan):
    """(F, G, Kg, Cg) conjugated spectra of the (dilated) kernels."""
    p = plan
    spec = _rfft2(xp, _dilated(xp, w, geom), (p.sh, p.sw))      # (K, Cg, Sh, Sf)
    kg = p.k // p.g
    spec = spec.reshape(p.g, kg, p.c // p.g, p.f).transpose(3, 0, 1, 2)
    return xp.ascontiguousarray(xp.conj(spec))


def _dy_spectra(xp, dy, plan, ws):
    """(F, G, Kg, M) spectra of the dy tiles, zero-padded to S."""
    p = plan
    if (p.nth * p.th, p.ntw * p.tw) != (p.ho, p.wo):
        ext = ws.get("fft_dyext", (p.n, p.k, p.nth * p.th, p.ntw * p.tw), dy.dtype, xp)
        ext.fill(0)
        ext[:, :, :p.ho, :p.wo] = dy
        dy = ext
    tiles = dy.reshape(p.n, p.k, p.nth, p.th, p.ntw, p.tw).transpose(0, 1, 2, 4, 3, 5)
    spec = _rfft2(xp, tiles, (p.sh, p.sw))                       # (N, K, nth, ntw, Sh, Sf)
    spec = spec.transpose(4, 5, 1, 0, 2, 3).reshape(p.f, p.g, p.k // p.g, p.m)
    return xp.ascontiguousarray(spec)


def forward(x, w, b, geom, out=None, ws=None, ctx=None, tile=None):
    """y = conv(x, w) + b for stride 1; `ctx` (a dict) keeps the spectra for backward."""
    xp = get_array_module(x)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w.shape)
    if not supports(geom):
        raise ValueError(f"the FFT engine needs stride 1, got stride {geom.stride}")
    k = w.shape[0]
    p = _Plan(x.shape, k, geom, tile)
    xs = _input_spectra(xp, x, geom, p, ws)
    wsp = _kernel_spectra(xp, w, geom, p)
    ys = xp.matmul(wsp, xs)                                       # (F, G, Kg, M)
    sf = p.sw // 2 + 1
    yt = _irfft2(xp, ys.reshape(p.sh, sf, p.k, p.n, p.nth, p.ntw), (p.sh, p.sw), axes=(0, 1))
    yt = yt[:p.th, :p.tw]                                         # (Th, Tw, K, N, nth, ntw)
    if out is None:
        out = xp.empty((p.n, k, p.ho, p.wo), x.dtype)
    full = yt.transpose(3, 2, 4, 0, 5, 1).reshape(p.n, k, p.nth * p.th, p.ntw * p.tw)
    full = full[:, :, :p.ho, :p.wo]
    if b is not None:
        xp.add(full, b.reshape(1, k, 1, 1), out=out)
    else:
        out[...] = full
    if ctx is not None:
        ctx.clear()
        ctx.update(plan=p, xs=xs, wsp=wsp, key=fingerprint(x, w), tile=tile)
    return out


def backward(x, w, dy, geom, need_dx=True, need_dw=True, dx_out=None, ws=None, ctx=None, tile=None):
    """(dx, dw) for stride 1; reuses the spectra of a matching forward kept in `ctx`."""
    xp = get_array_module(dy)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w.shape)
    if not supports(geom):
        raise ValueError(f"the FFT engine needs stride 1, got stride {geom.stride}")
    k = w.shape[0]
    xs = wsp = None
    if ctx and ctx.get("tile") == tile and ctx.get("key") == fingerprint(x, w):
        p, xs, wsp = ctx["plan"], ctx["xs"], ctx["wsp"]
    else:
        p = _Plan(x.shape, k, geom, tile)
    if ctx is not None:
        ctx.clear()          # spectra are used once; free them
    dys = _dy_spectra(xp, dy, p, ws)                              # (F, G, Kg, M)
    dx = dw = None
    if need_dw:
        if xs is None:
            xs = _input_spectra(xp, x, geom, p, ws)
        # dW_f = sum_m conj(DY_f[k, m]) X_f[c, m]  ->  (F, G, Kg, Cg)
        dws = xp.matmul(xp.conj(dys), xs.transpose(0, 1, 3, 2))
        xs = None
        sf = p.sw // 2 + 1
        full = _irfft2(xp, dws.reshape(p.sh, sf, p.k, p.c // p.g), (p.sh, p.sw), axes=(0, 1))
        dh, dwl = geom.dilation
        dw = full[:p.eh:dh, :p.ew:dwl].transpose(2, 3, 0, 1)
        dw = xp.ascontiguousarray(dw).astype(w.dtype, copy=False)
    if need_dx:
        if wsp is None:
            wsp = _kernel_spectra(xp, w, geom, p)
        # DX_f = W_f^T DY_f with W unconjugated: conj(wsp) transposed  ->  (F, G, Cg, M)
        dxs = xp.matmul(xp.conj(wsp).transpose(0, 1, 3, 2), dys)
        sf = p.sw // 2 + 1
        patches = _irfft2(xp, dxs.reshape(p.sh, sf, p.c, p.n, p.nth, p.ntw), (p.sh, p.sw), axes=(0, 1))
        dx = _overlap_add(xp, patches, p, dy.dtype, ws, dx_out)
    return dx, dw


def _overlap_add(xp, patches, p, dtype, ws, out):
    """Add the (Sh, Sw, C, N, nth, ntw) patches at tile offsets, crop the padding."""
    bh = -(-p.sh // p.th)   # how many tile-heights a patch spans
    bw = -(-p.sw // p.tw)
    hx = (p.nth + bh - 1) * p.th
    wx = (p.ntw + bw - 1) * p.tw
    acc = ws.zeros("fft_dxacc", (p.n, p.c, hx, wx), dtype, xp)
    for i in range(bh):
        rows = min(p.th, p.sh - i * p.th)
        for j in range(bw):
            cols = min(p.tw, p.sw - j * p.tw)
            # block (i, j) of every patch lands on disjoint places: one strided add
            dst = acc[:, :, i * p.th:(i + p.nth) * p.th, j * p.tw:(j + p.ntw) * p.tw]
            dst = dst.reshape(p.n, p.c, p.nth, p.th, p.ntw, p.tw)[:, :, :, :rows, :, :cols]
            src = patches[i * p.th:i * p.th + rows, j * p.tw:j * p.tw + cols]
            dst += src.transpose(3, 2, 4, 0, 5, 1)
    if out is None:
        out = xp.empty((p.n, p.c, p.h, p.w), dtype)
    out[...] = acc[:, :, p.ph:p.ph + p.h, p.pw:p.pw + p.w]
    return out


def backward_data(dy, w, geom, x_shape, out=None, ws=None, tile=None):
    """dx alone (the forward of a stride-1 Deconvolution)."""
    xp = get_array_module(dy)
    ws = ws or workspace()
    geom.check_shapes(x_shape, w.shape)
    p = _Plan(x_shape, w.shape[0], geom, tile)
    dys = _dy_spectra(xp, dy, p, ws)
    wsp = _kernel_spectra(xp, w, geom, p)
    dxs = xp.matmul(xp.conj(wsp).transpose(0, 1, 3, 2), dys)
    sf = p.sw // 2 + 1
    patches = _irfft2(xp, dxs.reshape(p.sh, sf, p.c, p.n, p.nth, p.ntw), (p.sh, p.sw), axes=(0, 1))
    return _overlap_add(xp, patches, p, dy.dtype, ws, out)


def backward_weights(x, dy, geom, w_shape, ws=None, tile=None):
    """dw alone (a Deconvolution's weight gradient)."""
    xp = get_array_module(x)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w_shape)
    p = _Plan(x.shape, w_shape[0], geom, tile)
    xs = _input_spectra(xp, x, geom, p, ws)
    dys = _dy_spectra(xp, dy, p, ws)
    dws = xp.matmul(xp.conj(dys), xs.transpose(0, 1, 3, 2))
    sf = p.sw // 2 + 1
    full = _irfft2(xp, dws.reshape(p.sh, sf, p.k, p.c // p.g), (p.sh, p.sw), axes=(0, 1))
    dh, dwl = geom.dilation
    return xp.ascontiguousarray(full[:p.eh:dh, :p.ew:dwl].transpose(2, 3, 0, 1)).astype(x.dtype, copy=False)
