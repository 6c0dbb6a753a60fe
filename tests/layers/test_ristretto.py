"""Ristretto's layer types (pmgysel/caffe): quantization_param parses, a quantized LeNet
prototxt as Ristretto's tool writes it runs, and its outputs equal a reference quantized
by hand; TRAIN vs TEST semantics; straight-through gradients."""
import os

import numpy as np
import pytest
from google.protobuf import text_format
from layer_check import build, check_gradient

from pycaffe_lite import backend
from pycaffe_lite.kernels import quantize
from pycaffe_lite.layers.lrn import lrn_across_backward, lrn_across_forward
from pycaffe_lite.net import TEST, TRAIN, Net
from pycaffe_lite.proto import caffe_pb2

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures")
LENET = os.path.join(FIXTURES, "caffe", "examples", "mnist", "lenet.prototxt")
WEIGHTS = os.path.join(FIXTURES, "weights", "lenet_iter_5000.caffemodel")
IMAGES = os.path.join(FIXTURES, "weights", "mnist_t10k_first1000.npz")
needs_fixtures = pytest.mark.skipif(not os.path.exists(WEIGHTS), reason="../shared/fixtures not present")

# LeNet as Ristretto's `ristretto quantize --trimming_mode dynamic_fixed_point` writes it
# (its deploy form): the layer types changed and quantization_param's fields in number order.
QUANTIZED = {"conv1": (8, 8, 4, 8, 6, 3), "conv2": (8, 8, 4, 6, 4, 5),
             "ip1": (8, 8, 4, 4, 4, 6), "ip2": (8, 8, 4, 4, 3, 4)}   # bw in/out/params, fl in/out/params
RISTRETTO_LENET = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 100 dim: 1 dim: 28 dim: 28 } } }
layer {
  name: "conv1" type: "ConvolutionRistretto" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" } }
  quantization_param { bw_layer_in: 8 bw_layer_out: 8 bw_params: 4 fl_layer_in: 8 fl_layer_out: 6 fl_params: 3 }
}
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer {
  name: "conv2" type: "ConvolutionRistretto" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" } }
  quantization_param { bw_layer_in: 8 bw_layer_out: 8 bw_params: 4 fl_layer_in: 6 fl_layer_out: 4 fl_params: 5 }
}
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer {
  name: "ip1" type: "FcRistretto" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } bias_filler { type: "constant" } }
  quantization_param { bw_layer_in: 8 bw_layer_out: 8 bw_params: 4 fl_layer_in: 4 fl_layer_out: 4 fl_params: 6 }
}
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer {
  name: "ip2" type: "FcRistretto" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } }
  quantization_param { bw_layer_in: 8 bw_layer_out: 8 bw_params: 4 fl_layer_in: 4 fl_layer_out: 3 fl_params: 4 }
}
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def test_quantization_param_parses_with_ristrettos_defaults():
    net = text_format.Parse(RISTRETTO_LENET, caffe_pb2.NetParameter())
    q = net.layer[1].quantization_param
    assert (q.bw_layer_in, q.bw_layer_out, q.bw_params, q.fl_layer_in, q.fl_layer_out, q.fl_params) == \
        (8, 8, 4, 8, 6, 3)
    assert q.precision == caffe_pb2.QuantizationParameter.DYNAMIC_FIXED_POINT
    assert q.rounding_scheme == caffe_pb2.QuantizationParameter.NEAREST
    empty = caffe_pb2.QuantizationParameter()
    assert (empty.bw_layer_in, empty.bw_layer_out, empty.bw_params) == (32, 32, 32)
    assert (empty.fl_layer_in, empty.fl_layer_out, empty.fl_params) == (16, 16, 16)
    assert (empty.mant_bits, empty.exp_bits, empty.exp_min, empty.exp_max) == (23, 8, -8, -1)
    other = text_format.Parse("precision: MINIFLOAT rounding_scheme: STOCHASTIC mant_bits: 10 exp_bits: 5 "
                              "exp_min: -6 exp_max: 0", caffe_pb2.QuantizationParameter())
    assert (other.precision, other.rounding_scheme) == (1, 1)
    # the message survives the binary wire format (weights files carry the layer parameters)
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again.layer[5].quantization_param.fl_params == 6


