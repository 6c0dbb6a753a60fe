"""CUDA kernels for the loops whole-array CuPy does badly: im2col, col2im, pooling.

Each kernel is a CuPy `ElementwiseKernel` templated on the dtype (the type
placeholder `T`, taken from the arrays: nothing is hard-coded to float32;
float32 and float64 are the tested types), run over the elements of its
output, one thread per output element.  The raw inputs are indexed by hand; index arithmetic is in
`long long`, so arrays past 2**31 elements are safe.  None of them uses
atomics: col2im and the pooling backward passes *gather* (each input pixel
sums the outputs whose windows cover it) rather than scatter, so results do
not depend on thread scheduling, and the sums run in the order of the NumPy
reference's loops over kernel offsets (equal to it bit for bit wherever the
reference adds in that order; within rounding where it sums pairwise).

The Python entry points take CuPy arrays and return what the NumPy reference
returns, in the same layout:

    im2col(x, geom, out=None)                         cols (C*kh*kw, N, Ho*Wo)
    col2im(cols, x_shape, geom, out=None)             dx (N, C, H, W)
    max_pool_forward(x, kernel, stride, pad, out_size, out=None, argk=None)   (top, argk int32)
    max_pool_backward(top_diff, argk, kernel, stride, pad, in_size, out=None)  grad
    ave_pool_forward(x, kernel, stride, pad, out_size, out=None)               top
    ave_pool_backward(top_diff, kernel, stride, pad, in_size, out=None)        grad

(`out`: a caller's buffer, checked; `argk`: its scratch from the last pass, used when it fits.)  Given NumPy arrays
they call the reference (`KERNELS[name].numpy_reference`), so a caller may use
them unconditionally.  The layers reach them through one dispatch point each,
chosen by `on_device`: conv.im2col's im2col / col2im, layers.pooling's pool_kernels.  Tests run the very same kernel
bodies on the CPU through `pycaffe_lite.gpu.emulate` (a C++ translation of
each ElementwiseKernel), which checks the index arithmetic without a GPU.
"""
import contextlib
import importlib
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module, into, reused

# -FLT_MAX written so that it converts exactly to float's -FLT_MAX, and to the
# same double as the NumPy reference's float(np.finfo(np.float32).max).
_LOWEST = "(-3.4028234663852886e+38)"


@dataclass(frozen=True)
class KernelSpec:
    """One ElementwiseKernel: CuPy's four arguments plus the NumPy function it mirrors."""
    name: str
    in_params: str
    out_params: str
    operation: str
    numpy_reference: str    # "module:function" of the reference the tests compare with


_GEOM = ("int32 kh, int32 kw, int32 sh, int32 sw, int32 ph, int32 pw")

KERNELS = {}


def _spec(name, in_params, out_params, operation, numpy_reference):
    KERNELS[name] = KernelSpec(name, in_params, out_params, operation, numpy_reference)


# ---------------------------------------------------------------------------
# im2col: cols[(c*kh + ki)*kw + kj, img, ho*Wo + wo] = x[img, c, ho*sh - ph + ki*dh, wo*sw - pw + kj*dw]
# ---------------------------------------------------------------------------
_spec("pycaffe_im2col",
      "raw T x, int32 num, int32 channels, int32 height, int32 width, " + _GEOM
      + ", int32 dh, int32 dw, int32 out_h, int32 out_w",
      "T col",
      """
      const long long idx = i;
      const long long plane = (long long)out_h * out_w;
      const int wo = (int)(idx % out_w);
      const int ho = (int)((idx / out_w) % out_h);
      const int img = (int)((idx / plane) % num);
      const long long row = idx / (plane * num);
      const int kj = (int)(row % kw);
      const int ki = (int)((row / kw) % kh);
      const long long c = row / ((long long)kw * kh);
      const int y = ho * sh - ph + ki * dh;
      const int xx = wo * sw - pw + kj * dw;
      if (y >= 0 && y < height && xx >= 0 && xx < width) {
        col = x[(((long long)img * channels + c) * height + y) * width + xx];
      } else {
        col = (T)0;
      }
      """,
      "pycaffe_lite.conv.im2col:im2col_array")

