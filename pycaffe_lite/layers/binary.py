"""Binary layers: BinaryConvolution and BinaryInnerProduct (BinaryNet, XNOR-Net).

    layer { name: "conv2" type: "BinaryConvolution" bottom: "conv1" top: "conv2"
            convolution_param { num_output: 64 kernel_size: 3 pad: 1 }
            binary_param { binarize_input: true scale: MEAN_ABS } }

Forward (Courbariaux et al. 2016, arXiv:1602.02830; Rastegari et al. 2016,
arXiv:1603.05279):  y = alpha_k * (sign(x) (*) sign(W))_k + b_k, with
sign(v) = +1 for v >= 0 (so sign(0) = +1) and -1 below; sign(x) only with
`binarize_input` (a first layer reads its real inputs); alpha_k = mean |W_k|
over output k's weights with `scale: MEAN_ABS` (XNOR-Net), 1 with NONE
(BinaryNet).  The scale and the bias come after the product, so the product
itself is an exact integer on every path.

Backward, the straight-through estimator: the bottom gets d/d sign(x) where
|x| <= 1 and 0 elsewhere (BinaryNet's hard-tanh STE); the latent real weights
get the gradient w.r.t. their binary values, as BinaryNet applies it, plus,
with MEAN_ABS, the exact gradient of alpha (sign(W_i)/n times sum_j
sign(W_j) dL/dsign(W_j)); the bias its usual gradient.  After each solver
update `after_update` clips the latent weights to [-1, 1] (`clip_weights`).

The layers are Convolution and InnerProduct with other values fed through the
same code (their hooks conv_input / w4 / backward_w4 / add_weight_diff and
product_*).  `binary_param { engine }`: FLOAT runs the +-1 values through the
float engines (im2col + GEMM only: FFT and Winograd are not exact on integer
sums); PACKED runs pycaffe_lite.conv.binary's XNOR + popcount on bits packed 64
to a uint64, equal to FLOAT bit for bit; DEFAULT is PACKED in TEST nets on
NumPy arrays and FLOAT otherwise (and FLOAT for a first layer's batch that is
not fixed point, see conv/binary.py).
"""
import numpy as np

from ..backend import get_array_module, reused
from ..conv import binary as packed
from ..kernels.xnor import HAVE_NUMBA
from ..layer import register
from ..proto import caffe_pb2
from .common import InnerProductLayer
from .conv import ConvolutionLayer

_P = caffe_pb2.BinaryParameter
_CONV = caffe_pb2.ConvolutionParameter


def binarize(values, out=None):
    """sign(values) as +1 / -1 in their dtype, sign(0) = +1 (into `out` when given)."""
    xp = get_array_module(values)
    if out is None:
        out = xp.empty(values.shape, values.dtype)
    out[...] = 1
    out[values < 0] = -1
    return out


def per_output(vector, ndim, axis):
    """A (K,) vector shaped to broadcast along `axis` of an ndim-array."""
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


def mean_abs(weights, out_axis):
    """XNOR-Net's alpha: mean |W| over each output's weights, (K,), summed in float64 so that
    weights alpha * (+-1) give alpha back exactly (a packed file loads to such weights)."""
    xp = get_array_module(weights)
    axes = tuple(a for a in range(weights.ndim) if a != out_axis)
    return xp.abs(weights).astype(np.float64).mean(axis=axes).astype(weights.dtype)


def latent_weight_gradient(weights, grad_sign, alpha, out_axis):
    """dL/dW from G = dL/d sign(W) of the unscaled product: the STE passes alpha * G through
    sign (identity, as BinaryNet), plus the gradient of alpha = mean|W| (sign(W)/n sum B G)."""
    if alpha is None:
        return grad_sign
    signs = binarize(weights)
    a = per_output(alpha, weights.ndim, out_axis)
    axes = tuple(i for i in range(weights.ndim) if i != out_axis)
    n = weights.size // weights.shape[out_axis]
    through_alpha = (signs * grad_sign).sum(axis=axes, keepdims=True) / weights.dtype.type(n)
    return a * grad_sign + signs * through_alpha


