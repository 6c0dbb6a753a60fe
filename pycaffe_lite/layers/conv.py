"""Convolution, Deconvolution and Im2col layers over the engines in pycaffe_lite.conv.

    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 20 kernel_size: 5 stride: 1
                                weight_filler { type: "xavier" } } }

Weights are Caffe's (K, C/group, kh, kw) for Convolution and (C, K/group, kh, kw)
for Deconvolution; the bias (K,) is added as a rank-1 offset.  Several bottoms
give as many tops, all through the same weights (Caffe's BaseConvolutionLayer).
`engine` picks the algorithm: DEFAULT/CAFFE im2col + GEMM, FFT, WINOGRAD
(F(2x2,3x3)), WINOGRAD4 (F(4x4,3x3)), AUTO (timed once per shape).
"""
from ..backend import get_array_module
from ..conv import im2col as im2col_engine
from ..conv.geometry import ConvGeometry
from ..layer import Layer, register
from ..proto import caffe_pb2

Engine = caffe_pb2.ConvolutionParameter


def geometry_from(p, layer):
    """ConvGeometry from a ConvolutionParameter, with Caffe's defaults and rules."""
    def pick(repeated, h, w, name, default):
        if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):
            if repeated:
                raise ValueError(layer.error(f"gives both {name} and {name}_h/{name}_w; use one"))
            return (h, w)
        if len(repeated) > 2:
            raise ValueError(layer.error(f"has {len(repeated)} {name} values; only 2-D convolution is supported"))
        if not repeated:
            return (default, default)
        return (repeated[0], repeated[-1])

    if not p.kernel_size and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise ValueError(layer.error("needs kernel_size, or kernel_h and kernel_w"))
    kernel = pick(list(p.kernel_size), p.kernel_h, p.kernel_w, "kernel", None)
    stride = pick(list(p.stride), p.stride_h, p.stride_w, "stride", 1)
    pad = pick(list(p.pad), p.pad_h, p.pad_w, "pad", 0)
    dilation = (1, 1) if not p.dilation else (p.dilation[0], p.dilation[-1])
    try:
        return ConvGeometry(kernel, stride, pad, dilation, p.group)
    except ValueError as exc:
        raise ValueError(layer.error(str(exc))) from None


def _engine(layer, geom, x_shape, w_shape):
    """(forward, backward) functions of the engine the layer asks for."""
    engine = layer.layer_param.convolution_param.engine
    if engine in (Engine.DEFAULT, Engine.CAFFE, Engine.CUDNN):
        return im2col_engine.forward, im2col_engine.backward
    if engine == Engine.AUTO:
        from ..conv import choice
        return choice.engine_for(geom, x_shape, w_shape)
    from ..conv import fft, winograd
    if engine == Engine.FFT:
        module, extra = fft, {}
    else:
        module, extra = winograd, {"m": 4 if engine == Engine.WINOGRAD4 else 2}
    if not module.supports(geom, x_shape, w_shape):
        raise ValueError(layer.error(f"engine {Engine.Engine.Name(engine)} cannot run a {geom} "
                                     f"convolution on input {tuple(x_shape)}; use DEFAULT"))
    return (lambda x, w, b, g, **kw: module.forward(x, w, b, g, **extra, **kw),
            lambda x, w, dy, g, **kw: module.backward(x, w, dy, g, **extra, **kw))


class BaseConvolutionLayer(Layer):
    """Shared parameter parsing, weights and bias for Convolution and Deconvolution."""
    num_bottom = (1, None)
    num_top = (1, None)
    equal_bottom_top = True

    def setup(self, bottom, top):
        p = self.layer_param.convolution_param
        if bottom[0].num_axes != 4 or p.axis not in (1, -3):
            raise ValueError(self.error(f"supports 2-D convolution of N x C x H x W blobs (axis 1); "
                                        f"got shape {bottom[0].shape} and axis {p.axis}"))
        self.geom = geometry_from(p, self)
        self.num_output, self.bias_term = p.num_output, p.bias_term
        channels = bottom[0].shape[1]
        if self.num_output < 1:
            raise ValueError(self.error("needs num_output >= 1"))
        if channels % self.geom.group or self.num_output % self.geom.group:
            raise ValueError(self.error(f"group {self.geom.group} must divide the input channels "
                                        f"{channels} and num_output {self.num_output}"))
        shape = self.weight_shape(channels)
        wanted = [shape] + ([(self.num_output,)] if self.bias_term else [])
        if self.blobs:
            got = [b.shape for b in self.blobs]
            if got != wanted:
                raise ValueError(self.error(f"has parameter shapes {got}, expected {wanted}"))
            return
        dtype = bottom[0].dtype
        self.blobs = [self.fill_param(shape, p.weight_filler, dtype, like=bottom[0])]
        if self.bias_term:
            self.blobs.append(self.fill_param((self.num_output,), p.bias_filler, dtype, like=bottom[0]))

    def reshape(self, bottom, top):
        first = bottom[0].shape
        for i, blob in enumerate(bottom):
            if blob.shape != first:
                raise ValueError(self.error(f"needs all bottoms of one shape; bottom[0] is {first}, "
                                            f"bottom[{i}] is {blob.shape}"))
        if self.weight_shape(first[1]) != self.blobs[0].shape:
            raise ValueError(self.error(f"input of shape {first} does not fit weights of shape "
                                        f"{self.blobs[0].shape}"))
        n, _, h, w = first
        out_shape = (n, self.num_output) + self.output_hw(h, w)
        for blob in top:
            blob.reshape(out_shape)

    def learns(self, i):
        flags = getattr(self, "param_propagate_down", None)
        return True if flags is None else flags[i]

    def bias_diff(self, dy):
        if self.bias_term and self.learns(1):
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))


