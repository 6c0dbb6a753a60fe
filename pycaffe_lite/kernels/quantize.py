"""Reduced-precision number formats, as whole-array functions (NumPy or CuPy).

Ristretto's trims (pmgysel/caffe, base_ristretto_layer), each returning a new array
of the input's dtype:

    trim_fixed_point(x, bit_width, fl, rounding)   dynamic fixed point <bw, fl>:
        saturate to [-2^(bw-1), 2^(bw-1) - 1] * 2^-fl, then round x / 2^-fl
    trim_minifloat(x, mant_bits, exp_bits, rounding)
        sign, exp_bits of exponent (bias 2^(exp_bits-1) - 1, no infinities, no
        denormals: those flush to 0), mant_bits of mantissa; saturates at the
        largest exponent with an all-ones mantissa
    trim_power_of_2(x, exp_min, exp_max, rounding)
        sign(x) * 2^round(log2|x|), the exponent clipped to [exp_min, exp_max]

Rounding is NEAREST (ties to even, as Ristretto's GPU kernels' rint) or
STOCHASTIC: floor(v + u), u uniform in [0, 1), so that E[round(v)] = v (Gupta et
al. 2015).  The draws come from pycaffe_lite.backend.rng() for NumPy arrays
(set_random_seed makes them repeatable) and from CuPy's generator on the GPU.

Where Ristretto's CPU and GPU code differ, these follow the GPU kernels, which is
what Ristretto's users ran: NEAREST is rint, not round (they differ only at exact
ties); minifloat flushes each zero or too-small element (the CPU loop's `return`
stops at the first one).

FixedPoint is the <word_length, fraction_length> setting of training in fixed
point (FixedPointParameter), shared by the layer wrappers and the solver.
"""
import numpy as np

from .. import backend
from ..backend import get_array_module
from ..proto import caffe_pb2

NEAREST = caffe_pb2.QuantizationParameter.NEAREST
STOCHASTIC = caffe_pb2.QuantizationParameter.STOCHASTIC


def uniform(xp, shape):
    """u ~ U[0, 1) in float64, from the generator of the arrays' device."""
    if xp is np:
        return backend.rng().random(shape)
    return xp.random.random(shape, dtype=np.float64)


def round_values(v, rounding):
    """v rounded to integers: to nearest (ties to even), or stochastically floor(v + u)."""
    xp = get_array_module(v)
    if rounding == NEAREST:
        return xp.rint(v)
    if rounding == STOCHASTIC:
        return xp.floor(v.astype(np.float64) + uniform(xp, v.shape))
    raise ValueError(f"unknown rounding scheme {rounding} (NEAREST = 0, STOCHASTIC = 1)")


def fixed_point_range(bit_width, fl):
    """(lowest, highest, step) of the signed fixed-point format <bit_width, fl>."""
    step = 2.0 ** -int(fl)
    return -(2.0 ** (int(bit_width) - 1)) * step, (2.0 ** (int(bit_width) - 1) - 1) * step, step


def trim_fixed_point(x, bit_width, fl, rounding=NEAREST):
    """Ristretto's Trim2FixedPoint: saturate, then round to a multiple of 2^-fl."""
    xp = get_array_module(x)
    low, high, step = fixed_point_range(bit_width, fl)
    dtype = x.dtype
    saturated = xp.clip(x, dtype.type(low), dtype.type(high))
    scaled = saturated * dtype.type(1.0 / step)          # exact: a power of two
    return (round_values(scaled, rounding) * step).astype(dtype, copy=False)


def trim_minifloat(x, mant_bits, exp_bits, rounding=NEAREST):
    """Ristretto's Trim2MiniFloat, from the float32 fields of x."""
    xp = get_array_module(x)
    mant_bits, exp_bits = int(mant_bits), int(exp_bits)
    bits = xp.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    negative = (bits >> 31).astype(bool)
    stored_exp = ((bits >> 23) & 0xFF).astype(np.int64)
    mantissa = (bits & 0x7FFFFF).astype(np.float64)
    bias = 2 ** (exp_bits - 1) - 1
    exponent = stored_exp - 127 + bias
    max_exp = 2 ** exp_bits - 1
    saturate = exponent > max_exp
    mantissa = round_values(mantissa / 2.0 ** (23 - mant_bits), rounding)
    mantissa = xp.where(saturate, 2.0 ** mant_bits - 1, mantissa)
    exponent = xp.minimum(exponent, max_exp)
    value = (mantissa + 2.0 ** mant_bits) / 2.0 ** mant_bits * xp.exp2((exponent - bias).astype(np.float64))
    value = xp.where(negative, -value, value)
    flushed = (stored_exp == 0) | (exponent < 0)          # zero or denormal in, or below the range
    return xp.where(flushed, 0.0, value).astype(x.dtype, copy=False)


def trim_power_of_2(x, exp_min, exp_max, rounding=NEAREST):
    """Ristretto's Trim2IntegerPowerOf2: +/- 2^e.  As in Ristretto, 0 has exponent -inf,
    clipped to exp_min, and comes out as +2^exp_min."""
    xp = get_array_module(x)
    with np.errstate(divide="ignore"):
        exponent = xp.log2(xp.abs(x.astype(np.float32)))
    exponent = xp.clip(round_values(exponent, rounding), int(exp_min), int(exp_max))
    sign = xp.where(x >= 0, 1.0, -1.0)
    return (sign * xp.exp2(exponent)).astype(x.dtype, copy=False)


class FixedPoint:
    """A FixedPointParameter, read once: trim(array) rounds it into <word_length,
    fraction_length> in place; `activations`, `weights`, `gradients` say where it applies."""

    def __init__(self, param):
        self.word_length = int(param.word_length)
        self.fraction_length = int(param.fraction_length)
        self.rounding = int(param.rounding)
        self.activations, self.weights, self.gradients = param.activations, param.weights, param.gradients
        if self.word_length > 32:
            raise ValueError(f"fixed_point_param: word_length {self.word_length} is more than 32 bits")

    @classmethod
    def from_param(cls, param):
        """None for word_length 0 (floating point), else the setting."""
        return cls(param) if param.word_length else None

    def trim(self, array, rounding=None):
        """Round `array` into the format in place, with the setting's rounding or `rounding`."""
        rounding = self.rounding if rounding is None else rounding
        array[...] = trim_fixed_point(array, self.word_length, self.fraction_length, rounding)

    def __repr__(self):
        name = caffe_pb2.QuantizationParameter.Rounding.Name(self.rounding)
        return f"<{self.word_length}, {self.fraction_length}> {name}"