def _hand_quantized_reference(x):
    """Caffe's float LeNet run layer by layer, trimming by hand what Ristretto trims in TEST."""
    ref = Net(LENET, WEIGHTS, TEST)
    ref.blobs["data"].reshape(x.shape)
    ref.blobs["data"].data[...] = x
    for name in ref.layer_names:
        if name in QUANTIZED:
            bw_in, bw_out, bw_p, fl_in, fl_out, fl_p = QUANTIZED[name]
            bottom = ref.blobs[ref.bottom_names[name][0]]
            bottom.data[...] = quantize.trim_fixed_point(bottom.data, bw_in, fl_in)
            for blob in ref.params[name]:
                blob.data[...] = quantize.trim_fixed_point(blob.data, bw_p, fl_p)
        ref.forward(start=name, end=name)
        if name in QUANTIZED:
            top = ref.blobs[ref.top_names[name][0]]
            top.data[...] = quantize.trim_fixed_point(top.data, bw_out, fl_out)
    return ref.blobs["prob"].data.copy()


@needs_fixtures
def test_ristretto_lenet_runs_and_equals_the_hand_quantized_reference(tmp_path):
    path = tmp_path / "lenet_quantized.prototxt"
    path.write_text(RISTRETTO_LENET)
    data = np.load(IMAGES)
    x = data["images"][:100].astype(np.float32) * np.float32(0.00390625)
    net = Net(str(path), WEIGHTS, TEST)
    assert [type(layer).__name__ for layer in net.layers][1] == "ConvolutionRistrettoLayer"
    full = {name: [b.data.copy() for b in net.params[name]] for name in QUANTIZED}
    prob = net.forward(data=x)["prob"].copy()
    np.testing.assert_array_equal(prob, _hand_quantized_reference(x))
    # the weights are kept in full precision; the input blob was trimmed in place (Ristretto's way)
    for name, arrays in full.items():
        for blob, array in zip(net.params[name], arrays):
            np.testing.assert_array_equal(blob.data, array)
    np.testing.assert_array_equal(net.blobs["data"].data, quantize.trim_fixed_point(x, 8, 8))
    # 4-bit weights and 8-bit activations still classify the digits
    accuracy = (prob.argmax(1) == data["labels"][:100]).mean()
    float_prob = data["lenet_iter_5000_prob"][:100]
    assert accuracy >= (float_prob.argmax(1) == data["labels"][:100]).mean() - 0.03
    assert not np.allclose(prob, float_prob, atol=1e-3)     # it did quantize


CONV = """type: "ConvolutionRistretto"
convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 }
                    bias_filler { type: "gaussian" std: 0.5 } }
quantization_param { bw_layer_in: 6 fl_layer_in: 3 bw_params: 5 fl_params: 3 bw_layer_out: 6 fl_layer_out: 2 %s }"""
FC = """type: "FcRistretto"
inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } }
quantization_param { bw_layer_in: 6 fl_layer_in: 3 bw_params: 5 fl_params: 3 bw_layer_out: 6 fl_layer_out: 2 %s }"""
DECONV = """type: "DeconvolutionRistretto"
convolution_param { num_output: 2 kernel_size: 2 stride: 2 weight_filler { type: "gaussian" std: 0.5 }
                    bias_filler { type: "gaussian" std: 0.5 } }
quantization_param { bw_layer_in: 6 fl_layer_in: 3 bw_params: 5 fl_params: 3 bw_layer_out: 6 fl_layer_out: 2 %s }"""


FLOAT_TYPE = {"ConvolutionRistretto": "Convolution", "FcRistretto": "InnerProduct",
              "DeconvolutionRistretto": "Deconvolution"}


def _float_twin(layer):
    """The float layer type's text with the Ristretto layer's settings."""
    text = text_format.MessageToString(layer.layer_param)
    return text.replace(f'type: "{layer.type}"', f'type: "{FLOAT_TYPE[layer.type]}"')


