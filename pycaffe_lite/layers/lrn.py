"""LRN (local response normalization, AlexNet) with BVLC Caffe's semantics.

ACROSS_CHANNELS sums over neighbouring channels (a Numba running sum on NumPy arrays when Numba is
available, kernels/lrn.py; channel_window_sum is the reference); WITHIN_CHANNEL is Caffe's composition
of Power, AVE Pooling and Eltwise, through the pooling array functions.

    layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
            lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
"""
import numpy as np

from ..backend import get_array_module
from ..geometry import SAME
from ..kernels import lrn as lrn_kernels
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2
from .pooling import _needs_4d, ave_pool_backward, ave_pool_forward, use_numba


# ---------------------------------------------------------------------------
# LRN
# ---------------------------------------------------------------------------
def channel_window_sum(a, size, pre_pad, square=False, factor=1.0, start=0.0):
    """s[:, c] = start + factor * sum of f(a[:, c']) for c' in [c - pre_pad, c - pre_pad + size),
    zero outside the channels; f squares when `square`.  The whole-array reference."""
    xp = get_array_module(a)
    N, C = a.shape[:2]
    padded = xp.zeros((N, C + size - 1) + a.shape[2:], dtype=a.dtype)
    padded[:, pre_pad:pre_pad + C] = (a * a if square else a) * factor
    total = padded[:, 0:C] + start
    for i in range(1, size):
        total += padded[:, i:i + C]
    return total


def channel_window_sum_fast(a, size, pre_pad, square=False, factor=1.0, start=0.0):
    """channel_window_sum, by a Numba running sum for NumPy arrays when available."""
    if not use_numba(a):
        return channel_window_sum(a, size, pre_pad, square, factor, start)
    N, C = a.shape[:2]
    flat = np.ascontiguousarray(a).reshape(N, C, -1)
    out = np.empty(flat.shape, dtype=a.dtype)
    lrn_kernels.window_sum_kernel()(flat, size, pre_pad, square, float(factor), float(start), out)
    return out.reshape(a.shape)


def lrn_across_forward(x, size, alpha, beta, k):
    """ACROSS_CHANNELS: scale = k + alpha/size * sum_{|c'-c| <= (size-1)/2} x_c'^2; top = x * scale^-beta.

    Returns (top, scale, scale^-beta).
    """
    scale = channel_window_sum_fast(x, size, (size - 1) // 2, square=True, factor=alpha / size, start=k)
    power = scale ** -beta
    return x * power, scale, power


def lrn_across_backward(top_diff, x, top, scale, power, size, alpha, beta):
    """dx = dy * scale^-beta - (2 alpha beta / size) * x * sum_window(dy * top / scale)."""
    pre_pad = (size - 1) // 2
    ratio = channel_window_sum_fast(top_diff * top / scale, size, size - 1 - pre_pad)
    return top_diff * power - (2.0 * alpha * beta / size) * x * ratio


def lrn_within_forward(x, size, alpha, beta):
    """WITHIN_CHANNEL, as Caffe builds it from Power, AVE Pooling and Eltwise layers:

        scale = 1 + alpha * AVEpool_{size x size, pad (size-1)/2, stride 1}(x^2)
              = 1 + alpha / size^2 * (zero-padded box sum of x^2)      (k is not used)
        top = x * scale^-beta
    """
    pre_pad = (size - 1) // 2
    geometry = ((size, size), (1, 1), (pre_pad, pre_pad))
    pooled = ave_pool_forward(x * x, *geometry, x.shape[2:])
    scale = pooled * alpha + 1
    return x * scale ** -beta, scale


def lrn_within_backward(top_diff, x, scale, size, alpha, beta):
    """Chain rule through the same composition: dx = dy s^-b + 2x * AVEpool^T(-b alpha dy x s^(-b-1))."""
    pre_pad = (size - 1) // 2
    geometry = ((size, size), (1, 1), (pre_pad, pre_pad))
    dscale = top_diff * x * (-beta) * scale ** (-beta - 1)
    dsquare = ave_pool_backward(dscale * alpha, *geometry, x.shape[2:])
    return top_diff * scale ** -beta + 2 * x * dsquare


@register("LRN", v1="LRN")
class LRNLayer(Layer):
    """Local response normalization (AlexNet), ACROSS_CHANNELS or WITHIN_CHANNEL.

    ACROSS_CHANNELS: top = x / (k + alpha/n * sum of x^2 over n neighbouring channels)^beta
    WITHIN_CHANNEL:  top = x / (1 + alpha/n^2 * sum of x^2 over an n x n neighbourhood)^beta
    local_size n must be odd.  Shapes (N, C, H, W) -> same.
    """
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    def setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.region = p.norm_region
        if self.size % 2 != 1:
            raise ValueError(self.error(f"supports only odd values for local_size, got {self.size}"))

    def reshape(self, bottom, top):
        _needs_4d(self, bottom[0])
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            out, self.scale, self.power = lrn_across_forward(x, self.size, self.alpha, self.beta, self.k)
        else:
            out, self.scale = lrn_within_forward(x, self.size, self.alpha, self.beta)
        self.x, self.top_data = x, out
        top[0].data = out

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            grad = lrn_across_backward(top[0].diff, self.x, self.top_data, self.scale, self.power,
                                       self.size, self.alpha, self.beta)
        else:
            grad = lrn_within_backward(top[0].diff, self.x, self.scale, self.size, self.alpha, self.beta)
        bottom[0].diff = grad


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("LRN")
def _lrn_to_onnx(g, layer, bottoms, tops):
    q, name, x, y = layer.layer_param.lrn_param, layer.name, bottoms[0], tops[0]
    if q.norm_region == 0:   # ACROSS_CHANNELS: ONNX's LRN is Caffe's formula
        g.node("LRN", [x], [y], name=name, size=int(q.local_size), alpha=float(q.alpha),
               beta=float(q.beta), bias=float(q.k))
        return
    # WITHIN_CHANNEL: x / (1 + alpha * avgpool(x^2))^beta, the pool padded and counting the padding.
    size, pad = int(q.local_size), (int(q.local_size) - 1) // 2
    square = g.tmp(name, "square")
    g.node("Mul", [x, x], [square], name=f"{name}/square")
    pooled = g.tmp(name, "pooled")
    g.node("AveragePool", [square], [pooled], name=f"{name}/pool", kernel_shape=[size, size],
           strides=[1, 1], pads=[pad, pad, pad, pad], count_include_pad=1)
    scaled = g.tmp(name, "scaled")
    g.node("Mul", [pooled, g.const(f"{name}/alpha", np.array(q.alpha, np.float32))], [scaled],
           name=f"{name}/alpha")
    base = g.tmp(name, "base")
    g.node("Add", [scaled, g.const(f"{name}/one", np.array(1.0, np.float32))], [base], name=f"{name}/one")
    denom = g.tmp(name, "denom")
    g.node("Pow", [base, g.const(f"{name}/beta", np.array(q.beta, np.float32))], [denom], name=f"{name}/pow")
    g.node("Div", [x, denom], [y], name=name)
