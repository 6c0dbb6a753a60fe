"""Pooling (MAX, AVE, STOCHASTIC) with BVLC Caffe's semantics, and the pooling array functions.

All blobs are (N, C, H, W).  The pooling kernels are plain array functions
(`max_pool_forward`, `ave_pool_forward`, ...), shared by Pooling, SPP and
LRN's WITHIN_CHANNEL mode; they loop over the kh*kw kernel offsets and do
whole-array work on strided views, so the same code runs on NumPy and CuPy.
The Pooling layer takes its MAX and AVE functions from `pool_kernels(x)`, the
one dispatch point: on CuPy arrays the CUDA kernels of pycaffe_lite.gpu.kernels,
on NumPy arrays the Numba kernels of pycaffe_lite.kernels.pooling for MAX when
Numba is available (the NumPy functions stay the reference the tests compare them with).

Caffe's pooling geometry, reproduced exactly:

    Ho = ceil((H + 2*pad_h - kernel_h) / stride_h) + 1     (round_mode CEIL, the default)
    Ho = floor((H + 2*pad_h - kernel_h) / stride_h) + 1    (round_mode FLOOR)
    if pad_h or pad_w: if (Ho - 1) * stride_h >= H + pad_h: Ho -= 1
                       (the last window may not start inside the padding)

Example:

    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
            pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
"""
from types import SimpleNamespace

import numpy as np

from .. import backend, kernels
from ..backend import get_array_module, into, reused
from ..geometry import pool_spatial, pool_window, window_step
from ..gpu import kernels as gpu_kernels
from ..kernels import pooling as pooling_kernels
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)

PP = caffe_pb2.PoolingParameter
# The Numba pooling and LRN kernels pay off on NumPy arrays from this many elements.
NUMBA_MIN_SIZE = 4096


