"""BatchNorm: Caffe's three stored blobs, the running-sum update, global statistics,
the forced lr_mult 0, both backward modes, and the BVLC golden (BatchNorm + Scale)."""
import numpy as np
import pytest

from goldens import golden
from layer_check import build, check_gradient, layer_param
from layer_refs import batch_reference
from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import create_layer
from pycaffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
BN = 'type: "BatchNorm"'


def rand(*shape, seed=0, low=-1.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def set_stats(layer, mean_sum, var_sum, s):
    layer.blobs[0].data[...] = mean_sum
    layer.blobs[1].data[...] = var_sum
    layer.blobs[2].data[...] = s


def test_blobs_and_defaults():
    layer, _, top = build(BN, [rand(2, 3, 2, 2)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert not any(b.data.any() for b in layer.blobs)
    assert layer.use_global_stats is False and top[0].shape == (2, 3, 2, 2)
    assert layer.moving_average_fraction == pytest.approx(0.999) and layer.eps == pytest.approx(1e-5)
    assert build(BN, [rand(2, 3)], phase=TEST)[0].use_global_stats is True
    assert build(BN + ' batch_norm_param { use_global_stats: true }', [rand(2, 3)])[0].use_global_stats
    assert not build(BN + ' batch_norm_param { use_global_stats: false }', [rand(2, 3)],
                     phase=TEST)[0].use_global_stats
    assert [b.shape for b in build(BN, [rand(5)])[0].blobs] == [(1,), (1,), (1,)]


def test_statistics_get_lr_mult_zero_as_in_caffe():
    layer, _, _ = build(BN, [rand(2, 3)])
    assert [(p.lr_mult, p.decay_mult) for p in layer.layer_param.param] == [(0, 1), (0, 1), (0, 1)]
    layer, _, _ = build(BN + ' param { lr_mult: 0 decay_mult: 0 }', [rand(2, 3)])
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    assert layer.layer_param.param[0].decay_mult == 0
    with pytest.raises(ValueError, match="cannot configure batch normalization statistics"):
        build(BN + ' param { lr_mult: 0 } param { lr_mult: 1 }', [rand(2, 3)])


@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (6, 4), (5,), (2, 2, 3)])
def test_training_forward_and_running_sums(shape):
    x = rand(*shape)
    text = BN + ' batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }'
    layer, bottom, top = build(text, [x])
    channels = layer.channels
    start_mean, start_var = rand(channels, seed=1), rand(channels, seed=2, low=0.5)
    set_stats(layer, start_mean, start_var, 2.5)
    layer.forward(bottom, top)
    f, eps = float(np.float32(0.9)), float(np.float32(0.001))
    y, mean, var = batch_reference(x, eps)
    np.testing.assert_allclose(top[0].data, y, rtol=1e-10)
    m = x.size // channels
    np.testing.assert_allclose(layer.blobs[2].data, [f * 2.5 + 1], rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].data, f * start_mean + mean, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, f * start_var + m / (m - 1) * var, rtol=1e-12)


def test_first_training_step_from_zeros_then_test_phase_uses_the_averages():
    x = rand(4, 3, 2)
    layer, bottom, top = build(BN, [x])
    layer.forward(bottom, top)
    _, mean, var = batch_reference(x)
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, mean, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var * 8 / 7, rtol=1e-12)
    test_layer, tb, tt = build(BN, [rand(2, 3, 2, seed=5)], phase=TEST)
    for mine, theirs in zip(test_layer.blobs, layer.blobs):
        mine.data[...] = theirs.data * 3        # scaled sums: divided by s = 3 again
    test_layer.blobs[2].data[...] = 3
    test_layer.forward(tb, tt)
    xs = tb[0].data
    expected = (xs - mean[None, :, None]) / np.sqrt(var[None, :, None] * 8 / 7 + 1e-5)
    np.testing.assert_allclose(tt[0].data, expected, rtol=1e-6)
    before = [b.data.copy() for b in test_layer.blobs]
    test_layer.forward(tb, tt)
    for b, old in zip(test_layer.blobs, before):         # global stats: nothing is updated
        np.testing.assert_array_equal(b.data, old)


def test_global_stats_with_zero_factor_use_zero_statistics():
    x = rand(2, 3, 2)
    layer, bottom, top = build(BN, [x], phase=TEST)
    set_stats(layer, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], 0.0)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(1e-5), rtol=1e-6)


def test_running_sums_accumulate_over_steps():
    x1, x2 = rand(3, 2, 2), rand(3, 2, 2, seed=3)
    layer, bottom, top = build(BN, [x1])
    layer.forward(bottom, top)
    bottom[0].data[...] = x2
    layer.forward(bottom, top)
    f = float(np.float32(0.999))
    _, m1, v1 = batch_reference(x1)
    _, m2, v2 = batch_reference(x2)
    np.testing.assert_allclose(layer.blobs[2].data, [f + 1])
    np.testing.assert_allclose(layer.blobs[0].data, f * m1 + m2)
    np.testing.assert_allclose(layer.blobs[1].data, (f * v1 + v2) * 6 / 5)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 2), (6,)])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_gradient_with_batch_statistics(shape, eps):
    check_gradient(BN + f' batch_norm_param {{ eps: {eps} }}', [rand(*shape)], rtol=1e-4)


