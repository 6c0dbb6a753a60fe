"""What a LayerParameter says about a layer's window, read once with Caffe's rules.

Convolution (and Deconvolution, Im2col) geometry as BVLC Caffe's
BaseConvolutionLayer::LayerSetUp reads `convolution_param`; pooling geometry as
PoolingLayer::LayerSetUp reads `pooling_param`; both with Caffe's checks.  The
layers, the analysis, the zoo and the ONNX export all read a definition through
these functions, so a net they accept is one the layer accepts.

    kernel, stride, pad, dilation = conv_spatial(layer_param, num_spatial=2)
    kernel, stride, pad = pool_spatial(layer_param)     # kernel None with global_pooling

Also the vocabulary in which a layer tells how it grows a receptive field
(`FieldStep`), for analysis.summary.

This module is on the ground floor (it reads proto messages, nothing else), so
the engines, the layers and everything above may use it; conv/geometry.py's
ConvGeometry is the engines' own form of the same numbers, built by the layer.
Errors are ValueError(error(message)); `error` names the layer as Layer.error does.
"""
import dataclasses
import math

from .proto import caffe_pb2

PP = caffe_pb2.PoolingParameter


def layer_error(layer_param):
    """Layer.error's wording for a LayerParameter: "layer 'conv1' (type Convolution) <message>"."""
    return lambda message: f"layer '{layer_param.name}' (type {layer_param.type}) {message}"


# ---------------------------------------------------------------------------- convolution
def conv_spatial(layer_param, num_spatial, error=None):
    """(kernel, stride, pad, dilation) lists of length num_spatial from `convolution_param`,
    with BaseConvolutionLayer::LayerSetUp's checks and messages."""
    p = layer_param.convolution_param
    error = error or layer_error(layer_param)

    def per_axis(name, repeated, has_hw, h, w, default):
        if has_hw:
            if num_spatial != 2:
                raise ValueError(error(f"{name}_h & {name}_w can only be used for 2D convolution."))
            if len(repeated):
                raise ValueError(error(f"Either {name} or {name}_h/w should be specified; not both."))
            return [int(h), int(w)]
        n = len(repeated)
        allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
        if n not in allowed:
            field = "kernel_size" if name == "kernel" else name
            raise ValueError(error(
                f"{field} must be specified once, or once per spatial dimension ({field} specified "
                f"{n} times; {num_spatial} spatial dims)."))
        if n == 0:
            return [default] * num_spatial
        return [int(repeated[0 if n == 1 else i]) for i in range(num_spatial)]

    kernel = per_axis("kernel", p.kernel_size, p.HasField("kernel_h") or p.HasField("kernel_w"),
                      p.kernel_h, p.kernel_w, None)
    if min(kernel) <= 0:
        raise ValueError(error(f"Filter dimensions must be nonzero, got kernel {kernel}."))
    stride = per_axis("stride", p.stride, p.HasField("stride_h") or p.HasField("stride_w"),
                      p.stride_h, p.stride_w, 1)
    if min(stride) <= 0:
        raise ValueError(error(f"Stride dimensions must be nonzero, got stride {stride}."))
    pad = per_axis("pad", p.pad, p.HasField("pad_h") or p.HasField("pad_w"), p.pad_h, p.pad_w, 0)
    dilation = per_axis("dilation", p.dilation, False, 0, 0, 1)
    if min(dilation) <= 0:
        raise ValueError(error(f"Dilation must be at least 1, got dilation {dilation}."))
    return kernel, stride, pad, dilation


def has_conv_kernel(layer_param):
    p = layer_param.convolution_param
    return bool(p.kernel_size) or p.HasField("kernel_h") or p.HasField("kernel_w")


def conv_num_spatial(layer_param, bottom_shape=None, error=None):
    """The spatial axes of a convolution: those after its channel `axis` in `bottom_shape`;
    without a bottom shape, 2 unless kernel_size is given once per axis of a higher rank."""
    p = layer_param.convolution_param
    if bottom_shape is None:
        return max(2, len(p.kernel_size))
    return len(bottom_shape) - conv_channel_axis(layer_param, bottom_shape, error) - 1


def conv_channel_axis(layer_param, bottom_shape, error=None):
    """Caffe's CanonicalAxisIndex of convolution_param.axis for a bottom of this shape."""
    axis, n = layer_param.convolution_param.axis, len(bottom_shape)
    if not -n <= axis < max(n, 1):
        raise ValueError((error or layer_error(layer_param))(
            f"axis {axis} out of range for a blob of shape {tuple(bottom_shape)}"))
    return axis + n if axis < 0 else axis


