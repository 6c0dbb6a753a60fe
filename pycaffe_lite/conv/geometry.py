"""The geometry every convolution engine shares, and Caffe's size arithmetic.

A convolution here is always 2-D on NCHW arrays with weights laid out as
Caffe's (K, C/group, kh, kw).  `ConvGeometry` holds what does not depend on
the data: kernel, stride, pad, dilation and group.  Caffe's output size rounds
down:

    out = (in + 2*pad - (dilation*(kernel-1) + 1)) // stride + 1

and a Deconvolution's output is the input size of the convolution it
transposes:

    out = stride*(in - 1) + dilation*(kernel-1) + 1 - 2*pad
"""
from dataclasses import dataclass


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{name} needs one value or two (h, w), got {v}")
    return v


@dataclass(frozen=True)
class ConvGeometry:
    """kernel, stride, pad, dilation as (h, w) pairs (an int means both), and group."""
    kernel: tuple
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    group: int = 1

    def __post_init__(self):
        for name in ("kernel", "stride", "pad", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        object.__setattr__(self, "group", int(self.group))
        if min(self.kernel) < 1:
            raise ValueError(f"kernel dimensions must be nonzero, got {self.kernel}")
        if min(self.stride) < 1:
            raise ValueError(f"stride dimensions must be nonzero, got {self.stride}")
        if min(self.dilation) < 1:
            raise ValueError(f"dilation must be at least 1, got {self.dilation}")
        if min(self.pad) < 0:
            raise ValueError(f"pad must not be negative, got {self.pad}")
        if self.group < 1:
            raise ValueError(f"group must be at least 1, got {self.group}")

    # -- sizes --------------------------------------------------------------
    @property
    def extent(self):
        """The kernel's reach with dilation: d*(k-1) + 1 per axis."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))

    def output_hw(self, h, w):
        """Caffe's convolution output size (rounds down); raises when it is empty."""
        out = tuple((i + 2 * p - e) // s + 1
                    for i, p, e, s in zip((h, w), self.pad, self.extent, self.stride))
        if min(out) < 1:
            raise ValueError(f"convolution output would be empty: input {h}x{w}, kernel "
                             f"{self.kernel} dilation {self.dilation} pad {self.pad} "
                             f"stride {self.stride} give {out[0]}x{out[1]}")
        return out

    def deconv_output_hw(self, h, w):
        """Caffe's Deconvolution output size: s*(in-1) + d*(k-1)+1 - 2p."""
        out = tuple(s * (i - 1) + e - 2 * p
                    for i, p, e, s in zip((h, w), self.pad, self.extent, self.stride))
        if min(out) < 1:
            raise ValueError(f"deconvolution output would be empty: input {h}x{w} gives "
                             f"{out[0]}x{out[1]}")
        return out

    # -- properties engines test ---------------------------------------------
    @property
    def is_1x1(self):
        """im2col is the identity: 1x1 kernel, stride 1, no padding (Caffe's is_1x1_)."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)

    @property
    def unit_stride(self):
        return self.stride == (1, 1)

    def is_depthwise(self, channels):
        """One input channel per group (group == channels), any channel multiplier."""
        return self.group == channels and channels > 1

    def check_shapes(self, x_shape, w_shape):
        """Raise unless x (N,C,H,W) and w (K, C/group, kh, kw) fit this geometry."""
        if len(x_shape) != 4 or len(w_shape) != 4:
            raise ValueError(f"convolution needs 4-D input and weights, got {tuple(x_shape)} "
                             f"and {tuple(w_shape)}")
        n, c, h, w = x_shape
        k, cg, kh, kw = w_shape
        g = self.group
        if c % g or k % g:
            raise ValueError(f"group {g} must divide the input channels {c} and outputs {k}")
        if cg != c // g or (kh, kw) != self.kernel:
            raise ValueError(f"weights of shape {tuple(w_shape)} do not fit input "
                             f"{tuple(x_shape)}: expected ({k}, {c // g}, {self.kernel[0]}, "
                             f"{self.kernel[1]})")

    def macs(self, x_shape, k):
        """Direct multiply-adds of a forward pass (the FLOP count is twice this)."""
        n, c, h, w = x_shape
        ho, wo = self.output_hw(h, w)
        return n * k * (c // self.group) * self.kernel[0] * self.kernel[1] * ho * wo

    def __str__(self):
        def f(p):
            return f"{p[0]}" if p[0] == p[1] else f"{p[0]}x{p[1]}"
        text = f"k{self.kernel[0]}x{self.kernel[1]} s{f(self.stride)} p{f(self.pad)}"
        if self.dilation != (1, 1):
            text += f" d{f(self.dilation)}"
        if self.group != 1:
            text += f" g{self.group}"
        return text


def shape_key(kind, x_shape, k, geom, dtype, device="cpu"):
    """A readable key for one distinct layer shape, e.g.
    'conv 8x64x56x56->64 k3x3 s1 p1 float32 cpu'."""
    import numpy as np
    return (f"{kind} {'x'.join(str(int(s)) for s in x_shape)}->{int(k)} {geom} "
            f"{np.dtype(dtype).name} {device}")