@pytest.mark.parametrize("text", [CONV, FC, DECONV])
def test_test_phase_trims_inputs_params_outputs(text):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 4, 4))
    layer, bottom, top = build(text % "", [x], phase=TEST)
    layer.Forward(bottom, top)
    twin, twin_bottom, twin_top = build(_float_twin(layer), [quantize.trim_fixed_point(x, 6, 3)], phase=TEST)
    for mine, theirs in zip(twin.blobs, layer.blobs):
        mine.data[...] = quantize.trim_fixed_point(theirs.data, 5, 3)
    twin.Forward(twin_bottom, twin_top)
    np.testing.assert_array_equal(top[0].data, quantize.trim_fixed_point(twin_top[0].data, 6, 2))
    np.testing.assert_array_equal(bottom[0].data, quantize.trim_fixed_point(x, 6, 3))


@pytest.mark.parametrize("text", [CONV, FC, DECONV])
def test_train_phase_trims_only_the_weights_stochastically(text):
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    layer, bottom, top = build(text % "rounding_scheme: NEAREST", [x], phase=TRAIN)
    backend.set_random_seed(4)
    layer.Forward(bottom, top)
    np.testing.assert_array_equal(bottom[0].data, x)          # inputs untouched in TRAIN
    used = layer.param_arrays()
    for trimmed, blob in zip(used, layer.blobs):
        step = 2.0 ** -3
        lower = np.clip(np.floor(blob.data / step) * step, -2, 1.875)
        upper = np.clip(np.ceil(blob.data / step) * step, -2, 1.875)
        assert np.all((trimmed == lower) | (trimmed == upper))
    first = top[0].data.copy()
    layer.Forward(bottom, top)                                 # new draws, another rounding
    assert not np.array_equal(first, top[0].data)
    twin, twin_bottom, twin_top = build(_float_twin(layer), [x], phase=TRAIN)
    for mine, array in zip(twin.blobs, layer.param_arrays()):
        mine.data[...] = array
    twin.Forward(twin_bottom, twin_top)
    np.testing.assert_array_equal(top[0].data, twin_top[0].data)   # outputs not trimmed in TRAIN


def _copy_params(target, source):
    for mine, theirs in zip(target.blobs, source.blobs):
        mine.data[...] = theirs.data


def _on_grid_weights(layer):
    for blob in layer.blobs:                # weights on the grid: every draw rounds them exactly
        blob.data[...] = quantize.trim_fixed_point(blob.data, 5, 3)
    layer._trimmed = None


@pytest.mark.parametrize("text", [CONV, FC, DECONV])
def test_gradients_are_straight_through(text):
    """d/dx is the true gradient of the forward (numerical check, TRAIN, weights on the grid);
    the parameter gradients are the float layer's at the trimmed weights, accumulated into
    the full-precision diffs (Ristretto's straight-through estimator)."""
    x = np.random.default_rng(2).standard_normal((2, 2, 4, 4))
    layer, bottom, top = build(text % "", [x], phase=TRAIN)
    _on_grid_weights(layer)
    dy = np.random.default_rng(3).standard_normal(top[0].shape)
    layer.Forward(bottom, top)
    top[0].diff[...] = dy
    layer.Backward(top, [True], bottom)
    dx = bottom[0].diff.copy()
    eps = 1e-6
    numeric = np.zeros_like(x)
    for k in range(x.size):
        for sign in (1, -1):
            bottom[0].data[...] = x
            bottom[0].data.reshape(-1)[k] += sign * eps
            layer.Forward(bottom, top)
            numeric.reshape(-1)[k] += sign * float((top[0].data * dy).sum()) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)
    twin_text = _float_twin(layer)
    twin, twin_bottom, twin_top = build(twin_text, [x], phase=TRAIN)
    _copy_params(twin, layer)
    check_gradient(twin_text, [x], setup_fn=lambda t: _copy_params(t, layer))   # the float layer's are right
    bottom[0].data[...] = x
    layer.Forward(bottom, top)
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.Backward(top, [True], bottom)
    twin.Forward(twin_bottom, twin_top)
    twin_top[0].diff[...] = dy
    twin.Backward(twin_top, [True], twin_bottom)
    for mine, theirs in zip(layer.blobs, twin.blobs):
        np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-12)


def test_power_of_2_weights_keep_the_bias_and_trim_activations_in_fixed_point():
    text = CONV.replace("bw_params: 5 fl_params: 3", "") % "precision: INTEGER_POWER_OF_2_WEIGHTS"
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 4))
    layer, bottom, top = build(text, [x], phase=TEST)
    layer.Forward(bottom, top)
    w, b = layer.param_arrays()
    np.testing.assert_array_equal(w, quantize.trim_power_of_2(layer.blobs[0].data, -8, -1))
    np.testing.assert_array_equal(b, layer.blobs[1].data)
    np.testing.assert_array_equal(top[0].data, quantize.trim_fixed_point(top[0].data, 6, 2))


