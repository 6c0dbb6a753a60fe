"""Convolution over three or more spatial axes, as sums of 2-D convolutions.

Caffe runs N-D convolutions (e.g. 3-D over frames, height and width) with an
N-D im2col.  Here the first spatial axis is peeled off: with kernel k, stride
s, pad p and dilation d along it, output slice o reads input slice
o*s - p + i*d through the weights' slice i, so

    y[:, :, o] = sum_i conv(x[:, :, o*s - p + i*d], w[:, :, i])

For each tap i the input slices of every o are folded into the batch, so a
tap is one convolution over the remaining axes; recursing down to two spatial
axes runs every tap on a 2-D engine (the backward passes follow the same
sum).  Arrays are (N, C, S1, S2, ...), weights Caffe's (K, C/group, k1, k2, ...).
`NDEngine` wraps a 2-D engine so that a layer calls it as it calls any engine.
"""
from dataclasses import dataclass

from ..backend import get_array_module
from .geometry import ConvGeometry


@dataclass(frozen=True)
class NDGeometry:
    """kernel, stride, pad, dilation: one entry per spatial axis (three or more); group."""
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple
    group: int = 1

    @property
    def head(self):
        """(kernel, stride, pad, dilation) along the first spatial axis."""
        return self.kernel[0], self.stride[0], self.pad[0], self.dilation[0]

    @property
    def tail(self):
        """The geometry of the remaining axes: a ConvGeometry once two are left."""
        rest = [v[1:] for v in (self.kernel, self.stride, self.pad, self.dilation)]
        return ConvGeometry(*rest, self.group) if len(rest[0]) == 2 else NDGeometry(*rest, self.group)

    def output_shape(self, spatial):
        """Caffe's convolution output size per axis (rounds down); raises when empty."""
        out = tuple((i + 2 * p - (d * (k - 1) + 1)) // s + 1
                    for i, k, s, p, d in zip(spatial, self.kernel, self.stride, self.pad, self.dilation))
        if min(out) < 1:
            raise ValueError(f"convolution output would be empty: input {spatial}, kernel {self.kernel} "
                             f"dilation {self.dilation} pad {self.pad} stride {self.stride} give {out}")
        return out

    def deconv_output_shape(self, spatial):
        """Caffe's Deconvolution output size per axis: s*(in-1) + d*(k-1)+1 - 2p."""
        out = tuple(s * (i - 1) + d * (k - 1) + 1 - 2 * p
                    for i, k, s, p, d in zip(spatial, self.kernel, self.stride, self.pad, self.dilation))
        if min(out) < 1:
            raise ValueError(f"deconvolution output would be empty: input {spatial} gives {out}")
        return out


class NDEngine:
    """A 2-D engine run over N-D arrays, with the engines' interface (conv/engines.py); `ctx`,
    which 2-D engines use to keep work for the backward, is not used."""

    def __init__(self, engine):
        self.engine, self.name, self.describe = engine, engine.name, engine.describe

    def supports(self, geom):
        """Can the 2-D engine run the 2-D convolutions an N-D one is made of?"""
        while isinstance(geom, NDGeometry):
            geom = geom.tail
        return self.engine.supports(geom)

    def forward(self, x, w, b, geom, out=None, ctx=None):
        return _into(out, forward(self.engine, x, w, b, geom))

    def backward(self, x, w, dy, geom, need_dx=True, need_dw=True, dx_out=None, ctx=None):
        dx = _into(dx_out, backward_data(self.engine, dy, w, geom, x.shape)) if need_dx else None
        return dx, (backward_weights(self.engine, x, dy, geom, w.shape) if need_dw else None)

    def backward_data(self, dy, w, geom, x_shape, out=None):
        return _into(out, backward_data(self.engine, dy, w, geom, x_shape))

    def backward_weights(self, x, dy, geom, w_shape):
        return backward_weights(self.engine, x, dy, geom, w_shape)


def _into(out, result):
    if out is None:
        return result
    out[...] = result
    return out


def _taps(geom, out_length):
    """The slices of the padded first spatial axis each kernel tap reads, one per output slice."""
    k, s, _, d = geom.head
    return [slice(i * d, i * d + s * (out_length - 1) + 1, s) for i in range(k)]


def _pad_first(xp, x, pad):
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[2] = (pad, pad)
    return xp.pad(x, widths)


def _fold(xp, a):
    """(N, C, O, ...) -> (N*O, C, ...): the first spatial axis folded into the batch."""
    n, c, o = a.shape[:3]
    return xp.ascontiguousarray(xp.moveaxis(a, 2, 1)).reshape((n * o, c) + a.shape[3:])


def _unfold(xp, a, n):
    """(N*O, C, ...) -> (N, C, O, ...)."""
    return xp.moveaxis(a.reshape((n, a.shape[0] // n) + a.shape[1:]), 1, 2)


def _weights(xp, w, i):
    return xp.ascontiguousarray(w[:, :, i])


def forward(engine, x, w, b, geom):
    """y (N, K, O1, O2, ...) = conv(x, w) + b."""
    xp = get_array_module(x)
    if isinstance(geom, ConvGeometry):
        return engine.forward(xp.ascontiguousarray(x), xp.ascontiguousarray(w), b, geom)
    n, k = x.shape[0], w.shape[0]
    o = geom.output_shape(x.shape[2:])[0]
    xpad = _pad_first(xp, x, geom.head[2])
    y = 0
    for i, taps in enumerate(_taps(geom, o)):
        y = y + forward(engine, _fold(xp, xpad[:, :, taps]), _weights(xp, w, i), None, geom.tail)
    y = xp.ascontiguousarray(_unfold(xp, y, n))
    if b is not None:
        y += b.reshape((1, k) + (1,) * (y.ndim - 2))
    return y


def backward_data(engine, dy, w, geom, x_shape):
    """dx (N, C, S1, ...) of a convolution given dy (also a Deconvolution's forward)."""
    xp = get_array_module(dy)
    x_shape = tuple(x_shape)
    if isinstance(geom, ConvGeometry):
        return engine.backward_data(xp.ascontiguousarray(dy), xp.ascontiguousarray(w), geom, x_shape)
    n, c, o = x_shape[0], x_shape[1], dy.shape[2]
    pad = geom.head[2]
    dx = xp.zeros((n, c, x_shape[2] + 2 * pad) + x_shape[3:], dy.dtype)
    dy_folded = _fold(xp, dy)
    for i, taps in enumerate(_taps(geom, o)):
        dxi = backward_data(engine, dy_folded, _weights(xp, w, i), geom.tail, (n * o, c) + x_shape[3:])
        dx[:, :, taps] += _unfold(xp, dxi, n)
    return xp.ascontiguousarray(dx[:, :, pad:pad + x_shape[2]])


def backward_weights(engine, x, dy, geom, w_shape):
    """dw (K, C/group, k1, k2, ...) of a convolution given its input x and dy."""
    xp = get_array_module(x)
    if isinstance(geom, ConvGeometry):
        return engine.backward_weights(xp.ascontiguousarray(x), xp.ascontiguousarray(dy), geom, tuple(w_shape))
    o = dy.shape[2]
    xpad = _pad_first(xp, x, geom.head[2])
    dy_folded = _fold(xp, dy)
    w_rest = tuple(w_shape[:2]) + tuple(w_shape[3:])
    return xp.stack([backward_weights(engine, _fold(xp, xpad[:, :, taps]), dy_folded, geom.tail, w_rest)
                     for taps in _taps(geom, o)], axis=2)
