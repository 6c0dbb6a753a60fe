"""The number formats of pycaffe_lite.kernels.quantize: Ristretto's trims and the
rounding of training in fixed point."""
import numpy as np
import pytest

from pycaffe_lite import backend
from pycaffe_lite.kernels import quantize
from pycaffe_lite.kernels.quantize import NEAREST, STOCHASTIC
from pycaffe_lite.proto import caffe_pb2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fixed_point_nearest_on_grid_cases(dtype):
    # <8, 4>: step 1/16, range [-8, 127/16]
    x = np.array([0.0, 1 / 16, -3 / 16, 0.26, -0.26, 1 / 32, 3 / 32, -1 / 32, 7.9375, 100.0, -8.0, -9.5],
                 dtype)
    want = np.array([0.0, 1 / 16, -3 / 16, 4 / 16, -4 / 16, 0.0, 2 / 16, 0.0, 7.9375, 7.9375, -8.0, -8.0],
                    dtype)
    got = quantize.trim_fixed_point(x, 8, 4, NEAREST)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)     # ties (1/32, 3/32) go to the even multiple, as rint


def test_fixed_point_every_grid_value_is_kept_and_negative_fl_works():
    fl, bw = 3, 6
    grid = np.arange(-2 ** (bw - 1), 2 ** (bw - 1)) * 2.0 ** -fl
    for rounding in (NEAREST, STOCHASTIC):
        np.testing.assert_array_equal(quantize.trim_fixed_point(grid, bw, fl, rounding), grid)
    # fl < 0: steps of 4, range [-128, 124]
    np.testing.assert_array_equal(quantize.trim_fixed_point(np.array([5.0, 7.0, 1000.0, -1000.0]), 6, -2),
                                  [4.0, 8.0, 124.0, -128.0])


def test_fixed_point_saturates_before_rounding_in_both_modes():
    low, high, step = quantize.fixed_point_range(16, 14)
    assert (low, high, step) == (-2.0, 2.0 - 2.0 ** -14, 2.0 ** -14)
    x = np.array([3.0, 1e9, -2.5, -1e9], np.float32)
    backend.set_random_seed(3)
    for rounding in (NEAREST, STOCHASTIC):
        got = quantize.trim_fixed_point(x, 16, 14, rounding)
        np.testing.assert_array_equal(got, np.array([high, high, low, low], np.float32))


def test_stochastic_rounding_is_unbiased_and_lands_on_the_two_neighbours():
    step = 2.0 ** -8
    x = np.array([0.3, 0.7, -0.1, 0.05, -0.95, 0.5]) * step + np.array([0, 3, -7, 12, 1, -2]) * step
    draws = 4000
    backend.set_random_seed(0)
    samples = np.stack([quantize.trim_fixed_point(x, 16, 8, STOCHASTIC) for _ in range(draws)])
    lower, upper = np.floor(x / step) * step, np.ceil(x / step) * step
    assert np.all((samples == lower) | (samples == upper))
    # each draw is lower + step * Bernoulli(p), p = (x - lower) / step: variance step^2 p (1 - p),
    # so the mean error of `draws` draws has standard deviation step sqrt(p (1 - p) / draws).
    p = (x - lower) / step
    sigma = step * np.sqrt(p * (1 - p) / draws)
    error = samples.mean(axis=0) - x
    assert np.all(np.abs(error) <= 5 * sigma + 1e-12), (error, sigma)
    # nearest is biased on the same values: the test can tell the two apart
    nearest_error = quantize.trim_fixed_point(x, 16, 8, NEAREST) - x
    assert np.all(np.abs(nearest_error[p != 0.5]) > 5 * sigma[p != 0.5])


def test_stochastic_draws_repeat_under_a_seed():
    x = np.linspace(-1, 1, 101)
    backend.set_random_seed(11)
    first = quantize.trim_fixed_point(x, 8, 3, STOCHASTIC)
    backend.set_random_seed(11)
    np.testing.assert_array_equal(quantize.trim_fixed_point(x, 8, 3, STOCHASTIC), first)