# ---------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------
def pooled_size(size, kernel, stride, pad, round_mode=PP.CEIL, any_pad=None):
    """Caffe's pooled extent along one axis (see the module docstring).

    `any_pad` is whether either spatial pad is non-zero (Caffe applies the
    "last window starts in the padding" rule to both axes when either is padded).
    """
    span = size + 2 * pad - kernel
    if round_mode == PP.FLOOR:
        out = span // stride + 1
    else:
        out = -(-span // stride) + 1
    if (pad if any_pad is None else any_pad) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _window_extent(size, kernel, stride, pad, out):
    """Length of the padded array that holds every window (ceil windows may run past the pad)."""
    return max(size + 2 * pad, (out - 1) * stride + kernel)


def _padded(x, pad_h, pad_w, Hp, Wp, value):
    """x (N, C, H, W) placed at (pad_h, pad_w) in a (N, C, Hp, Wp) array filled with value."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.full((N, C, Hp, Wp), value, dtype=x.dtype)
    out[:, :, pad_h:pad_h + H, pad_w:pad_w + W] = x
    return out


def _few_outputs(kernel, out_size):
    """True when there are fewer output positions than kernel offsets (e.g. global pooling):
    then the kernels loop over output positions instead of offsets."""
    return out_size[0] * out_size[1] < kernel[0] * kernel[1]


def _windows(a, kh, kw, sh, sw, Ho, Wo):
    """Yield (y, x, window) with window = a[:, :, y*sh : y*sh+kh, x*sw : x*sw+kw] (a view)."""
    for y in range(Ho):
        for x in range(Wo):
            yield y, x, a[:, :, y * sh:y * sh + kh, x * sw:x * sw + kw]


def _views(a, kh, kw, sh, sw, Ho, Wo):
    """Yield (k, view) for each kernel offset k = i*kw + j: view[n, c, y, x] = a[n, c, y*sh+i, x*sw+j]."""
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, a[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]


# ---------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------
def max_pool_forward(x, kernel, stride, pad, out_size):
    """MAX pooling of x (N, C, H, W) -> (top (N, C, Ho, Wo), argk (N, C, Ho, Wo) int32).

    top[y, x] = max over the window clipped to the image, starting from
    -FLT_MAX as Caffe does; argk is the kernel offset i*kw + j of the first
    maximum in row-major order (-1 for a window with no element above -FLT_MAX).
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, pad, out_size
    N, C, H, W = x.shape
    Hp, Wp = _window_extent(H, kh, sh, ph, Ho), _window_extent(W, kw, sw, pw, Wo)
    xpad = _padded(x, ph, pw, Hp, Wp, -np.inf)
    top = xp.full((N, C, Ho, Wo), -FLT_MAX, dtype=x.dtype)
    argk = xp.full((N, C, Ho, Wo), -1, dtype=np.int32)
    if _few_outputs(kernel, out_size):
        for y, x_, window in _windows(xpad, kh, kw, sh, sw, Ho, Wo):
            flat = window.reshape(N, C, kh * kw)
            best = flat.argmax(axis=2)
            value = xp.take_along_axis(flat, best[..., None], axis=2)[..., 0]
            found = value > -FLT_MAX
            top[:, :, y, x_] = xp.where(found, value, -FLT_MAX)
            argk[:, :, y, x_] = xp.where(found, best, -1)
        return top, argk
    for k, view in _views(xpad, kh, kw, sh, sw, Ho, Wo):
        better = view > top                  # strict: the first maximum in row-major order wins
        top = xp.where(better, view, top)
        argk = xp.where(better, np.int32(k), argk)
    return top, argk


def max_pool_mask(argk, kernel, stride, pad, in_size):
    """Caffe's mask: the flat index h * W + w of each maximum within its channel (-1 if none)."""
    xp = get_array_module(argk)
    (_, kw), (sh, sw), (ph, pw), (_, W) = kernel, stride, pad, in_size
    Ho, Wo = argk.shape[-2:]
    hstart = (xp.arange(Ho, dtype=np.int64) * sh - ph)[:, None]
    wstart = (xp.arange(Wo, dtype=np.int64) * sw - pw)[None, :]
    h = hstart + argk // kw
    w = wstart + argk % kw
    return xp.where(argk >= 0, h * W + w, -1)


def max_pool_backward(top_diff, argk, kernel, stride, pad, in_size):
    """Route each top gradient to the input position that won its window (sums where windows overlap)."""
    xp = get_array_module(top_diff)
    (kh, kw), (sh, sw), (ph, pw), (H, W) = kernel, stride, pad, in_size
    N, C, Ho, Wo = top_diff.shape
    Hp, Wp = _window_extent(H, kh, sh, ph, Ho), _window_extent(W, kw, sw, pw, Wo)
    grad = xp.zeros((N, C, Hp, Wp), dtype=top_diff.dtype)
    if _few_outputs(kernel, (Ho, Wo)):
        offsets = xp.arange(kh * kw, dtype=np.int32)
        for y, x, window in _windows(grad, kh, kw, sh, sw, Ho, Wo):
            hit = (argk[:, :, y, x, None] == offsets).reshape(N, C, kh, kw)
            window += hit * top_diff[:, :, y, x, None, None]
    else:
        for k, view in _views(grad, kh, kw, sh, sw, Ho, Wo):
            view += top_diff * (argk == k)
    return grad[:, :, ph:ph + H, pw:pw + W]


# ---------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------
def ave_pool_divisor(kernel, stride, pad, in_size, out_size, xp=np, dtype=np.float32):
    """Caffe's AVE divisor per output: the window clipped to the padded extent (H + pad, W + pad).

    Padding inside that extent counts; window parts beyond it (ceil rounding) do not.
    """
    (kh, kw), (sh, sw), (ph, pw), (H, W), (Ho, Wo) = kernel, stride, pad, in_size, out_size
    hstart = np.arange(Ho) * sh - ph
    wstart = np.arange(Wo) * sw - pw
    hsize = np.minimum(hstart + kh, H + ph) - hstart
    wsize = np.minimum(wstart + kw, W + pw) - wstart
    return xp.asarray(np.outer(hsize, wsize).astype(dtype))


def ave_pool_forward(x, kernel, stride, pad, out_size):
    """AVE pooling of x (N, C, H, W): sum over the window inside the image / ave_pool_divisor."""
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, pad, out_size
    N, C, H, W = x.shape
    Hp, Wp = _window_extent(H, kh, sh, ph, Ho), _window_extent(W, kw, sw, pw, Wo)
    xpad = _padded(x, ph, pw, Hp, Wp, 0)
    total = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    if _few_outputs(kernel, out_size):
        for y, x_, window in _windows(xpad, kh, kw, sh, sw, Ho, Wo):
            total[:, :, y, x_] = window.sum(axis=(2, 3))
    else:
        for _, view in _views(xpad, kh, kw, sh, sw, Ho, Wo):
            total += view
    with np.errstate(divide="ignore", invalid="ignore"):
        return total / ave_pool_divisor(kernel, stride, pad, (H, W), (Ho, Wo), xp, x.dtype)


def ave_pool_backward(top_diff, kernel, stride, pad, in_size):
    """Spread each top gradient / divisor evenly over the in-image part of its window."""
    xp = get_array_module(top_diff)
    (kh, kw), (sh, sw), (ph, pw), (H, W) = kernel, stride, pad, in_size
    N, C, Ho, Wo = top_diff.shape
    Hp, Wp = _window_extent(H, kh, sh, ph, Ho), _window_extent(W, kw, sw, pw, Wo)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = top_diff / ave_pool_divisor(kernel, stride, pad, (H, W), (Ho, Wo), xp, top_diff.dtype)
    grad = xp.zeros((N, C, Hp, Wp), dtype=top_diff.dtype)
    if _few_outputs(kernel, (Ho, Wo)):
        for y, x, window in _windows(grad, kh, kw, sh, sw, Ho, Wo):
            window += share[:, :, y, x, None, None]
    else:
        for _, view in _views(grad, kh, kw, sh, sw, Ho, Wo):
            view += share
    return grad[:, :, ph:ph + H, pw:pw + W]


# ---------------------------------------------------------------------------
# stochastic pooling (Zeiler & Fergus; Caffe has no padding here)
# ---------------------------------------------------------------------------
def _stacked_windows(x, kernel, stride, out_size):
    """(K, N, C, Ho, Wo) window values (zeros outside the image), K = kh*kw in row-major order."""
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (Ho, Wo) = kernel, stride, out_size
    N, C, H, W = x.shape
    Hp, Wp = _window_extent(H, kh, sh, 0, Ho), _window_extent(W, kw, sw, 0, Wo)
    xpad = _padded(x, 0, 0, Hp, Wp, 0)
    return xp.stack([view for _, view in _views(xpad, kh, kw, sh, sw, Ho, Wo)])


def _random_uniform(xp, shape, dtype):
    if xp is np:
        return backend.rng().random(shape).astype(dtype)
    return xp.random.random(shape).astype(dtype)   # the device's generator


def sto_pool_forward_train(x, kernel, stride, out_size, uniform=None):
    """Sample one element per window with probability x / sum(window) (x >= 0 assumed).

    With u ~ U[0, 1): the first element (row-major) whose running sum reaches
    u * sum(window).  Returns (top, argk) like max_pool_forward.
    """
    xp = get_array_module(x)
    windows = _stacked_windows(x, kernel, stride, out_size)
    running = xp.cumsum(windows, axis=0)
    if uniform is None:
        uniform = _random_uniform(xp, windows.shape[1:], x.dtype)
    threshold = uniform * running[-1]
    reached = running >= threshold[None]
    argk = xp.argmax(reached.astype(np.int8), axis=0).astype(np.int32)
    argk = xp.where(reached.any(axis=0), argk, np.int32(windows.shape[0] - 1))
    top = xp.take_along_axis(windows, argk[None].astype(np.int64), axis=0)[0]
    return top, argk


def sto_pool_forward_test(x, kernel, stride, out_size):
    """Probability-weighted average: sum(x^2) / (FLT_MIN + sum(x)) over the window (Caffe's TEST mode)."""
    windows = _stacked_windows(x, kernel, stride, out_size)
    return (windows * windows).sum(axis=0) / (windows.sum(axis=0) + FLT_MIN)


def sto_pool_backward_test(top_diff, x, kernel, stride, in_size):
    """Exact gradient of sto_pool_forward_test: d/dx_j = (2 x_j S - Q) / S^2 for each window."""
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (H, W) = kernel, stride, in_size
    N, C, Ho, Wo = top_diff.shape
    windows = _stacked_windows(x, kernel, stride, (Ho, Wo))
    S = windows.sum(axis=0) + FLT_MIN
    Q = (windows * windows).sum(axis=0)
    Hp, Wp = _window_extent(H, kh, sh, 0, Ho), _window_extent(W, kw, sw, 0, Wo)
    xpad = _padded(x, 0, 0, Hp, Wp, 0)
    grad = xp.zeros((N, C, Hp, Wp), dtype=top_diff.dtype)
    for (_, gview), (_, xview) in zip(_views(grad, kh, kw, sh, sw, Ho, Wo),
                                      _views(xpad, kh, kw, sh, sw, Ho, Wo)):
        gview += top_diff * (2 * xview * S - Q) / (S * S)
    return grad[:, :, :H, :W]


# ---------------------------------------------------------------------------
# Numba kernels for max pooling on the CPU (kernels/pooling.py; the NumPy functions above are the reference)
# ---------------------------------------------------------------------------
def use_numba(x):
    return kernels.HAVE_NUMBA and isinstance(x, np.ndarray) and x.size >= NUMBA_MIN_SIZE


def max_pool_forward_fast(x, kernel, stride, pad, out_size, out=None, argk=None):
    """max_pool_forward, by the Numba kernel for NumPy arrays when available.

    `out` takes the top and `argk` the window offsets of the maxima when given
    (a layer reuses its buffers: a fresh one costs page faults every pass)."""
    if not use_numba(x):
        top, argk = max_pool_forward(x, kernel, stride, pad, out_size)
        return into(out, top), argk
    N, C, H, W = x.shape
    Ho, Wo = out_size
    top = np.empty((N, C, Ho, Wo), x.dtype) if out is None else out
    argk = reused(argk, top.shape, np.int32, np)
    forward = pooling_kernels.max_pool_kernels(kernel, stride)[0]
    forward(np.ascontiguousarray(x).reshape(N * C, H, W), *pad, x.dtype.type(-FLT_MAX),
            top.reshape(N * C, Ho, Wo), argk.reshape(N * C, Ho, Wo))
    return top, argk


def max_pool_backward_fast(top_diff, argk, kernel, stride, pad, in_size, out=None):
    """max_pool_backward, by the Numba kernel for NumPy arrays when available; `out` takes the gradient."""
    if not use_numba(top_diff):
        return into(out, max_pool_backward(top_diff, argk, kernel, stride, pad, in_size))
    N, C, Ho, Wo = top_diff.shape
    H, W = in_size
    grad = np.empty((N, C, H, W), top_diff.dtype) if out is None else out
    backward = pooling_kernels.max_pool_kernels(kernel, stride)[1]
    backward(np.ascontiguousarray(top_diff).reshape(N * C, Ho, Wo),
             np.ascontiguousarray(argk).reshape(N * C, Ho, Wo), *pad, grad.reshape(N * C, H, W))
    return grad


def _ave_pool_forward_into(x, kernel, stride, pad, out_size, out=None):
    return into(out, ave_pool_forward(x, kernel, stride, pad, out_size))


def _ave_pool_backward_into(top_diff, kernel, stride, pad, in_size, out=None):
    return into(out, ave_pool_backward(top_diff, kernel, stride, pad, in_size))


# The host's MAX / AVE functions, with the signatures of gpu.kernels' entry points.
HOST_POOL_KERNELS = SimpleNamespace(max_pool_forward=max_pool_forward_fast,
                                    max_pool_backward=max_pool_backward_fast,
                                    ave_pool_forward=_ave_pool_forward_into,
                                    ave_pool_backward=_ave_pool_backward_into)


def pool_kernels(x):
    """The MAX / AVE pooling functions for x's array module: gpu.kernels' CUDA kernels for CuPy
    arrays (and for NumPy ones inside gpu.kernels.emulated, as the tests run them), else the host's."""
    return gpu_kernels if gpu_kernels.on_device(get_array_module(x)) else HOST_POOL_KERNELS


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------
def _needs_4d(layer, blob):
    if len(blob.shape) != 4:
        raise ValueError(layer.error(f"needs a 4-axis (num, channels, height, width) input, "
                                     f"got shape {blob.shape}"))


@register("Pooling", v1="POOLING")
class PoolingLayer(Layer):
    """MAX, AVE or STOCHASTIC pooling over (N, C, H, W) -> (N, C, Ho, Wo).

    MAX:  top = max over the window clipped to the image; an optional second
          top receives the argmax mask (flat index h * W + w in its channel,
          stored as a float, as in Caffe).
    AVE:  top = sum over the window inside the image / the window size
          clipped to (H + pad_h, W + pad_w).
    STOCHASTIC (no padding): TRAIN samples an element with probability
          proportional to its value; TEST gives sum(x^2) / sum(x).
    global_pooling sets the kernel to the whole H x W.
    """
    num_bottom = (1, 1)
    num_top = (1, 2)

    @classmethod
    def field_step(cls, layer_param, bottom_shapes):
        kernel, stride, _ = pool_window(layer_param, bottom_shapes[0])
        return window_step(kernel, stride)

    def setup(self, bottom, top):
        p = self.layer_param.pooling_param
        self.pool = p.pool
        self.round_mode = p.round_mode
        self.global_pooling = p.global_pooling
        self.kernel, self.stride, self.pad = pool_spatial(self.layer_param, self.error)
        self.argk = None     # where each maximum (or sample) came from, for backward
        if len(top) > 1 and self.pool != PP.MAX:
            raise ValueError(self.error("has a mask top only with MAX pooling; "
                                        f"got {len(top)} tops for {PP.PoolMethod.Name(self.pool)}"))

    def reshape(self, bottom, top):
        _needs_4d(self, bottom[0])
        N, C, H, W = bottom[0].shape
        if self.global_pooling:
            self.kernel = (H, W)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        any_pad = bool(ph or pw)
        Ho = pooled_size(H, kh, sh, ph, self.round_mode, any_pad)
        Wo = pooled_size(W, kw, sw, pw, self.round_mode, any_pad)
        if Ho <= 0 or Wo <= 0:
            raise ValueError(self.error(f"kernel {self.kernel} with pad {self.pad} does not fit "
                                        f"the {H} x {W} input"))
        self.in_size, self.out_size = (H, W), (Ho, Wo)
        for blob in top:
            blob.reshape(N, C, Ho, Wo)

    def _geometry(self):
        return self.kernel, self.stride, self.pad

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.pool == PP.MAX:
            _, self.argk = pool_kernels(x).max_pool_forward(x, *self._geometry(), self.out_size,
                                                            out=top[0].data, argk=self.argk)
            if len(top) > 1:
                top[1].data = max_pool_mask(self.argk, *self._geometry(), self.in_size).astype(top[1].dtype)
            return
        if self.pool == PP.AVE:
            pool_kernels(x).ave_pool_forward(x, *self._geometry(), self.out_size, out=top[0].data)
            return
        if self.phase == caffe_pb2.TRAIN:
            out, self.argk = sto_pool_forward_train(x, self.kernel, self.stride, self.out_size)
        else:
            out = sto_pool_forward_test(x, self.kernel, self.stride, self.out_size)
        top[0].data = out

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self.pool == PP.MAX:
            pool_kernels(dy).max_pool_backward(dy, self.argk, *self._geometry(), self.in_size,
                                               out=bottom[0].diff)
            return
        if self.pool == PP.AVE:
            pool_kernels(dy).ave_pool_backward(dy, *self._geometry(), self.in_size, out=bottom[0].diff)
            return
        if self.phase == caffe_pb2.TRAIN:
            grad = max_pool_backward(dy, self.argk, self.kernel, self.stride, (0, 0), self.in_size)
        else:
            grad = sto_pool_backward_test(dy, bottom[0].data, self.kernel, self.stride, self.in_size)
        bottom[0].diff = grad


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Pooling")
def _pooling_to_onnx(g, layer, bottoms, tops):
    p, name = layer.layer_param, layer.name
    q = p.pooling_param
    shape = g.shape(bottoms[0])
    method = {0: "Max", 1: "Average"}.get(q.pool)
    if method is None:
        raise ValueError(f"layer '{name}': STOCHASTIC pooling has no ONNX counterpart")
    if q.global_pooling:
        g.node(f"Global{method}Pool", bottoms, tops[:1], name=name)
        return
    (kh, kw), (sh, sw), (ph, pw) = pool_window(p, shape)
    if (kh, kw) == tuple(shape[2:]) and not (ph or pw):
        g.node(f"Global{method}Pool", bottoms, tops[:1], name=name)
        return
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph, pw], "ceil_mode": 1}
    if method == "Average":
        attrs["count_include_pad"] = 1
    g.node(f"{method}Pool", bottoms, tops[:1], name=name, **attrs)