def write_sums(out, sums, f):
    """out = sums * 2^-f (exact while |sums| < 2^24 in float32: what the float path computes)."""
    out[...] = sums
    if f:
        out *= out.dtype.type(2.0 ** -f)


class BinaryLayerMixin:
    """What the two binary layers share: binary_param, signs, scale, STE, clipping, engine."""
    weight_out_axis = 0

    def setup_binary(self):
        p = self.layer_param.binary_param
        self.binarize_input = bool(p.binarize_input)
        self.scale_mode = p.scale
        self.clip_weights = bool(p.clip_weights)
        self.binary_engine = p.engine
        self._xb = {}

    # -- values fed to the float code -------------------------------------------------
    def binary_input(self, key, blob):
        if not self.binarize_input:
            return blob.data
        x = blob.data
        buf = self._xb[key] = reused(self._xb.get(key), x.shape, x.dtype, get_array_module(x))
        return binarize(x, buf)

    def alpha(self):
        if self.scale_mode != _P.MEAN_ABS:
            return None
        return mean_abs(self.blobs[0].data, self.weight_out_axis)

    def scaled_signs(self, signs):
        """alpha * sign(W) in the weights' layout (the top diff reaches the bottom through it)."""
        alpha = self.alpha()
        return signs if alpha is None else signs * per_output(alpha, signs.ndim, self.weight_out_axis)

    def add_weight_diff(self, dw):
        weight = self.blobs[0]
        grad = dw.reshape(weight.shape)
        weight.diff += latent_weight_gradient(weight.data, grad, self.alpha(), self.weight_out_axis)

    def finish_top(self, y, out_axis):
        """y = alpha * y + b, in place, along the top's output axis."""
        alpha = self.alpha()
        if alpha is not None:
            y *= per_output(alpha, y.ndim, out_axis)
        if self.bias_term:
            y += per_output(self.blobs[1].data, y.ndim, out_axis)

    def ste_bottom_diff(self, bottom, propagate_down):
        """Zero the bottom gradient where |x| > 1 (the hard-tanh straight-through estimator)."""
        if not self.binarize_input:
            return
        for x, down in zip(bottom, propagate_down):
            if down:
                xp = get_array_module(x.data)
                x.diff *= xp.abs(x.data) <= 1

    def after_update(self):
        if self.clip_weights:
            w = self.blobs[0].data
            get_array_module(w).clip(w, -1, 1, out=w)
        super().after_update()

    # -- engine ----------------------------------------------------------------------
    def check_binary_engine(self, packed_possible, why):
        if self.binary_engine == _P.PACKED and not packed_possible:
            raise ValueError(self.error(f"asks for binary_param {{ engine: PACKED }}, which {why}"))

    def runs_packed(self, x):
        if self.binary_engine == _P.FLOAT:
            return False
        numpy_arrays = get_array_module(x) is np
        if self.binary_engine == _P.PACKED:
            if not numpy_arrays:
                raise ValueError(self.error("runs binary_param { engine: PACKED } on NumPy arrays only "
                                            "(CPU mode); use FLOAT or DEFAULT on a GPU"))
            return True
        return self.packed_possible and numpy_arrays and HAVE_NUMBA and self.phase == caffe_pb2.TEST

    def planes_or_fallback(self, result, x):
        """The bit-plane result of a real-valued input, or None: then FLOAT runs (DEFAULT) or
        the input is refused (PACKED)."""
        if result is None and self.binary_engine == _P.PACKED:
            raise ValueError(self.error(
                f"runs binary_param {{ engine: PACKED }} with binarize_input false, which needs "
                f"fixed-point inputs x = q * 2^-f with q in {packed.MAX_PLANES} bits; this batch "
                f"is not (values from {float(x.min()):.9g} to {float(x.max()):.9g}; first {float(x.flat[0]):.9g})"))
        return result

    # -- the packed weights file --------------------------------------------------------
    def packed_param(self, i):
        """(+1 bits, scale or None, scale axis) for blob i in a packed weights file, or None."""
        if i != 0:
            return None
        alpha = self.alpha()
        return (self.blobs[0].data >= 0, None if alpha is None else alpha, self.weight_out_axis)


