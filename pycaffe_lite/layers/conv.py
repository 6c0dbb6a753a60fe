"""Convolution, Deconvolution and Im2col layers over the engines in pycaffe_lite.conv.

    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 20 kernel_size: 5 stride: 1
                                weight_filler { type: "xavier" } } }

Weights are Caffe's (K, C/group, kh, kw) for Convolution and (C, K/group, kh, kw)
for Deconvolution; the bias (K,) is added as a rank-1 offset.  Several bottoms
give as many tops, all through the same weights (Caffe's BaseConvolutionLayer).
Output sizes are Caffe's: a Convolution rounds down,
(in + 2p - (d(k-1)+1)) // s + 1; a Deconvolution gives s(in-1) + d(k-1)+1 - 2p.

The spatial axes are those after `axis` (the channel axis, default 1); the
axes before it are all batch.  A 1-D convolution runs as 2-D with a height of
1; with three or more spatial axes (Convolution and Deconvolution) the layer
runs sums of 2-D convolutions (conv/nd.py), as many as the leading kernel taps.

`engine` picks the algorithm (pycaffe_lite.conv): CAFFE is im2col + GEMM,
Caffe's own arithmetic; FFT (stride 1); WINOGRAD, F(2x2,3x3), and WINOGRAD4,
F(4x4,3x3) (3x3, stride 1, dilation 1); AUTO times the applicable engines once
per distinct shape, at the layer's first pass (pycaffe_lite.conv.chosen_engines()
lists the choices, and `layer.engine_name` says what a layer runs); DEFAULT
(and CUDNN) is AUTO for layers of 2e8 multiply-adds and more, im2col below
(conv/choice.py says why).  An engine asked for by name that cannot run the
layer's geometry is an error.
"""
from ..backend import get_array_module
from ..conv import choice, nd
from ..conv import im2col as im2col_engine
from ..conv.engines import get_engine
from ..conv.geometry import ConvGeometry
from ..geometry import (
    conv_channel_axis,
    conv_extent,
    conv_num_spatial,
    conv_spatial,
    has_conv_kernel,
    transposed_step,
    window_step,
)
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2


def parse_spatial(layer, blob, max_spatial=2):
    """(channel_axis, num_spatial) for a bottom blob, checked: 1 to max_spatial (None: any) spatial axes."""
    p = layer.layer_param.convolution_param
    try:
        axis = blob.canonical_axis(p.axis)
    except ValueError as exc:
        raise ValueError(layer.error(str(exc))) from None
    num_spatial = blob.num_axes - axis - 1
    if num_spatial < 1:
        raise ValueError(layer.error(f"needs at least one spatial axis after the channel axis {axis}; "
                                     f"bottom has shape {blob.shape}"))
    if max_spatial is not None and num_spatial > max_spatial:
        raise ValueError(layer.error(f"supports 1-D and 2-D convolution only; bottom of shape "
                                     f"{blob.shape} with channel axis {axis} has {num_spatial} "
                                     "spatial axes"))
    return axis, num_spatial


def as_geometry(layer, num_spatial, group=1):
    """ConvGeometry (2-D; a 1-D layer gets height 1), or an NDGeometry for three or more
    spatial axes, from the layer's parameters."""
    kernel, stride, pad, dilation = conv_spatial(layer.layer_param, num_spatial, layer.error)
    if num_spatial > 2:
        return nd.NDGeometry(tuple(kernel), tuple(stride), tuple(pad), tuple(dilation), group)
    if num_spatial == 1:
        kernel, stride, pad, dilation = [1] + kernel, [1] + stride, [0] + pad, [1] + dilation
    return ConvGeometry(tuple(kernel), tuple(stride), tuple(pad), tuple(dilation), group)


def _field_step(layer_param, bottom_shapes, step):
    """The kernel's dilated extent moved by the stride (a Deconvolution: the transpose of that)."""
    kernel, stride, _, dilation = conv_spatial(layer_param, conv_num_spatial(layer_param, bottom_shapes[0]))
    return step(conv_extent(kernel, dilation), stride)