@register("Convolution", v1="CONVOLUTION")
class ConvolutionLayer(BaseConvolutionLayer):
    """y = W * x + b, Caffe's output size (in + 2p - (d(k-1)+1)) // s + 1."""
    def weight_shape(self, channels):
        return (self.num_output, channels // self.geom.group) + self.geom.kernel

    def output_hw(self, h, w):
        try:
            return self.geom.output_hw(h, w)
        except ValueError as exc:
            raise ValueError(self.error(str(exc))) from None

    def _engine(self, x_shape):
        return _engine(self, self.geom, x_shape, self.blobs[0].shape)

    def forward(self, bottom, top):
        forward, _ = self._engine(bottom[0].shape)
        w = self.blobs[0].data
        b = self.blobs[1].data if self.bias_term else None
        for x, y in zip(bottom, top):
            forward(x.data, w, b, self.geom, out=y.data)

    def backward(self, top, propagate_down, bottom):
        _, backward = self._engine(bottom[0].shape)
        w = self.blobs[0]
        for y, down, x in zip(top, propagate_down, bottom):
            dx, dw = backward(x.data, w.data, y.diff, self.geom, need_dx=bool(down), need_dw=self.learns(0))
            if dw is not None:
                w.diff += dw
            self.bias_diff(y.diff)
            if down:
                x.diff = dx


@register("Deconvolution", v1="DECONVOLUTION")
class DeconvolutionLayer(BaseConvolutionLayer):
    """The transpose of a convolution: out = s(in - 1) + d(k-1)+1 - 2p; weights (C, K/group, kh, kw)."""
    def weight_shape(self, channels):
        return (channels, self.num_output // self.geom.group) + self.geom.kernel

    def output_hw(self, h, w):
        try:
            return self.geom.deconv_output_hw(h, w)
        except ValueError as exc:
            raise ValueError(self.error(str(exc))) from None

    def forward(self, bottom, top):
        w = self.blobs[0].data
        for x, y in zip(bottom, top):
            im2col_engine.backward_data(x.data, w, self.geom, y.shape, out=y.data)
            if self.bias_term:
                y.data += self.blobs[1].data.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        w = self.blobs[0]
        for y, down, x in zip(top, propagate_down, bottom):
            if self.learns(0):
                w.diff += im2col_engine.backward_weights(y.diff, x.data, self.geom, w.shape)
            self.bias_diff(y.diff)
            if down:
                im2col_engine.forward(y.diff, w.data, None, self.geom, out=x.diff)


@register("Im2col", v1="IM2COL")
class Im2colLayer(Layer):
    """Caffe's im2col as a layer: N x C x H x W -> N x (C*kh*kw) x Ho x Wo, channel-major."""
    num_bottom = (1, 1)
    num_top = (1, 1)

    def setup(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise ValueError(self.error(f"needs an N x C x H x W bottom, got {bottom[0].shape}"))
        self.geom = geometry_from(self.layer_param.convolution_param, self)

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        try:
            ho, wo = self.geom.output_hw(h, w)
        except ValueError as exc:
            raise ValueError(self.error(str(exc))) from None
        top[0].reshape(n, c * self.geom.kernel[0] * self.geom.kernel[1], ho, wo)

    def forward(self, bottom, top):
        cols = im2col_engine.im2col(bottom[0].data, self.geom)       # (CKK, N, Ho*Wo)
        top[0].data = cols.transpose(1, 0, 2).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = get_array_module(top[0].diff)
            n, ckk = top[0].shape[:2]
            cols = xp.ascontiguousarray(top[0].diff.reshape(n, ckk, -1).transpose(1, 0, 2))
            bottom[0].diff = im2col_engine.col2im(cols, bottom[0].shape, self.geom)