def test_minifloat_with_ieee_half_widths_matches_float16_in_its_normal_range():
    # 5 exponent bits and 10 mantissa bits with nearest-even rounding are IEEE half for its
    # normal numbers (Ristretto's format only adds the top exponent, which IEEE keeps for inf).
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20000) * np.exp2(rng.integers(-13, 15, 20000))).astype(np.float32)
    x = x[(np.abs(x) >= 2.0 ** -14) & (np.abs(x) <= 60000)]
    np.testing.assert_array_equal(quantize.trim_minifloat(x, 10, 5, NEAREST), x.astype(np.float16))


def test_minifloat_hand_cases():
    # 2 mantissa bits, 3 exponent bits: bias 3, exponents -3 .. 4, largest 1.75 * 2^4 = 28
    x = np.array([0.3, -5.0, 1000.0, -1000.0, 0.13, 0.0, 1.125, 1.375], np.float32)
    want = np.array([0.3125, -5.0, 28.0, -28.0, 0.125, 0.0, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(quantize.trim_minifloat(x, 2, 3, NEAREST), want)
    # below 2^-3 the exponent is negative: flushed to zero (no denormals)
    np.testing.assert_array_equal(quantize.trim_minifloat(np.array([0.06, -0.01]), 2, 3), [0.0, 0.0])
    # float32 widths keep float32 values
    y = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(quantize.trim_minifloat(y, 23, 8), y)


def test_minifloat_stochastic_is_unbiased_within_a_binade():
    x = np.full(20000, 1.1, np.float32)        # between 1.0 and 1.25 with 2 mantissa bits
    backend.set_random_seed(5)
    got = quantize.trim_minifloat(x, 2, 3, STOCHASTIC)
    assert set(np.unique(got)) == {np.float32(1.0), np.float32(1.25)}
    sigma = 0.25 * np.sqrt(0.4 * 0.6 / x.size)
    assert abs(got.mean() - 1.1) < 5 * sigma


def test_power_of_2_hand_cases():
    x = np.array([0.3, -0.26, 5.0, -7.0, 0.0, 1e-6, 0.18], np.float32)
    # log2 0.3 = -1.74 -> -2; 0.18: -2.47 -> -2; 5 -> 2.32 -> 2 then clipped to -1; 0 -> -inf -> -8
    want = np.array([0.25, -0.25, 0.5, -0.5, 2.0 ** -8, 2.0 ** -8, 0.25], np.float32)
    np.testing.assert_array_equal(quantize.trim_power_of_2(x, -8, -1, NEAREST), want)
    backend.set_random_seed(2)
    got = quantize.trim_power_of_2(np.full(1000, 0.3), -8, -1, STOCHASTIC)
    assert set(np.unique(got)) == {0.25, 0.5}


def test_unknown_rounding_is_an_error():
    with pytest.raises(ValueError, match="unknown rounding scheme 7"):
        quantize.trim_fixed_point(np.zeros(2), 8, 4, 7)


def test_fixed_point_setting_from_its_message():
    param = caffe_pb2.FixedPointParameter()
    fixed = quantize.FixedPoint.from_param(param)
    assert (fixed.word_length, fixed.fraction_length, fixed.rounding) == (16, 14, STOCHASTIC)
    assert fixed.activations and fixed.weights and fixed.gradients
    param.word_length = 0
    assert quantize.FixedPoint.from_param(param) is None
    param.word_length = 40
    with pytest.raises(ValueError, match="word_length 40 is more than 32 bits"):
        quantize.FixedPoint.from_param(param)
    a = np.array([0.3, 5.0])
    quantize.FixedPoint(caffe_pb2.FixedPointParameter(word_length=6, fraction_length=4,
                                                      rounding=NEAREST)).trim(a)
    np.testing.assert_array_equal(a, [0.3125, 1.9375])