def _count(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _view(array, shape):
    """array reshaped without a copy (None when that is impossible)."""
    if not array.flags.c_contiguous:
        return None
    return array.reshape(shape)


class BaseConvolutionLayer(Layer):
    """Shared parsing, parameters, shapes and engine choice (Caffe's BaseConvolutionLayer)."""
    num_bottom = (1, None)
    num_top = (1, None)
    equal_bottom_top = True
    kind = "conv"

    # -- what the definition says --------------------------------------------
    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        """[weights (see weight_dims), bias (num_output,) with bias_term]."""
        p = layer_param.convolution_param
        shape = tuple(bottom_shapes[0]) if bottom_shapes else None
        channels = None if shape is None else shape[conv_channel_axis(layer_param, shape)]
        kernel = None
        if shape is not None or has_conv_kernel(layer_param):
            kernel = conv_spatial(layer_param, conv_num_spatial(layer_param, shape))[0]
        weights = None if kernel is None else cls.weight_dims(int(p.num_output), channels, int(p.group) or 1, kernel)
        return [weights] + [(int(p.num_output),)] * bool(p.bias_term)

    @classmethod
    def field_step(cls, layer_param, bottom_shapes):
        return _field_step(layer_param, bottom_shapes, transposed_step if cls.kind == "deconv" else window_step)

    # -- setup ---------------------------------------------------------------
    def setup(self, bottom, top):
        p = self.layer_param.convolution_param
        self.channel_axis, self.num_spatial = parse_spatial(self, bottom[0], max_spatial=None)
        self.nd = self.num_spatial > 2
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise ValueError(self.error(f"needs num_output > 0, got {self.num_output}"))
        group = int(p.group)
        if group <= 0:
            raise ValueError(self.error(f"needs group > 0, got {group}"))
        if self.channels % group:
            raise ValueError(self.error(f"has {self.channels} input channels, not a multiple of "
                                        f"group {group}"))
        if self.num_output % group:
            raise ValueError(self.error(f"Number of output should be multiples of group: "
                                        f"num_output {self.num_output}, group {group}"))
        self.geom = as_geometry(self, self.num_spatial, group)
        self.bias_term = bool(p.bias_term)
        weight_shape = self.param_shapes(self.layer_param, [bottom[0].shape])[0]
        if self.blobs:
            if len(self.blobs) != 1 + self.bias_term:
                raise ValueError(self.error(f"Incorrect number of weight blobs: expected "
                                            f"{1 + self.bias_term}, got {len(self.blobs)}"))
            if tuple(self.blobs[0].shape) != weight_shape:
                raise ValueError(self.error(f"Incorrect weight shape: expected shape {weight_shape}; "
                                            f"instead, shape was {tuple(self.blobs[0].shape)}"))
            if self.bias_term and tuple(self.blobs[1].shape) != (self.num_output,):
                raise ValueError(self.error(f"Incorrect bias shape: expected shape ({self.num_output},); "
                                            f"instead, shape was {tuple(self.blobs[1].shape)}"))
        else:
            dtype = bottom[0].dtype
            self.blobs = [self.fill_param(weight_shape, p.weight_filler, dtype, like=bottom[0])]
            if self.bias_term:
                self.blobs.append(self.fill_param((self.num_output,), p.bias_filler, dtype, like=bottom[0]))
        self.engine_request = choice.resolve(p.engine)       # engine name, or choice.AUTO / DEFAULT
        if self.nd and self.engine_request in choice.TIMED:
            self.engine_request = "im2col"                    # N-D layers run their 2-D parts on im2col
        self.timed = self.engine_request in choice.TIMED
        self.engine = self._engine("im2col" if self.timed else self.engine_request)
        if not self.timed and not self.engine.supports(self.geom):
            raise ValueError(self.error(
                f"asks for engine {choice.prototxt_name(p.engine)}, which cannot run a "
                f"{self.geom} convolution ({self.engine.describe}); use DEFAULT or AUTO"))
        self._choice_pending = False
        self._ctx = []

    def _engine(self, name):
        """The named engine; over three or more spatial axes, run on their 2-D parts."""
        return nd.NDEngine(get_engine(name)) if self.nd else get_engine(name)

    # -- shapes ----------------------------------------------------------------
    def reshape(self, bottom, top):
        first = bottom[0].shape
        axis = self.channel_axis
        if len(first) != axis + 1 + self.num_spatial:
            raise ValueError(self.error(f"bottom num_axes may not change: set up with "
                                        f"{axis + 1 + self.num_spatial}, got shape {first}"))
        if first[axis] != self.channels:
            raise ValueError(self.error(f"Input size incompatible with convolution kernel: the "
                                        f"bottom has {first[axis]} channels, the weights expect "
                                        f"{self.channels} (shape {first})"))
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != first:
                raise ValueError(self.error(f"All inputs must have the same shape: bottom[0] is "
                                            f"{first}, bottom[{i}] is {blob.shape}"))
        self.num = 1
        for s in first[:axis]:
            self.num *= s
        spatial = first[axis + 1:]
        self.in_hw = tuple(spatial) if self.num_spatial != 1 else (1, spatial[0])
        try:
            self.out_hw = self.output_hw(*self.in_hw)
        except ValueError as exc:
            raise ValueError(self.error(str(exc))) from None
        out_spatial = self.out_hw if self.num_spatial != 1 else (self.out_hw[1],)
        top_shape = tuple(first[:axis]) + (self.num_output,) + tuple(out_spatial)
        for blob in top:
            blob.reshape(top_shape)
        while len(self._ctx) < len(bottom):
            self._ctx.append({})
        self._choice_pending = self.timed              # chosen at the first pass, not at set-up
        self._dtype_xp = (bottom[0].dtype, get_array_module(bottom[0].data))

    def choose_engine(self):
        """Settle a timed (AUTO / DEFAULT) engine choice for the current shape."""
        if self._choice_pending:
            x_shape, w_shape = self.conv_shapes()
            dtype, xp = self._dtype_xp
            self.engine = get_engine(choice.choose(self.kind, x_shape, w_shape, self.geom, dtype, xp,
                                                   train=self.phase == caffe_pb2.TRAIN,
                                                   request=self.engine_request))
            self._choice_pending = False

    @property
    def engine_name(self):
        """The engine this layer runs (for `pycaffe-lite time`); a pending timed choice is made now."""
        self.choose_engine()
        return self.engine.name

    def w4(self):
        w = self.param_arrays()[0]
        return w if self.num_spatial != 1 else w.reshape(w.shape[:2] + (1, w.shape[2]))

    def _in4(self):
        return (self.num, self.channels) + self.in_hw

    def _out4(self):
        return (self.num, self.num_output) + self.out_hw

    def _add_bias_diff(self, dy):
        self.blobs[1].diff += dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))


