"""Neuron layers: one bottom, one top of the same shape, computed elementwise.

Every layer here may run in place (`top: "x"` on `bottom: "x"`).  The result
is written into the top's array, which in place is the input's; a layer
whose gradient needs the input then keeps a copy of it first (as Caffe keeps
`bottom_memory_`), the others work from the output alone.

    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1"
            relu_param { negative_slope: 0.1 } }
"""
import math

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..kernels import elementwise
from ..layer import NeuronLayer, onnx_export, register
from ..proto import caffe_pb2


class PointwiseLayer(NeuronLayer):
    """y = f(x) elementwise; the gradient is g * f'(x) with g the top diff.

    Subclasses write `compute(xp, x)` and `input_grad(xp, g, x, y)`, and say
    with `keeps_input()` whether `input_grad` reads x (otherwise it gets None
    and works from y alone, which lets an in-place layer free its input).
    """

    def keeps_input(self):
        return True

    def compute(self, xp, x):
        raise NotImplementedError

    def input_grad(self, xp, g, x, y):
        raise NotImplementedError(self.error("has no backward"))

    def forward(self, bottom, top):
        x = bottom[0].data
        self._x = self.saved_input(bottom, top) if self.keeps_input() else None
        top[0].data = self.compute(get_array_module(x), x)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            xp = get_array_module(y)
            bottom[0].diff = self.input_grad(xp, top[0].diff, self._x, y)


@register("ReLU", v1="RELU")
class ReLULayer(PointwiseLayer):
    """Rectified linear unit, leaky when `negative_slope` is set.

    y = max(x, 0) + negative_slope * min(x, 0)
    dy/dx = 1 for x > 0, negative_slope for x <= 0 (Caffe's convention at 0).
    """

    def setup(self, bottom, top):
        self.slope = float(self.layer_param.relu_param.negative_slope)

    def keeps_input(self):
        # With a slope >= 0, y > 0 exactly where x > 0, so y tells the side.
        return self.slope < 0

    def compute(self, xp, x):
        if self.slope == 0:
            return xp.maximum(x, 0)
        return xp.where(x > 0, x, x * self.slope)

    def input_grad(self, xp, g, x, y):
        positive = (x > 0) if x is not None else (y > 0)
        return xp.where(positive, g, g * self.slope)

    def forward(self, bottom, top):
        if self.slope != 0:
            return super().forward(bottom, top)
        elementwise.relu(bottom[0].data, top[0].data)   # the plain ReLU: one parallel pass

    def backward(self, top, propagate_down, bottom):
        if self.slope != 0:
            return super().backward(top, propagate_down, bottom)
        if propagate_down[0]:
            y = top[0].data
            get_array_module(y).multiply(top[0].diff, y > 0, out=bottom[0].diff)


@register("Sigmoid", v1="SIGMOID")
class SigmoidLayer(PointwiseLayer):
    """y = 1 / (1 + exp(-x)), computed as 0.5 * tanh(0.5 * x) + 0.5 (stable); dy/dx = y (1 - y)."""

    def keeps_input(self):
        return False

    def compute(self, xp, x):
        return 0.5 * xp.tanh(0.5 * x) + 0.5

    def input_grad(self, xp, g, x, y):
        return g * y * (1 - y)


@register("TanH", v1="TANH")
class TanHLayer(PointwiseLayer):
    """y = tanh(x); dy/dx = 1 - y^2."""

    def keeps_input(self):
        return False

    def compute(self, xp, x):
        return xp.tanh(x)

    def input_grad(self, xp, g, x, y):
        return g * (1 - y * y)


@register("AbsVal", v1="ABSVAL")
class AbsValLayer(PointwiseLayer):
    """y = |x|; dy/dx = sign(x) (0 at 0).  Caffe forbids in-place here; we allow it."""

    def compute(self, xp, x):
        return xp.abs(x)

    def input_grad(self, xp, g, x, y):
        return g * xp.sign(x)


