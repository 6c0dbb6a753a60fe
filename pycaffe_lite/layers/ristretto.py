"""Ristretto's layer types (pmgysel/caffe): Convolution, InnerProduct, Deconvolution and
LRN that compute in reduced precision, set by `quantization_param`:

    layer { name: "conv1" type: "ConvolutionRistretto" bottom: "data" top: "conv1"
            convolution_param { num_output: 20 kernel_size: 5 }
            quantization_param { bw_layer_in: 8 fl_layer_in: 8 bw_params: 8 fl_params: 7
                                 bw_layer_out: 8 fl_layer_out: 4 } }

ConvolutionRistretto, FcRistretto and DeconvolutionRistretto, with Ristretto's semantics:
- TEST: the bottoms are trimmed in place (as Ristretto does: a layer reading the same blob
  later sees the trimmed values), the weights and bias are trimmed with `rounding_scheme`,
  and the tops are trimmed after the product;
- TRAIN: only the weights and bias are trimmed, always with STOCHASTIC rounding;
- the blobs keep the full-precision weights: forward and backward compute with the trimmed
  copy, the gradients accumulate into the full-precision diffs (the straight-through
  estimator), and the solver updates the full-precision values.
The trim follows `precision`: DYNAMIC_FIXED_POINT (<bw_*, fl_*> per inputs, params and
outputs), MINIFLOAT (mant_bits, exp_bits for all three) or INTEGER_POWER_OF_2_WEIGHTS
(weights +/- 2^e for e in [exp_min, exp_max], bias untouched; inputs and outputs in
dynamic fixed point, as Ristretto's GPU path does).

LRNRistretto (MINIFLOAT only, ACROSS_CHANNELS only, both as in Ristretto): every step of
the scale's running sum over channels and of the output is rounded to minifloat with
NEAREST, in both phases; backward is LRN's, on the trimmed scale and output.

The number formats themselves are in pycaffe_lite/kernels/quantize.py.
"""

from ..backend import get_array_module
from ..kernels import quantize
from ..layer import register
from ..proto import caffe_pb2
from .common import InnerProductLayer
from .conv import ConvolutionLayer, DeconvolutionLayer
from .lrn import LRNLayer, lrn_across_backward

Q = caffe_pb2.QuantizationParameter
_TOOL_TYPES = {}     # float layer type -> its Ristretto type, for the quantize tool


def ristretto_type(type_name):
    """The Ristretto layer type that quantizes `type_name` (itself for a Ristretto type),
    or None; and the group the quantize tool gives its weights ("CONV" or "FC")."""
    for float_type, (ristretto, group) in _TOOL_TYPES.items():
        if type_name in (float_type, ristretto):
            return ristretto, group
    return None


def _tool_quantizes(float_type, group):
    """Class decorator: the quantize tool turns `float_type` layers into this type."""
    def decorate(cls):
        _TOOL_TYPES[float_type] = (cls.type, group)
        return cls
    return decorate


class RistrettoTrims:
    """Reads quantization_param once (as Ristretto's constructors do) and trims inputs,
    parameters and outputs."""
    precisions = (Q.DYNAMIC_FIXED_POINT, Q.MINIFLOAT, Q.INTEGER_POWER_OF_2_WEIGHTS)

    def read_quantization(self):
        q = self.layer_param.quantization_param
        if q.precision not in self.precisions:
            names = ", ".join(Q.Precision.Name(p) for p in self.precisions)
            raise ValueError(self.error(f"supports precision {names}, got "
                                        f"{Q.Precision.Name(q.precision)}"))
        if q.rounding_scheme not in (Q.NEAREST, Q.STOCHASTIC):
            raise ValueError(self.error(f"unknown rounding_scheme {q.rounding_scheme}"))
        self.quant = q
        self._trimmed = None

    def _trim_activations(self, array, bit_width, fl):
        q = self.quant
        if q.precision == Q.MINIFLOAT:
            return quantize.trim_minifloat(array, q.mant_bits, q.exp_bits, q.rounding_scheme)
        return quantize.trim_fixed_point(array, bit_width, fl, q.rounding_scheme)

    def trim_inputs(self, bottom):
        for blob in bottom:
            blob.data[...] = self._trim_activations(blob.data, self.quant.bw_layer_in, self.quant.fl_layer_in)

    def trim_outputs(self, top):
        for blob in top:
            blob.data[...] = self._trim_activations(blob.data, self.quant.bw_layer_out, self.quant.fl_layer_out)

    def trim_params(self, rounding):
        """Trimmed copies of the weights and bias (Ristretto's QuantizeWeights)."""
        q = self.quant
        arrays = [blob.data for blob in self.blobs]
        if q.precision == Q.MINIFLOAT:
            return [quantize.trim_minifloat(a, q.mant_bits, q.exp_bits, rounding) for a in arrays]
        if q.precision == Q.DYNAMIC_FIXED_POINT:
            return [quantize.trim_fixed_point(a, q.bw_params, q.fl_params, rounding) for a in arrays]
        return [quantize.trim_power_of_2(arrays[0], q.exp_min, q.exp_max, rounding)] + arrays[1:]