# ---------------------------------------------------------------------------
# col2im: the adjoint of im2col, gathered per input pixel over the (ki, kj)
# offsets in row-major order (the order the reference adds them in)
# ---------------------------------------------------------------------------
_spec("pycaffe_col2im",
      "raw T col, int32 num, int32 channels, int32 height, int32 width, " + _GEOM
      + ", int32 dh, int32 dw, int32 out_h, int32 out_w",
      "T dx",
      """
      const long long idx = i;
      const int xx = (int)(idx % width);
      const int y = (int)((idx / width) % height);
      const long long c = (idx / ((long long)width * height)) % channels;
      const long long img = idx / ((long long)width * height * channels);
      const long long plane = (long long)out_h * out_w;
      T acc = (T)0;
      for (int ki = 0; ki < kh; ++ki) {
        const int ty = y + ph - ki * dh;
        if (ty < 0 || ty % sh != 0) continue;
        const int ho = ty / sh;
        if (ho >= out_h) continue;
        for (int kj = 0; kj < kw; ++kj) {
          const int tx = xx + pw - kj * dw;
          if (tx < 0 || tx % sw != 0) continue;
          const int wo = tx / sw;
          if (wo >= out_w) continue;
          const long long row = (c * kh + ki) * kw + kj;
          acc += col[(row * num + img) * plane + (long long)ho * out_w + wo];
        }
      }
      dx = acc;
      """,
      "pycaffe_lite.conv.im2col:col2im_array")

# ---------------------------------------------------------------------------
# MAX pooling: the first maximum in row-major window order, from -FLT_MAX
# ---------------------------------------------------------------------------
_spec("pycaffe_max_pool_fwd",
      "raw T x, int32 height, int32 width, int32 out_h, int32 out_w, " + _GEOM,
      "T top, int32 argk",
      """
      const long long idx = i;
      const int ox = (int)(idx % out_w);
      const int oy = (int)((idx / out_w) % out_h);
      const long long nc = idx / ((long long)out_w * out_h);
      const int hs = oy * sh - ph;
      const int ws = ox * sw - pw;
      T best = (T)""" + _LOWEST + """;
      int which = -1;
      for (int ki = 0; ki < kh; ++ki) {
        const int y = hs + ki;
        if (y < 0 || y >= height) continue;
        for (int kj = 0; kj < kw; ++kj) {
          const int xx = ws + kj;
          if (xx < 0 || xx >= width) continue;
          const T v = x[(nc * height + y) * width + xx];
          if (v > best) {
            best = v;
            which = ki * kw + kj;
          }
        }
      }
      top = best;
      argk = which;
      """,
      "pycaffe_lite.layers.pooling:max_pool_forward")

# Each input pixel gathers the top diffs of the windows whose winner it is.
# Windows are visited by decreasing (oy, ox), i.e. increasing kernel offset,
# the order in which the reference adds them.
_WINDOWS_COVERING = """
      const long long idx = i;
      const int xx = (int)(idx % width);
      const int y = (int)((idx / width) % height);
      const long long nc = idx / ((long long)width * height);
      const int py = y + ph;
      const int px = xx + pw;
      const int oy0 = py < kh ? 0 : (py - kh) / sh + 1;
      const int oy1 = py / sh + 1 < out_h ? py / sh + 1 : out_h;
      const int ox0 = px < kw ? 0 : (px - kw) / sw + 1;
      const int ox1 = px / sw + 1 < out_w ? px / sw + 1 : out_w;
      T acc = (T)0;
      for (int oy = oy1 - 1; oy >= oy0; --oy) {
        for (int ox = ox1 - 1; ox >= ox0; --ox) {
          const long long o = (nc * out_h + oy) * out_w + ox;
"""

_spec("pycaffe_max_pool_bwd",
      "raw T top_diff, raw int32 argk, int32 height, int32 width, int32 out_h, int32 out_w, " + _GEOM,
      "T grad",
      _WINDOWS_COVERING + """
          if (argk[o] == (py - oy * sh) * kw + (px - ox * sw)) acc += top_diff[o];
        }
      }
      grad = acc;
      """,
      "pycaffe_lite.layers.pooling:max_pool_backward")

