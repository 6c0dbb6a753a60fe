"""Neuron layers beyond the layer harness (tests/layers/test_layer_harness.py, which checks every
neuron case's forward, gradient and in-place use): values at the kinks, numerical edge cases,
parameter rules, Dropout's mask and PReLU's slopes."""
import math

import numpy as np
import pytest

from layer_check import away_from_kinks, build, check_gradient, forward, layer_param
from layer_refs import elementwise, prelu_reference
from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import create_layer
from pycaffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
SHAPE = (2, 3, 2, 3)


def data(shape=SHAPE, low=-2.0, high=2.0, seed=1, kinks=(0.0,), gap=0.05):
    """Uniform values kept at least `gap` away from the points where the layer has a kink."""
    return away_from_kinks([np.random.default_rng(seed).uniform(low, high, shape)], kinks, gap=gap)[0]


def run_in_place(text, x, top_diff, phase=TRAIN, seed=None):
    """Forward and backward with top and bottom the same blob; returns (top data, bottom diff)."""
    layer = create_layer(layer_param(text), phase)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    layer.SetUp([blob], [blob])
    if seed is not None:
        backend.set_random_seed(seed)
    layer.forward([blob], [blob])
    y = blob.data.copy()
    blob.diff[...] = top_diff
    layer.backward([blob], [True], [blob])
    return y, blob.diff.copy()


def run_out_of_place(text, x, top_diff, phase=TRAIN, seed=None):
    layer, bottom, top = build(text, [x], phase=phase)
    if seed is not None:
        backend.set_random_seed(seed)
    layer.forward(bottom, top)
    top[0].diff[...] = top_diff
    layer.backward(top, [True], bottom)
    return top[0].data.copy(), bottom[0].diff.copy()


def test_gradient_values_at_kinks_follow_caffe():
    x = np.array([[-1.0, 0.0, 2.0]])
    g = np.ones_like(x)
    # ReLU: slope at x <= 0; AbsVal: sign(0) = 0; Clip: 1 on the closed interval.
    assert run_out_of_place('type: "ReLU" relu_param { negative_slope: 0.25 }', x, g)[1].tolist() == \
        [[0.25, 0.25, 1.0]]
    assert run_out_of_place('type: "AbsVal"', x, g)[1].tolist() == [[-1.0, 0.0, 1.0]]
    clip = run_out_of_place('type: "Clip" clip_param { min: 0 max: 2 }', x, g)
    assert clip[1].tolist() == [[0.0, 1.0, 1.0]]