@register("Convolution", v1="CONVOLUTION")
class ConvolutionLayer(BaseConvolutionLayer):
    """y = W * x + b over every bottom; weights (K, C/group, kh, kw), bias (K,).

    Caffe's output size (in + 2p - (d(k-1)+1)) // s + 1, rounded down."""
    kind = "conv"

    @classmethod
    def madds(cls, layer_param, bottom_shapes, top_shapes):
        """Per output element, C/group x the kernel's taps."""
        return _count(top_shapes[0]) * _count(cls.param_shapes(layer_param, bottom_shapes)[0][1:])

    @staticmethod
    def weight_dims(num_output, channels, group, kernel):
        """(K, C/group, *kernel); C None when the bottom is not known."""
        return (num_output, None if channels is None else channels // group, *kernel)

    def output_hw(self, *spatial):
        return self.geom.output_shape(spatial) if self.nd else self.geom.output_hw(*spatial)

    def conv_shapes(self):
        return self._in4(), (self.num_output, self.channels // self.geom.group) + self.geom.kernel

    # Hooks a subclass overrides to convolve other values through the same code (the binary
    # layers: sign(x), sign(W), the bias added after their scale).
    def conv_input(self, i, blob):
        """Bottom i's values as the engine convolves them."""
        return blob.data

    def conv_bias(self):
        """The bias the engine adds (None: none)."""
        return self.param_arrays()[1] if self.bias_term else None

    def backward_w4(self):
        """The weights backward propagates the top diff through (to the bottom)."""
        return self.w4()

    def add_weight_diff(self, dw):
        """Accumulate the engine's weight gradient into the weight blob's diff."""
        self.blobs[0].diff += dw.reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        self.choose_engine()
        w = self.w4()
        b = self.conv_bias()
        for i, (x, y) in enumerate(zip(bottom, top)):
            out = _view(y.data, self._out4())
            result = self.engine.forward(self.conv_input(i, x).reshape(self._in4()), w, b, self.geom,
                                         out=out, ctx=self._ctx[i])
            if out is None:
                y.data = result.reshape(y.shape)

    def backward(self, top, propagate_down, bottom):
        self.choose_engine()
        w = self.backward_w4()
        need_dw = self.learns_param(0)
        need_db = self.bias_term and self.learns_param(1)
        for i, (y, down, x) in enumerate(zip(top, propagate_down, bottom)):
            dy = y.diff.reshape(self._out4())
            if need_db:
                self._add_bias_diff(dy)
            if not (down or need_dw):
                continue
            dx_out = _view(x.diff, self._in4()) if down else None
            dx, dw = self.engine.backward(self.conv_input(i, x).reshape(self._in4()), w, dy,
                                          self.geom, need_dx=bool(down), need_dw=need_dw,
                                          dx_out=dx_out, ctx=self._ctx[i])
            if need_dw:
                self.add_weight_diff(dw)
            if down and dx_out is None:
                x.diff = dx.reshape(x.shape)


@register("Deconvolution", v1="DECONVOLUTION")
class DeconvolutionLayer(BaseConvolutionLayer):
    """The transpose of a convolution (its backward pass as a forward).

    Weights (C, K/group, kh, kw), bias (K,); output s(in-1) + d(k-1)+1 - 2p.
    With a `bilinear` weight filler, stride f and kernel 2f - f % 2 it is the
    classic learnable upsampling layer."""
    kind = "deconv"

    @classmethod
    def madds(cls, layer_param, bottom_shapes, top_shapes):
        """Per input element, K/group x the kernel's taps."""
        return _count(bottom_shapes[0]) * _count(cls.param_shapes(layer_param, bottom_shapes)[0][1:])

    @staticmethod
    def weight_dims(num_output, channels, group, kernel):
        """(C, K/group, *kernel); C None when the bottom is not known."""
        if num_output % group:
            return None
        return (channels, num_output // group, *kernel)

    def output_hw(self, *spatial):
        return self.geom.deconv_output_shape(spatial) if self.nd else self.geom.deconv_output_hw(*spatial)

    def conv_shapes(self):
        # the underlying convolution maps the top (K channels) to the bottom (C channels)
        return self._out4(), (self.channels, self.num_output // self.geom.group) + self.geom.kernel

    def forward(self, bottom, top):
        self.choose_engine()
        w = self.w4()
        for x, y in zip(bottom, top):
            out = _view(y.data, self._out4())
            result = self.engine.backward_data(x.data.reshape(self._in4()), w, self.geom,
                                               self._out4(), out=out)
            if self.bias_term:
                result += self.param_arrays()[1].reshape((1, -1) + (1,) * (result.ndim - 2))
            if out is None:
                y.data = result.reshape(y.shape)

    def backward(self, top, propagate_down, bottom):
        self.choose_engine()
        weight = self.blobs[0]
        w = self.w4()
        need_dw = self.learns_param(0)
        need_db = self.bias_term and self.learns_param(1)
        for y, down, x in zip(top, propagate_down, bottom):
            dy = y.diff.reshape(self._out4())
            if need_db:
                self._add_bias_diff(dy)
            if need_dw:
                dw = self.engine.backward_weights(dy, x.data.reshape(self._in4()), self.geom,
                                                  self.conv_shapes()[1])
                weight.diff += dw.reshape(weight.shape)
            if down:
                dx_out = _view(x.diff, self._in4())
                dx = self.engine.forward(dy, w, None, self.geom, out=dx_out)
                if dx_out is None:
                    x.diff = dx.reshape(x.shape)


@register("Im2col", v1="IM2COL")
class Im2colLayer(Layer):
    """Caffe's im2col as a layer: (N, C, H, W) -> (N, C*kh*kw, Ho, Wo).

    Channel c, kernel offset (i, j) becomes channel (c*kh + i)*kw + j, as in
    Caffe's column buffer; kernel, stride, pad and dilation come from
    `convolution_param` (num_output and group are not used)."""
    num_bottom = (1, 1)
    num_top = (1, 1)

    @classmethod
    def field_step(cls, layer_param, bottom_shapes):
        return _field_step(layer_param, bottom_shapes, window_step)

    def setup(self, bottom, top):
        self.channel_axis, self.num_spatial = parse_spatial(self, bottom[0])
        self.geom = as_geometry(self, self.num_spatial)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.channel_axis
        if len(shape) != axis + 1 + self.num_spatial:
            raise ValueError(self.error(f"bottom num_axes may not change, got shape {shape}"))
        self.num = 1
        for s in shape[:axis]:
            self.num *= s
        self.channels = shape[axis]
        spatial = shape[axis + 1:]
        self.in_hw = tuple(spatial) if self.num_spatial == 2 else (1, spatial[0])
        try:
            self.out_hw = self.geom.output_hw(*self.in_hw)
        except ValueError as exc:
            raise ValueError(self.error(str(exc))) from None
        kk = self.geom.kernel[0] * self.geom.kernel[1]
        out_spatial = self.out_hw if self.num_spatial == 2 else (self.out_hw[1],)
        top[0].reshape(tuple(shape[:axis]) + (self.channels * kk,) + tuple(out_spatial))

    def _cols_shape(self):
        kk = self.geom.kernel[0] * self.geom.kernel[1]
        return (self.num, self.channels * kk, self.out_hw[0] * self.out_hw[1])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape((self.num, self.channels) + self.in_hw)
        out = _view(top[0].data, self._cols_shape())
        if out is None:
            cols = im2col_engine.im2col(x, self.geom)
            top[0].data = cols.transpose(1, 0, 2).reshape(top[0].shape)
        else:
            im2col_engine.im2col(x, self.geom, out=out.transpose(1, 0, 2))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        cols = xp.ascontiguousarray(top[0].diff.reshape(self._cols_shape()).transpose(1, 0, 2))
        x_shape = (self.num, self.channels) + self.in_hw
        dx_out = _view(bottom[0].diff, x_shape)
        dx = im2col_engine.col2im(cols, x_shape, self.geom, out=dx_out)
        if dx_out is None:
            bottom[0].diff = dx.reshape(bottom[0].shape)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Convolution", "Deconvolution")
def _conv_to_onnx(g, layer, bottoms, tops):
    name = layer.name
    if layer.layer_param.convolution_param.axis != 1 or len(g.shape(bottoms[0])) != 4:
        raise ValueError(f"layer '{name}': only 2-D convolutions (N, C, H, W) export to ONNX")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv_spatial(layer.layer_param, 2)
    params = g.params(layer)
    inputs = [bottoms[0], g.const(f"{name}/W", params[0])]
    if len(params) > 1:
        inputs.append(g.const(f"{name}/B", params[1]))
    g.node("Conv" if layer.type == "Convolution" else "ConvTranspose", inputs, tops[:1], name=name,
           kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], dilations=[dh, dw],
           group=int(layer.layer_param.convolution_param.group))