# ---------------------------------------------------------------------------
# AVE pooling: sum inside the image / the window clipped to (H + ph, W + pw)
# ---------------------------------------------------------------------------
_spec("pycaffe_ave_pool_fwd",
      "raw T x, int32 height, int32 width, int32 out_h, int32 out_w, " + _GEOM,
      "T top",
      """
      const long long idx = i;
      const int ox = (int)(idx % out_w);
      const int oy = (int)((idx / out_w) % out_h);
      const long long nc = idx / ((long long)out_w * out_h);
      const int hs = oy * sh - ph;
      const int ws = ox * sw - pw;
      const int he = hs + kh < height + ph ? hs + kh : height + ph;
      const int we = ws + kw < width + pw ? ws + kw : width + pw;
      T acc = (T)0;
      for (int ki = 0; ki < kh; ++ki) {
        const int y = hs + ki;
        if (y < 0 || y >= height) continue;
        for (int kj = 0; kj < kw; ++kj) {
          const int xx = ws + kj;
          if (xx < 0 || xx >= width) continue;
          acc += x[(nc * height + y) * width + xx];
        }
      }
      top = acc / (T)((he - hs) * (we - ws));
      """,
      "pycaffe_lite.layers.pooling:ave_pool_forward")

_spec("pycaffe_ave_pool_bwd",
      "raw T top_diff, int32 height, int32 width, int32 out_h, int32 out_w, " + _GEOM,
      "T grad",
      _WINDOWS_COVERING + """
          const int hs = oy * sh - ph;
          const int ws = ox * sw - pw;
          const int he = hs + kh < height + ph ? hs + kh : height + ph;
          const int we = ws + kw < width + pw ? ws + kw : width + pw;
          acc += top_diff[o] / (T)((he - hs) * (we - ws));
        }
      }
      grad = acc;
      """,
      "pycaffe_lite.layers.pooling:ave_pool_backward")


# ---------------------------------------------------------------------------
# launching
# ---------------------------------------------------------------------------
_COMPILED = {}
_EMULATOR = {"run": None}


def reference(name):
    """The NumPy function kernel `name` mirrors."""
    module, func = KERNELS[name].numpy_reference.split(":")
    return getattr(importlib.import_module(module), func)


def cupy_kernel(name):
    """The cupy.ElementwiseKernel for `name`, built once (CuPy compiles it per dtype on first call)."""
    kernel = _COMPILED.get(name)
    if kernel is None:
        from ..backend import cupy_module
        spec = KERNELS[name]
        kernel = cupy_module().ElementwiseKernel(spec.in_params, spec.out_params, spec.operation,
                                                 spec.name)
        _COMPILED[name] = kernel
    return kernel


@contextlib.contextmanager
def emulated(run):
    """Within the block, NumPy arrays go through `run(spec, args, outs)` (the CPU
    emulation of the kernels, for tests) instead of the NumPy reference."""
    previous, _EMULATOR["run"] = _EMULATOR["run"], run
    try:
        yield
    finally:
        _EMULATOR["run"] = previous


def on_device(xp):
    """Whether arrays of module xp run these kernels: CuPy's, or NumPy's inside emulated()."""
    return xp is not np or _EMULATOR["run"] is not None


def _launch(name, xp, args, outs):
    """Run kernel `name` over the elements of outs[0] (all outputs share its shape)."""
    if xp is np:
        _EMULATOR["run"](KERNELS[name], args, outs)
    else:
        cupy_kernel(name)(*args, *outs)


def _flat(xp, a):
    """The raw-argument form: a C-contiguous 1-D view (a copy only when a is strided)."""
    return xp.ascontiguousarray(a).reshape(-1)


def _check_out(out, shape, dtype, what):
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{what}: out has shape {tuple(out.shape)} and dtype {out.dtype}, "
                         f"needs {tuple(shape)} and {np.dtype(dtype)}")


def _buffer(xp, out, shape, dtype, what):
    """`out` checked against (shape, dtype), or a fresh array of them."""
    if out is None:
        return xp.empty(shape, dtype)
    _check_out(out, shape, dtype, what)
    return out


def _float_dtype(a, what):
    if a.dtype.kind != "f":
        raise TypeError(f"{what} runs on floating-point arrays, got {a.dtype}")


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------
def im2col(x, geom, out=None):
    """cols (C*kh*kw, N, Ho*Wo) of x (N, C, H, W), the layout of conv.im2col.im2col_array.

    `out` may be any array (or strided view) of that shape and x's dtype."""
    xp = get_array_module(x)
    if not on_device(xp):
        return reference("pycaffe_im2col")(x, geom, out)
    _float_dtype(x, "im2col")
    n, c, h, w = x.shape
    ho, wo = geom.output_hw(h, w)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    shape = (c * kh * kw, n, ho * wo)
    out = _buffer(xp, out, shape, x.dtype, "im2col")
    _launch("pycaffe_im2col", xp, (_flat(xp, x), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo),
            (out,))
    return out