def test_bnll_is_stable_for_large_inputs():
    x = np.array([[-800.0, -60.0, 60.0, 800.0]])
    y, d = run_out_of_place('type: "BNLL"', x, np.ones_like(x))
    np.testing.assert_allclose(y, [[0.0, math.exp(-60.0), 60.0, 800.0]], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(d, [[0.0, math.exp(-60) / (1 + math.exp(-60)), 1.0, 1.0]], rtol=1e-12)


def test_power_ignores_input_when_power_or_scale_is_zero():
    x = data()
    for text, value in (('power: 0 scale: 3 shift: 2', 1.0), ('power: 2 scale: 0 shift: 3', 9.0),
                        ('power: 3 scale: 0 shift: -2', -8.0)):
        y, d = run_out_of_place(f'type: "Power" power_param {{ {text} }}', x, np.ones_like(x))
        np.testing.assert_array_equal(y, np.full_like(x, value))
        np.testing.assert_array_equal(d, np.zeros_like(x))


def test_power_gradient_at_zero_is_the_derivative_not_nan():
    # Caffe computes power * y / x here, which is 0/0; the derivative of x^3 at 0 is 0.
    x = np.array([[0.0, 1.0]])
    _, d = run_out_of_place('type: "Power" power_param { power: 3 }', x, np.ones_like(x))
    np.testing.assert_array_equal(d, [[0.0, 3.0]])


@pytest.mark.parametrize("text", ['type: "Exp" exp_param { base: -2 }', 'type: "Log" log_param { base: 0 }',
                                  'type: "Log" log_param { base: 1 }'])
def test_bad_base_is_rejected(text):
    with pytest.raises(ValueError, match="base"):
        forward(text, [data()])


def test_clip_needs_both_bounds():
    with pytest.raises(ValueError, match="clip_param"):
        forward('type: "Clip" clip_param { min: -1 }', [data()])


def test_threshold_forward_and_no_backward():
    x = data(kinks=(0.3,))
    (y,) = forward('type: "Threshold" threshold_param { threshold: 0.3 }', [x])
    np.testing.assert_array_equal(y, elementwise(lambda v: 1.0 if v > np.float32(0.3) else 0.0, x))
    (y0,) = forward('type: "Threshold"', [np.array([[-1.0, 0.0, 1e-3]])])
    assert y0.tolist() == [[0.0, 0.0, 1.0]]
    layer, bottom, top = build('type: "Threshold"', [x])
    layer.forward(bottom, top)
    with pytest.raises(NotImplementedError, match="no backward"):
        layer.backward(top, [True], bottom)


# ---- Dropout -------------------------------------------------------------------------------
def test_dropout_test_phase_is_identity():
    x, g = data(), data(seed=3)
    for run in (run_out_of_place, run_in_place):
        y, d = run('type: "Dropout" dropout_param { dropout_ratio: 0.7 }', x, g, phase=TEST)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(d, g)


def test_dropout_train_scales_kept_units_and_drops_the_rest():
    x = data(shape=(40, 50), kinks=(0.0,))
    g = data(shape=(40, 50), seed=4)
    y, d = run_out_of_place('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, g, seed=5)
    scale = 1 / (1 - float(np.float32(0.3)))   # Caffe: 1. / (1. - threshold_), threshold_ a float
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-12)
    np.testing.assert_allclose(d, np.where(kept, g * scale, 0), rtol=1e-12)
    assert abs(kept.mean() - 0.7) < 0.05                     # 2000 draws: 5 standard deviations
    y2, _ = run_out_of_place('type: "Dropout"', x, g, seed=5)
    assert abs((y2 != 0).mean() - 0.5) < 0.06                 # default ratio 0.5
    np.testing.assert_allclose(y2[y2 != 0], 2 * x[y2 != 0])


def test_dropout_mask_is_repeatable_and_redrawn_each_forward():
    x, g = data(), data(seed=3)
    text = 'type: "Dropout" dropout_param { dropout_ratio: 0.5 }'
    first = run_out_of_place(text, x, g, seed=11)
    again = run_out_of_place(text, x, g, seed=11)
    np.testing.assert_array_equal(first[0], again[0])
    in_place = run_in_place(text, x, g, seed=11)
    np.testing.assert_array_equal(first[0], in_place[0])
    np.testing.assert_array_equal(first[1], in_place[1])
    layer, bottom, top = build(text, [data(shape=(20, 20))])
    layer.forward(bottom, top)
    mask = top[0].data != 0
    layer.forward(bottom, top)
    assert (mask != (top[0].data != 0)).any()


def test_dropout_ratio_zero_keeps_everything_and_one_is_rejected():
    x = data()
    y, _ = run_out_of_place('type: "Dropout" dropout_param { dropout_ratio: 0 }', x, x)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(ValueError, match="dropout_ratio"):
        forward('type: "Dropout" dropout_param { dropout_ratio: 1 }', [x])


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_dropout_gradient_with_a_fixed_mask(ratio):
    x = data()
    mask = (np.random.default_rng(2).random(x.shape) >= ratio) / (1 - float(np.float32(ratio)))

    def fix_mask(layer):
        layer.draw_mask = lambda xp, shape, dtype: mask.astype(dtype)

    check_gradient(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [x], setup_fn=fix_mask)
    check_gradient(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [x], phase=TEST)


# ---- PReLU ---------------------------------------------------------------------------------
def test_prelu_default_filler_and_shapes():
    x = data()
    layer, _, _ = build('type: "PReLU"', [x])
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, [0.25] * 3)
    layer, _, _ = build('type: "PReLU" prelu_param { channel_shared: true }', [x])
    assert layer.blobs[0].shape == ()
    assert float(layer.blobs[0].data) == 0.25
    layer, _, _ = build('type: "PReLU" prelu_param { filler { type: "constant" value: -0.5 } }', [x])
    np.testing.assert_array_equal(layer.blobs[0].data, [-0.5] * 3)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [SHAPE, (4, 3)])
def test_prelu_forward_and_gradient(shared, shape):
    text = f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} ' \
           'filler { type: "uniform" min: -0.8 max: 0.8 } }'
    x = data(shape=shape)
    backend.set_random_seed(3)
    layer, bottom, top = build(text, [x])
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, prelu_reference(x, layer.blobs[0].data), rtol=1e-12)
    backend.set_random_seed(3)
    check_gradient(text, [x])


def test_prelu_in_place_and_param_diff_accumulates():
    text = 'type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.4 } }'
    x, g = data(), data(seed=9)
    backend.set_random_seed(4)
    y_ref, d_ref = run_out_of_place(text, x, g)
    backend.set_random_seed(4)
    y, d = run_in_place(text, x, g)
    np.testing.assert_allclose(y, y_ref)
    np.testing.assert_allclose(d, d_ref)
    layer, bottom, top = build(text, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = g
    layer.backward(top, [True], bottom)
    once = layer.blobs[0].diff.copy()
    expected = np.array([(g * x * (x <= 0))[:, c].sum() for c in range(3)])
    np.testing.assert_allclose(once, expected, rtol=1e-12)
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once, rtol=1e-12)


def test_prelu_rejects_1d_bottoms_and_wrong_slope_counts():
    with pytest.raises(ValueError, match="at least 2 axes"):
        forward('type: "PReLU"', [np.ones(5)])
    layer = create_layer(layer_param('type: "PReLU"'), TRAIN)
    layer.blobs = [Blob((4,), np.float64)]
    bottom, top = Blob(SHAPE, np.float64), Blob((), np.float64)
    with pytest.raises(ValueError, match="needs 3"):
        layer.SetUp([bottom], [top])