def numeric_bottom_gradient(text, x, g, phase, stats, h=1e-6):
    """d sum(top * g) / d bottom by central differences, with fixed stored statistics."""
    layer, bottom, top = build(text, [x], phase=phase)

    def objective(values):
        set_stats(layer, *stats)
        bottom[0].data[...] = values
        layer.forward(bottom, top)
        return float((top[0].data * g).sum())

    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        grad[i] = (objective(plus) - objective(minus)) / (2 * h)
    return grad


@pytest.mark.parametrize("text, phase", [(BN, TEST), (BN + ' batch_norm_param { use_global_stats: true }', TRAIN)])
def test_gradient_with_global_statistics(text, phase):
    x, g = rand(3, 2, 2), rand(3, 2, 2, seed=4)
    stats = ([0.5, -1.0], [1.5, 0.4], 2.0)
    layer, bottom, top = build(text, [x], phase=phase)
    set_stats(layer, *stats)
    layer.forward(bottom, top)
    top[0].diff[...] = g
    layer.backward(top, [True], bottom)
    expected = g / np.sqrt(np.array([0.75, 0.2])[None, :, None] + 1e-5)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-10)
    np.testing.assert_allclose(bottom[0].diff, numeric_bottom_gradient(text, x, g, phase, stats), rtol=1e-6)
    assert not any(b.diff.any() for b in layer.blobs)        # statistics get no gradient


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_in_place(phase):
    x, g = rand(4, 3, 2), rand(4, 3, 2, seed=6)
    ref, rb, rt = build(BN, [x], phase=phase)
    ref.forward(rb, rt)
    rt[0].diff[...] = g
    ref.backward(rt, [True], rb)
    layer = create_layer(layer_param(BN), phase)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    layer.SetUp([blob], [blob])
    layer.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, rt[0].data)
    blob.data[...] = 123.0                   # a later in-place layer overwrites the output
    blob.diff[...] = g
    layer.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, rb[0].diff)


def test_channel_count_is_checked_on_reshape():
    layer, bottom, top = build(BN, [rand(2, 3)])
    bottom[0].reshape(2, 4)
    with pytest.raises(ValueError, match="3 channels"):
        layer.reshape(bottom, top)


def test_batchnorm_scale_golden():
    d = golden("batchnorm_scale_train")
    net = d.net_param()
    params = {lp.name: lp for lp in net.layer}

    def make(name, bottom):
        layer = create_layer(params[name], TRAIN)
        top = [Blob((), np.float32)]
        layer.SetUp(bottom, top)
        for i, p in enumerate(layer.blobs):
            p.data[...] = d[f"param/{name}/{i}"]
        return layer, top

    def blob(array):
        b = Blob(array.shape, np.float32)
        b.data[...] = array
        return b

    data, vec = blob(d["in/data"]), blob(d["in/vec"])
    bn, bn_top = make("bn", [data])
    scale, scale_top = make("scale", bn_top)
    bn2, bn2_top = make("bn2", [vec])
    for layer, bottom, top in ((bn, [data], bn_top), (scale, bn_top, scale_top), (bn2, [vec], bn2_top)):
        layer.forward(bottom, top)
    for name, top in (("bn", bn_top), ("scale", scale_top), ("bn2", bn2_top)):
        np.testing.assert_allclose(top[0].data, d[f"fwd/{name}"], rtol=1e-4, atol=1e-4)
    for name, layer in (("bn", bn), ("bn2", bn2)):
        for i in range(3):
            np.testing.assert_allclose(layer.blobs[i].data, d[f"after_fwd/{name}/{i}"], rtol=1e-5, atol=1e-6)
    scale_top[0].diff[...] = d["topdiff/scale"]
    bn2_top[0].diff[...] = d["topdiff/bn2"]
    scale.backward(scale_top, [True], bn_top)
    bn.backward(bn_top, [True], [data])
    bn2.backward(bn2_top, [True], [vec])
    np.testing.assert_allclose(data.diff, d["bwd/data"], rtol=1e-4, atol=1e-4 * np.abs(d["bwd/data"]).max())
    np.testing.assert_allclose(vec.diff, d["bwd/vec"], rtol=1e-4, atol=1e-4 * np.abs(d["bwd/vec"]).max())
    for i in range(2):
        ref = d[f"pgrad/scale/{i}"]
        np.testing.assert_allclose(scale.blobs[i].diff, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert not any(d[f"pgrad/bn/{i}"].any() for i in range(3))
    assert not any(b.diff.any() for b in bn.blobs)