@register("BNLL", v1="BNLL")
class BNLLLayer(PointwiseLayer):
    """Binomial normal log likelihood, y = log(1 + exp(x)) (softplus), computed stably as
    x + log(1 + exp(-x)) for x > 0.  dy/dx = e / (1 + e) with e = exp(min(x, 50)), as Caffe.
    """
    THRESHOLD = 50.0

    def compute(self, xp, x):
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def input_grad(self, xp, g, x, y):
        e = xp.exp(xp.minimum(x, self.THRESHOLD))
        return g * e / (e + 1)


@register("ELU")
class ELULayer(PointwiseLayer):
    """Exponential linear unit.

    y = x for x > 0, alpha * (exp(x) - 1) for x <= 0
    dy/dx = 1 for x > 0, alpha + y (= alpha * exp(x)) for x <= 0
    """

    def setup(self, bottom, top):
        self.alpha = float(self.layer_param.elu_param.alpha)

    def keeps_input(self):
        # For alpha >= 0, y > 0 exactly where x > 0.
        return self.alpha < 0

    def compute(self, xp, x):
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0)))

    def input_grad(self, xp, g, x, y):
        positive = (x > 0) if x is not None else (y > 0)
        return xp.where(positive, g, g * (self.alpha + y))


@register("Power", v1="POWER")
class PowerLayer(PointwiseLayer):
    """y = (shift + scale * x) ^ power;  dy/dx = power * scale * (shift + scale * x) ^ (power - 1).

    As in Caffe, a layer with power * scale == 0 ignores its input and outputs
    1 if power == 0 else shift ^ power, with a zero gradient.  Where Caffe
    writes the gradient as power * y / x (shift == 0), which is 0/0 = NaN at
    x == 0, we evaluate the formula above directly.
    """

    def setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def compute(self, xp, x):
        if self.diff_scale == 0:
            value = 1.0 if self.power == 0 else float(np.power(np.float64(self.shift), self.power))
            return xp.full(x.shape, value, dtype=x.dtype)
        base = x * self.scale + self.shift if (self.scale != 1 or self.shift != 0) else x
        return base if self.power == 1 else base ** self.power

    def input_grad(self, xp, g, x, y):
        if self.diff_scale == 0 or self.power == 1:
            return g * self.diff_scale
        base = x * self.scale + self.shift
        if self.power == 2:
            return g * (self.diff_scale * base)
        return g * (self.diff_scale * base ** (self.power - 1))