def col2im(cols, x_shape, geom, out=None):
    """dx (N, C, H, W): the adjoint of im2col (overlapping windows add up)."""
    xp = get_array_module(cols)
    if not on_device(xp):
        return reference("pycaffe_col2im")(cols, x_shape, geom, out)
    _float_dtype(cols, "col2im")
    n, c, h, w = (int(s) for s in x_shape)
    ho, wo = geom.output_hw(h, w)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    if cols.size != c * kh * kw * n * ho * wo:
        raise ValueError(f"col2im: cols of shape {tuple(cols.shape)} do not fit x {tuple(x_shape)} "
                         f"with {geom} (needs {(c * kh * kw, n, ho * wo)})")
    out = _buffer(xp, out, (n, c, h, w), cols.dtype, "col2im")
    _launch("pycaffe_col2im", xp, (_flat(xp, cols), n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo),
            (out,))
    return out


def max_pool_forward(x, kernel, stride, pad, out_size, out=None, argk=None):
    """(top, argk): as layers.pooling.max_pool_forward (argk = kernel offset ki*kw + kj, int32)."""
    xp = get_array_module(x)
    if not on_device(xp):
        top, argk = reference("pycaffe_max_pool_fwd")(x, kernel, stride, pad, out_size)
        return into(out, top), argk
    _float_dtype(x, "max pooling")
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, pad, out_size
    n, c, h, w = x.shape
    top = _buffer(xp, out, (n, c, ho, wo), x.dtype, "max pooling")
    argk = reused(argk, top.shape, np.int32, xp)     # the caller's scratch from the last pass
    _launch("pycaffe_max_pool_fwd", xp, (_flat(xp, x), h, w, ho, wo, kh, kw, sh, sw, ph, pw), (top, argk))
    return top, argk


def max_pool_backward(top_diff, argk, kernel, stride, pad, in_size, out=None):
    """grad (N, C, H, W): each top diff routed to its window's winner."""
    xp = get_array_module(top_diff)
    if not on_device(xp):
        return into(out, reference("pycaffe_max_pool_bwd")(top_diff, argk, kernel, stride, pad, in_size))
    _float_dtype(top_diff, "max pooling backward")
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, pad, in_size
    n, c, ho, wo = top_diff.shape
    if tuple(argk.shape) != tuple(top_diff.shape):
        raise ValueError(f"max pooling backward: argk {tuple(argk.shape)} and top diff "
                         f"{tuple(top_diff.shape)} differ in shape")
    grad = _buffer(xp, out, (n, c, h, w), top_diff.dtype, "max pooling backward")
    _launch("pycaffe_max_pool_bwd", xp,
            (_flat(xp, top_diff), _flat(xp, argk.astype(np.int32, copy=False)), h, w, ho, wo,
             kh, kw, sh, sw, ph, pw), (grad,))
    return grad


def ave_pool_forward(x, kernel, stride, pad, out_size, out=None):
    """top: as layers.pooling.ave_pool_forward (Caffe's divisor, padding inside (H+ph, W+pw) counts)."""
    xp = get_array_module(x)
    if not on_device(xp):
        return into(out, reference("pycaffe_ave_pool_fwd")(x, kernel, stride, pad, out_size))
    _float_dtype(x, "average pooling")
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, pad, out_size
    n, c, h, w = x.shape
    top = _buffer(xp, out, (n, c, ho, wo), x.dtype, "average pooling")
    _launch("pycaffe_ave_pool_fwd", xp, (_flat(xp, x), h, w, ho, wo, kh, kw, sh, sw, ph, pw), (top,))
    return top


def ave_pool_backward(top_diff, kernel, stride, pad, in_size, out=None):
    """grad (N, C, H, W): each top diff / divisor spread over the in-image part of its window."""
    xp = get_array_module(top_diff)
    if not on_device(xp):
        return into(out, reference("pycaffe_ave_pool_bwd")(top_diff, kernel, stride, pad, in_size))
    _float_dtype(top_diff, "average pooling backward")
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, pad, in_size
    n, c, ho, wo = top_diff.shape
    grad = _buffer(xp, out, (n, c, h, w), top_diff.dtype, "average pooling backward")
    _launch("pycaffe_ave_pool_bwd", xp, (_flat(xp, top_diff), h, w, ho, wo, kh, kw, sh, sw, ph, pw),
            (grad,))
    return grad