def test_minifloat_layer_trims_everything_to_minifloat():
    text = CONV % "precision: MINIFLOAT mant_bits: 3 exp_bits: 4"
    x = np.random.default_rng(6).standard_normal((1, 2, 4, 4))
    layer, bottom, top = build(text, [x], phase=TEST)
    layer.Forward(bottom, top)
    for array in [bottom[0].data, top[0].data] + layer.param_arrays():
        np.testing.assert_array_equal(array, quantize.trim_minifloat(array, 3, 4))


LRN = """type: "LRNRistretto" lrn_param { local_size: %d alpha: 0.5 beta: 0.75 k: 2 }
quantization_param { precision: MINIFLOAT mant_bits: %d exp_bits: %d }"""


def _lrn_scale_by_loops(x, size, alpha, k, mant, exp):
    """Ristretto's LRNFillScaleQ written pixel by pixel, channel by channel."""
    def fp(v):
        return float(quantize.trim_minifloat(np.array([v], np.float64), mant, exp)[0])
    N, C, H, W = x.shape
    pre_pad = (size - 1) // 2
    post_pad = size - pre_pad - 1
    scale = np.zeros_like(x)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                accum, head = 0.0, 0
                while head < post_pad and head < C:
                    accum = fp(accum + fp(fp(x[n, head, h, w]) ** 2))
                    head += 1
                while head < C + post_pad:
                    if head < C:
                        accum = fp(accum + fp(fp(x[n, head, h, w]) ** 2))
                    if head - size >= 0:
                        accum = fp(accum - fp(fp(x[n, head - size, h, w]) ** 2))
                    scale[n, head - post_pad, h, w] = fp(k + fp(accum * (alpha / size)))
                    head += 1
    return scale


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_ristretto_rounds_every_step_of_the_running_sum(size):
    x = np.random.default_rng(7).standard_normal((2, 6, 2, 3)) * 2
    layer, bottom, top = build(LRN % (size, 4, 5), [x], phase=TEST)
    layer.Forward(bottom, top)
    scale = _lrn_scale_by_loops(x, size, 0.5, 2.0, 4, 5)
    np.testing.assert_array_equal(layer.scale, scale)
    def fp(v):
        return quantize.trim_minifloat(v, 4, 5)
    np.testing.assert_array_equal(top[0].data, fp(fp(x) * fp(scale ** -0.75)))
    # float32 widths: the float LRN, to rounding
    layer, bottom, top = build(LRN % (size, 23, 8), [x.astype(np.float32)], phase=TEST, dtype=np.float32)
    layer.Forward(bottom, top)
    np.testing.assert_allclose(top[0].data, lrn_across_forward(x, size, 0.5, 0.75, 2.0)[0], rtol=1e-5)


def test_lrn_ristretto_backward_is_lrns_on_the_minifloat_values_and_checks_its_settings():
    x = np.random.default_rng(8).standard_normal((1, 4, 2, 2))
    layer, bottom, top = build(LRN % (3, 3, 4), [x], phase=TRAIN)
    layer.Forward(bottom, top)
    top[0].diff[...] = np.linspace(-1, 1, x.size).reshape(x.shape)
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, lrn_across_backward(
        top[0].diff, x, top[0].data, layer.scale, layer.scale ** -0.75, 3, 0.5, 0.75))
    # with float32 widths the backward is the numerical gradient of the forward (the minifloat
    # is cut from float32 values: a step of 1e-2 keeps their rounding out of the differences)
    check_gradient(LRN % (3, 23, 8), [x], eps=1e-2, rtol=2e-3, atol=1e-4)
    with pytest.raises(ValueError, match="supports precision MINIFLOAT, got DYNAMIC_FIXED_POINT"):
        build('type: "LRNRistretto" lrn_param { local_size: 3 }', [x])
    with pytest.raises(ValueError, match="ACROSS_CHANNELS only"):
        build('type: "LRNRistretto" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } '
              'quantization_param { precision: MINIFLOAT }', [x])