def _log_base(layer, base):
    """ln(base), with Caffe's base -1 meaning e; checks base > 0 as Caffe does."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise ValueError(layer.error(f"needs base > 0 (or -1 for e), got {base}"))
    return math.log(base)


@register("Exp", v1="EXP")
class ExpLayer(PointwiseLayer):
    """y = base ^ (shift + scale * x)  (base -1: e);  dy/dx = ln(base) * scale * y.

    Computed as outer * exp(inner * x) with inner = ln(base) * scale and
    outer = base ^ shift, as Caffe does.
    """

    def setup(self, bottom, top):
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        self.inner_scale = _log_base(self, base) * scale
        if shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1 else base ** shift

    def keeps_input(self):
        return False

    def compute(self, xp, x):
        y = xp.exp(x * self.inner_scale if self.inner_scale != 1 else x)
        return y * self.outer_scale if self.outer_scale != 1 else y

    def input_grad(self, xp, g, x, y):
        return g * (y * self.inner_scale)


@register("Log")
class LogLayer(PointwiseLayer):
    """y = log_base(shift + scale * x)  (base -1: natural log);
    dy/dx = scale / (ln(base) * (shift + scale * x)).
    """

    def setup(self, bottom, top):
        p = self.layer_param.log_param
        log_base = _log_base(self, float(p.base))
        if log_base == 0:
            raise ValueError(self.error(f"needs a base other than 1, got {p.base}"))
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)

    def compute(self, xp, x):
        inner = x * self.scale + self.shift if (self.scale != 1 or self.shift != 0) else x
        y = xp.log(inner)
        return y * self.base_scale if self.base_scale != 1 else y

    def input_grad(self, xp, g, x, y):
        return g * (self.scale * self.base_scale) / (x * self.scale + self.shift)


@register("Threshold", v1="THRESHOLD")
class ThresholdLayer(PointwiseLayer):
    """y = 1 if x > threshold else 0.  No backward (Caffe: NOT_IMPLEMENTED)."""

    def setup(self, bottom, top):
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def keeps_input(self):
        return False

    def compute(self, xp, x):
        return (x > self.threshold).astype(x.dtype)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise NotImplementedError(self.error("has no backward (as in Caffe)"))


@register("Swish")
class SwishLayer(PointwiseLayer):
    """y = x * sigmoid(beta * x);  dy/dx = beta * y + s * (1 - beta * y), s = sigmoid(beta * x)."""

    def setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)

    def keeps_input(self):
        return False   # keeps sigmoid(beta * x) instead, as Caffe does

    def compute(self, xp, x):
        self._sigmoid = 0.5 * xp.tanh((0.5 * self.beta) * x) + 0.5
        return x * self._sigmoid

    def input_grad(self, xp, g, x, y):
        by = self.beta * y
        return g * (by + self._sigmoid * (1 - by))


@register("Clip")
class ClipLayer(PointwiseLayer):
    """y = max(min, min(x, max));  dy/dx = 1 where min <= x <= max, else 0."""

    def setup(self, bottom, top):
        p = self.layer_param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise ValueError(self.error("needs clip_param { min: ... max: ... }"))
        self.min, self.max = float(p.min), float(p.max)

    def compute(self, xp, x):
        return xp.maximum(xp.minimum(x, self.max), self.min)

    def input_grad(self, xp, g, x, y):
        return g * ((x >= self.min) & (x <= self.max))


@register("Dropout", v1="DROPOUT")
class DropoutLayer(NeuronLayer):
    """At TRAIN: y = x * m / (1 - p) with m ~ Bernoulli(1 - p) drawn per element each forward
    (p = dropout_ratio, default 0.5); dy/dx = m / (1 - p).  At TEST: y = x, dy/dx = 1.

    The mask comes from `backend.rng()` on the CPU and CuPy's generator on the GPU.
    """

    def setup(self, bottom, top):
        p = float(self.layer_param.dropout_param.dropout_ratio)
        if not 0 <= p < 1:
            raise ValueError(self.error(f"needs 0 <= dropout_ratio < 1, got {p}"))
        self.ratio = p
        self.scale = 1.0 / (1.0 - p)
        self._mask = None

    def draw_mask(self, xp, shape, dtype):
        """m / (1 - p): 1 / (1 - p) with probability 1 - p, else 0."""
        if xp is np:
            uniform = backend.rng().random(shape)
        else:
            uniform = xp.random.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
        return (uniform >= self.ratio).astype(dtype) * dtype.type(self.scale)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == caffe_pb2.TRAIN:
            xp = get_array_module(x)
            self._mask = self.draw_mask(xp, x.shape, x.dtype)
            top[0].data = x * self._mask
        elif top[0] is not bottom[0]:
            top[0].data = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase == caffe_pb2.TRAIN:
            bottom[0].diff = top[0].diff * self._mask
        elif top[0] is not bottom[0]:
            bottom[0].diff = top[0].diff


@register("PReLU")
class PReLULayer(NeuronLayer):
    """Parametric ReLU with a learned slope per channel (axis 1), or one shared slope.

    y = max(x, 0) + a_c * min(x, 0)
    dL/dx = g for x > 0, a_c * g for x <= 0;   dL/da_c += sum over x <= 0 of g * x
    blobs[0]: shape (C,), or () with channel_shared; filler default constant 0.25.
    """

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        if layer_param.prelu_param.channel_shared:
            return [()]
        return [(tuple(bottom_shapes[0])[1] if bottom_shapes else None,)]

    def setup(self, bottom, top):
        if len(bottom[0].shape) < 2:
            raise ValueError(self.error(f"needs a bottom with at least 2 axes, got shape {bottom[0].shape}"))
        p = self.layer_param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not self.blobs:
            filler = p.filler
            if not p.HasField("filler"):
                filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
            shape = self.param_shapes(self.layer_param, [bottom[0].shape])[0]
            self.blobs.append(self.fill_param(shape, filler, bottom[0].dtype, like=bottom[0]))
        want = 1 if self.channel_shared else channels
        if self.blobs[0].count != want:
            raise ValueError(self.error(f"has {self.blobs[0].count} slope(s) but needs {want} "
                                        f"(channel_shared: {self.channel_shared}, bottom shape {bottom[0].shape})"))

    def reshape(self, bottom, top):
        if not self.channel_shared and bottom[0].shape[1] != self.blobs[0].count:
            raise ValueError(self.error(f"has {self.blobs[0].count} slopes but the bottom has shape "
                                        f"{bottom[0].shape}"))
        top[0].reshape(bottom[0].shape)

    def _slope(self, x):
        """The slopes shaped to broadcast against x: () or (1, C, 1, ...)."""
        a = self.blobs[0].data
        if self.channel_shared:
            return a.reshape(())
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        self._x = self.saved_input(bottom, top)
        xp = get_array_module(x)
        top[0].data = xp.where(x > 0, x, x * self._slope(x))

    def backward(self, top, propagate_down, bottom):
        x, g = self._x, top[0].diff
        xp = get_array_module(g)
        negative = x <= 0
        # Parameter gradient first: in place, bottom's diff is top's diff.
        if self.learns_param(0):
            slope_grad = xp.where(negative, g * x, 0)
            if self.channel_shared:
                self.blobs[0].diff += slope_grad.sum().reshape(self.blobs[0].shape)
            else:
                self.blobs[0].diff += slope_grad.sum(axis=(0,) + tuple(range(2, x.ndim)))
        if propagate_down[0]:
            bottom[0].diff = xp.where(negative, g * self._slope(x), g)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Dropout")
def _dropout_to_onnx(g, layer, bottoms, tops):
    g.node("Identity", bottoms, tops, name=layer.name)


@onnx_export("ReLU")
def _relu_to_onnx(g, layer, bottoms, tops):
    slope = layer.layer_param.relu_param.negative_slope
    if slope:
        g.node("LeakyRelu", bottoms, tops, name=layer.name, alpha=float(slope))
    else:
        g.node("Relu", bottoms, tops, name=layer.name)


_ONNX_POINTWISE = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}


@onnx_export(*_ONNX_POINTWISE)
def _pointwise_to_onnx(g, layer, bottoms, tops):
    g.node(_ONNX_POINTWISE[layer.type], bottoms, tops, name=layer.name)


@onnx_export("ELU")
def _elu_to_onnx(g, layer, bottoms, tops):
    g.node("Elu", bottoms, tops, name=layer.name, alpha=float(layer.layer_param.elu_param.alpha))


@onnx_export("PReLU")
def _prelu_to_onnx(g, layer, bottoms, tops):
    shape = g.shape(bottoms[0])
    channels, rank = shape[1], len(shape)
    slope = np.broadcast_to(g.params(layer)[0].reshape(-1), (channels,)).reshape((channels,) + (1,) * (rank - 2))
    g.node("PRelu", [bottoms[0], g.const(f"{layer.name}/slope", np.ascontiguousarray(slope))], tops,
           name=layer.name)


@onnx_export("Power")
def _power_to_onnx(g, layer, bottoms, tops):
    q, name = layer.layer_param.power_param, layer.name
    cur = bottoms[0]
    if q.scale != 1:
        nxt = g.tmp(name, "scaled")
        g.node("Mul", [cur, g.const(f"{name}/scale", np.array(q.scale, np.float32))], [nxt], name=f"{name}/mul")
        cur = nxt
    if q.shift != 0:
        nxt = g.tmp(name, "shifted")
        g.node("Add", [cur, g.const(f"{name}/shift", np.array(q.shift, np.float32))], [nxt], name=f"{name}/add")
        cur = nxt
    g.node("Pow", [cur, g.const(f"{name}/power", np.array(q.power, np.float32))], tops, name=name)