def conv_extent(kernel, dilation):
    """A dilated kernel's reach per axis: d*(k-1) + 1."""
    return [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]


# ---------------------------------------------------------------------------- pooling
def pool_spatial(layer_param, error=None):
    """(kernel or None for global pooling, stride, pad) as (h, w) pairs from `pooling_param`,
    with PoolingLayer::LayerSetUp's checks."""
    p = layer_param.pooling_param
    error = error or layer_error(layer_param)
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            raise ValueError(error("with global_pooling: true the kernel size cannot be specified"))
        kernel = None
    else:
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise ValueError(error("needs kernel_size OR kernel_h and kernel_w (not both); "
                                   "non-square kernels need both kernel_h and kernel_w"))
        kernel = (p.kernel_size, p.kernel_size) if has("kernel_size") else (p.kernel_h, p.kernel_w)
        if min(kernel) <= 0:
            raise ValueError(error(f"needs a kernel size > 0, got {kernel[0]} x {kernel[1]}"))
    if not ((not has("pad") and has("pad_h") and has("pad_w")) or (not has("pad_h") and not has("pad_w"))):
        raise ValueError(error("needs pad OR pad_h and pad_w"))
    if not ((not has("stride") and has("stride_h") and has("stride_w"))
            or (not has("stride_h") and not has("stride_w"))):
        raise ValueError(error("needs stride OR stride_h and stride_w"))
    pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
    stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride)
    if min(stride) <= 0:
        raise ValueError(error(f"needs a stride > 0, got {stride[0]} x {stride[1]}"))
    if p.global_pooling and (pad != (0, 0) or stride != (1, 1)):
        raise ValueError(error(f"with global_pooling: true only pad = 0 and stride = 1 are allowed, "
                               f"got pad {pad} and stride {stride}"))
    if pad != (0, 0):
        if p.pool not in (PP.AVE, PP.MAX):
            raise ValueError(error("implements padding only for AVE and MAX pooling"))
        if kernel is not None and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            raise ValueError(error(f"needs pad < kernel, got pad {pad} and kernel {kernel}"))
    return kernel, stride, pad


def pool_window(layer_param, bottom_shape, error=None):
    """(kernel, stride, pad) of a Pooling layer over a (N, C, H, W) bottom: global pooling's
    kernel is the bottom's H x W."""
    kernel, stride, pad = pool_spatial(layer_param, error)
    return (tuple(bottom_shape[2:4]) if kernel is None else kernel), stride, pad


# ---------------------------------------------------------------------------- receptive fields
GLOBAL = "global"


@dataclasses.dataclass(frozen=True)
class FieldStep:
    """How a layer maps the receptive field (rf, stride in input pixels) of its bottoms to its top's.

    kind: "same"   output pixel i sees input pixel i (pointwise, per channel, stacking):
                   the field passes through when the spatial size is unchanged
          "window" a kernel of `extent` pixels moved by `stride` (convolution, pooling)
          "transposed" the transpose of a window (Deconvolution)
          "whole"  every output sees the whole input (InnerProduct, SPP)
    bottoms: how many leading bottoms feed the field (None: all of them).
    """
    kind: str
    extent: tuple = ()
    stride: tuple = ()
    bottoms: int = None

    def apply(self, rf, jump, bottom_shapes, top_shape):
        """The top's (rf, stride), GLOBAL, or None when this step does not apply."""
        if self.kind == "whole":
            return GLOBAL
        if self.kind == "same":
            if all(tuple(b[2:]) == tuple(top_shape[2:]) for b in bottom_shapes[:1] if len(b) >= 4):
                return rf, jump
            return None
        if self.kind == "window":
            return (tuple(r + (e - 1) * s for r, e, s in zip(rf, self.extent, jump)),
                    tuple(s * t for s, t in zip(jump, self.stride)))
        # transposed: one output pixel gathers ceil(extent / stride) neighbouring input pixels
        return (tuple(r + (math.ceil(e / t) - 1) * s for r, e, s, t in zip(rf, self.extent, jump, self.stride)),
                tuple(s / t for s, t in zip(jump, self.stride)))


SAME = FieldStep("same")
WHOLE = FieldStep("whole")


def window_step(extent, stride):
    return FieldStep("window", tuple(extent), tuple(stride))


def transposed_step(extent, stride):
    return FieldStep("transposed", tuple(extent), tuple(stride))