@register("BinaryConvolution")
class BinaryConvolutionLayer(BinaryLayerMixin, ConvolutionLayer):
    """Convolution with sign(W) (and sign(x)), XNOR-Net's alpha, the STE backward.

    Weights (K, C/group, kh, kw) are the latent real weights; the engine is
    im2col + GEMM (exact on +-1), or the packed XNOR path (2-D only)."""

    def setup(self, bottom, top):
        engine = self.layer_param.convolution_param.engine
        if engine not in (_CONV.DEFAULT, _CONV.CAFFE):
            name = _CONV.Engine.Name(engine) if engine in _CONV.Engine.values() else engine
            raise ValueError(self.error(
                f"needs convolution_param {{ engine: CAFFE }} (im2col + GEMM) or DEFAULT, got "
                f"{name}: the binary product must be an exact integer sum"))
        super().setup(bottom, top)
        self.setup_binary()
        self.engine_request, self.timed = "im2col", False
        self.engine = self._engine("im2col")
        self.packed_possible = not self.nd
        self.check_binary_engine(self.packed_possible, f"runs 1-D and 2-D convolutions only, not "
                                                       f"{self.num_spatial}-D")

    def conv_input(self, i, blob):
        return self.binary_input(i, blob)

    def conv_bias(self):
        return None                      # added after the scale, in finish_top

    def w4(self):
        return binarize(super().w4())

    def backward_w4(self):
        return self.scaled_signs(self.w4())

    def forward(self, bottom, top):
        if self.runs_packed(bottom[0].data):
            done = self.forward_packed(bottom, top)
        else:
            done = False
        if not done:
            super().forward(bottom, top)
        for y in top:
            self.finish_top(y.data, self.channel_axis)

    def forward_packed(self, bottom, top):
        """The exact integer sums on packed bits into the tops; False when FLOAT must run."""
        weights = packed.PackedConvWeights(self.w4() > 0, self.geom)
        for x, y in zip(bottom, top):
            x4 = x.data.reshape(self._in4())
            if self.binarize_input:
                sums, f = packed.conv_packed(packed.sign_bits(x4), weights), 0
            else:
                result = self.planes_or_fallback(packed.conv_planes(x4, weights), x4)
                if result is None:
                    return False
                sums, f = result
            write_sums(y.data.reshape(self._out4()), sums, f)
        return True

    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        self.ste_bottom_diff(bottom, propagate_down)


@register("BinaryInnerProduct")
class BinaryInnerProductLayer(BinaryLayerMixin, InnerProductLayer):
    """InnerProduct with sign(W) (and sign(x)), XNOR-Net's alpha, the STE backward.

    Weights (N, K) ((K, N) with transpose) are the latent real weights."""

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.setup_binary()
        self.weight_out_axis = 1 if self.transpose else 0
        self.packed_possible = True

    def product_input(self, blob):
        return self.binary_input(0, blob)

    def product_weights(self):
        return binarize(self.blobs[0].data)

    def backward_product_weights(self):
        return self.scaled_signs(self.product_weights())

    def product_bias(self):
        return None

    def forward(self, bottom, top):
        done = self.runs_packed(bottom[0].data) and self.forward_packed(bottom, top)
        if not done:
            super().forward(bottom, top)
        self.finish_top(top[0].data.reshape(self.M, self.num_output), 1)

    def forward_packed(self, bottom, top):
        signs = self.blobs[0].data >= 0
        w_rows = packed.pack_rows(signs.T if self.transpose else signs)
        x = bottom[0].data.reshape(self.M, self.K)
        if self.binarize_input:
            sums, f = packed.inner_product_packed(packed.pack_rows(packed.sign_bits(x)), w_rows, self.K), 0
        else:
            result = self.planes_or_fallback(packed.inner_product_planes(x, w_rows), x)
            if result is None:
                return False
            sums, f = result
        write_sums(top[0].data.reshape(self.M, self.num_output), sums, f)
        return True

    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        self.ste_bottom_diff(bottom, propagate_down)