class RistrettoProductLayer(RistrettoTrims):
    """The trims around a float layer's product (mixed in before Convolution, InnerProduct,
    Deconvolution): the float layer's own forward and backward run on the trimmed copies
    through `param_arrays`."""

    def setup(self, bottom, top):
        self.read_quantization()
        super().setup(bottom, top)

    def param_arrays(self):
        if self._trimmed is None:     # backward without a forward: trim as forward would
            self._trimmed = self.trim_params(self._weight_rounding())
        return self._trimmed

    def _weight_rounding(self):
        return self.quant.rounding_scheme if self.phase == caffe_pb2.TEST else Q.STOCHASTIC

    def forward(self, bottom, top):
        test = self.phase == caffe_pb2.TEST
        if test:
            self.trim_inputs(bottom)
        self._trimmed = self.trim_params(self._weight_rounding())
        super().forward(bottom, top)
        if test:
            self.trim_outputs(top)


@_tool_quantizes("Convolution", "CONV")
@register("ConvolutionRistretto")
class ConvolutionRistrettoLayer(RistrettoProductLayer, ConvolutionLayer):
    """Convolution in reduced precision (Ristretto's ConvolutionRistretto)."""


@_tool_quantizes("InnerProduct", "FC")
@register("FcRistretto")
class FcRistrettoLayer(RistrettoProductLayer, InnerProductLayer):
    """InnerProduct in reduced precision (Ristretto's FcRistretto)."""


@register("DeconvolutionRistretto")
class DeconvolutionRistrettoLayer(RistrettoProductLayer, DeconvolutionLayer):
    """Deconvolution in reduced precision (Ristretto's DeconvolutionRistretto)."""


@register("LRNRistretto")
class LRNRistrettoLayer(RistrettoTrims, LRNLayer):
    """ACROSS_CHANNELS LRN with every intermediate in minifloat (Ristretto's LRNRistretto)."""
    precisions = (Q.MINIFLOAT,)

    def setup(self, bottom, top):
        self.read_quantization()
        super().setup(bottom, top)
        if self.region != caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            raise ValueError(self.error("supports norm_region ACROSS_CHANNELS only (as Ristretto)"))

    def _fp(self, array):
        return quantize.trim_minifloat(array, self.quant.mant_bits, self.quant.exp_bits, Q.NEAREST)

    def quantized_scale(self, x):
        """Ristretto's LRNFillScaleQ: the running sum of squares over channels, each square,
        each sum, alpha/size * sum and k + that rounded to minifloat.  Vectorised over the
        pixels; the channel loop keeps the order of the running sum."""
        fp, size, channels = self._fp, self.size, x.shape[1]
        pre_pad = (size - 1) // 2
        post_pad = size - pre_pad - 1
        dtype = x.dtype.type
        squares = [fp(xc * xc) for xc in (fp(x[:, c]) for c in range(channels))]
        xp = get_array_module(x)
        scale = xp.empty_like(x)
        accum = xp.zeros_like(x[:, 0])
        for head in range(channels + post_pad):
            if head < channels:
                accum = fp(accum + squares[head])
            if head - size >= 0:
                accum = fp(accum - squares[head - size])
            if head >= post_pad:
                scale[:, head - post_pad] = fp(dtype(self.k) + fp(accum * dtype(self.alpha / size)))
        return scale

    def forward(self, bottom, top):
        x = bottom[0].data
        scale = self.quantized_scale(x)
        out = self._fp(self._fp(x) * self._fp(scale ** -self.beta))
        self.x, self.scale, self.top_data = x, scale, out
        top[0].data = out

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff = lrn_across_backward(top[0].diff, self.x, self.top_data, self.scale,
                                                 self.scale ** -self.beta, self.size, self.alpha, self.beta)
