"""BinaryConvolution and BinaryInnerProduct: forward against the float layers on +-1 values,
the straight-through estimator against numerical gradients where they are defined, the
latent-weight clip, set-up errors, and the packed XNOR path equal to the float path bit for bit."""
import numpy as np
import pytest
from google.protobuf import text_format
from layer_check import build, check_gradient, numerical_gradient

from pycaffe_lite.kernels.xnor import HAVE_NUMBA
from pycaffe_lite.layers.binary import binarize, mean_abs
from pycaffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def ip_text(num_output=3, binarize_input=True, scale="NONE", extra="", engine="DEFAULT"):
    return (f'type: "BinaryInnerProduct" inner_product_param {{ num_output: {num_output} {extra} '
            f'weight_filler {{ type: "uniform" min: -1 max: 1 }} bias_filler {{ type: "uniform" }} }} '
            f'binary_param {{ binarize_input: {str(binarize_input).lower()} scale: {scale} engine: {engine} }}')


def conv_text(num_output=4, kernel=3, binarize_input=True, scale="NONE", extra="", engine="DEFAULT"):
    return (f'type: "BinaryConvolution" convolution_param {{ num_output: {num_output} kernel_size: {kernel} '
            f'{extra} weight_filler {{ type: "uniform" min: -1 max: 1 }} bias_filler {{ type: "uniform" }} }} '
            f'binary_param {{ binarize_input: {str(binarize_input).lower()} scale: {scale} engine: {engine} }}')


def away_from_kinks(rng, shape, low=0.05):
    """Values in (-1.6, 1.6) at least `low` from 0 and from +-1 (where sign and the STE mask jump)."""
    x = rng.uniform(-1.6, 1.6, shape)
    for kink in (-1.0, 0.0, 1.0):
        near = np.abs(x - kink) < low
        x[near] = kink + np.where(x[near] >= kink, low, -low)
    return x


def run_forward(layer, bottom, top):
    layer.Forward(bottom, top)
    return top[0].data.copy()


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------
def test_sign_of_zero_is_plus_one():
    x = np.array([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0], np.float32)
    np.testing.assert_array_equal(binarize(x), [-1, 1, 1, 1, -1, 1])


@pytest.mark.parametrize("scale", ["NONE", "MEAN_ABS"])
@pytest.mark.parametrize("binarize_input", [True, False])
def test_inner_product_forward(scale, binarize_input):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 3))
    x[0, 0, 0] = 0.0                                   # sign(0) = +1 on the input side
    layer, bottom, top = build(ip_text(5, binarize_input, scale), [x])
    w = layer.blobs[0].data
    w[0, 0] = 0.0                                      # and on the weight side
    b = layer.blobs[1].data
    xs = np.where(x >= 0, 1.0, -1.0).reshape(4, 6) if binarize_input else x.reshape(4, 6)
    ws = np.where(w >= 0, 1.0, -1.0)
    alpha = np.abs(w).mean(axis=1) if scale == "MEAN_ABS" else np.ones(5)
    np.testing.assert_allclose(run_forward(layer, bottom, top), (xs @ ws.T) * alpha + b, rtol=1e-12)


@pytest.mark.parametrize("scale", ["NONE", "MEAN_ABS"])
def test_convolution_forward_is_convolution_of_signs(scale):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 7, 6))
    extra = "pad: 1 stride: 2 group: 2"
    layer, bottom, top = build(conv_text(6, 3, True, scale, extra), [x])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    ref, rb, rt = build(f'type: "Convolution" convolution_param {{ num_output: 6 kernel_size: 3 {extra} }}',
                        [np.where(x >= 0, 1.0, -1.0)])
    ref.blobs[0].data[...] = np.where(w >= 0, 1.0, -1.0)
    ref.blobs[1].data[...] = 0
    alpha = np.abs(w).reshape(6, -1).mean(axis=1) if scale == "MEAN_ABS" else np.ones(6)
    expected = run_forward(ref, rb, rt) * alpha[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(run_forward(layer, bottom, top), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# backward: the straight-through estimator
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [ip_text(3, False), ip_text(3, False, "MEAN_ABS"),
                                  ip_text(3, False, extra="transpose: true"),
                                  conv_text(3, 3, False, extra="pad: 1"),
                                  conv_text(2, 2, False, "MEAN_ABS", "stride: 2")])
def test_gradient_where_defined(text):
    """With a real-valued input the product is linear in x: bottom and bias gradients are the
    numerical ones (the weights' STE gradient is not, see below)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4))
    check_gradient(text, [x], check_params=[1])


def _analytic(layer, bottom, top, seed=4):
    layer.Forward(bottom, top)
    dy = np.random.default_rng(seed).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    for p in layer.blobs:
        p.diff[...] = 0
    layer.Backward(top, [True], bottom)
    return dy


def _objective(layer, bottom, top, dy):
    def objective():
        layer.Forward(bottom, top)
        return float((top[0].data * dy).sum())
    return objective


@pytest.mark.parametrize("make", [lambda b: ip_text(4, b), lambda b: ip_text(4, b, "MEAN_ABS"),
                                  lambda b: conv_text(3, 3, b, extra="pad: 1"),
                                  lambda b: conv_text(3, 2, b, "MEAN_ABS", "stride: 2 group: 3")])
def test_ste_bottom_gradient(make):
    """dL/dx of a binarized input = dL/d sign(x) where |x| <= 1, 0 elsewhere: the numerical
    gradient of the same layer fed sign(x) as a real input, masked."""
    rng = np.random.default_rng(5)
    x = away_from_kinks(rng, (2, 3, 5, 5))
    layer, bottom, top = build(make(True), [x])
    dy = _analytic(layer, bottom, top)
    real, rbottom, rtop = build(make(False), [np.where(x >= 0, 1.0, -1.0)])
    for mine, theirs in zip(layer.blobs, real.blobs):
        theirs.data[...] = mine.data
    numeric = numerical_gradient(_objective(real, rbottom, rtop, dy), rbottom[0])
    expected = numeric * (np.abs(x) <= 1)
    assert (expected == 0).any() and (expected != 0).any()
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("make", [lambda s: ip_text(4, True, s), lambda s: ip_text(4, True, s, "transpose: true"),
                                  lambda s: conv_text(3, 3, True, s, "pad: 1 group: 3")])
@pytest.mark.parametrize("scale", ["NONE", "MEAN_ABS"])
def test_ste_weight_gradient(make, scale):
    """The latent weights get alpha * dL/d sign(W) (BinaryNet's straight-through weight gradient,
    computed here by the float layer on the +-1 values) plus the exact gradient through
    alpha = mean |W|, which the numerical gradient measures (sign itself is flat)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 5))
    layer, bottom, top = build(make(scale), [x])
    w = layer.blobs[0]
    w.data[...] = away_from_kinks(rng, w.shape, 0.02).clip(-0.98, 0.98)
    dy = _analytic(layer, bottom, top)
    analytic = w.diff.copy()
    numeric = numerical_gradient(_objective(layer, bottom, top, dy), w)
    out_axis = layer.weight_out_axis
    alpha = mean_abs(w.data, out_axis) if scale == "MEAN_ABS" else np.ones(w.shape[out_axis])
    shape = [1] * w.data.ndim
    shape[out_axis] = -1
    grad_sign = _float_weight_gradient(layer, x, dy)
    if scale == "NONE":
        np.testing.assert_allclose(numeric, 0, atol=1e-8)
    else:
        assert np.abs(numeric).max() > 1e-3
    np.testing.assert_allclose(analytic, alpha.reshape(shape) * grad_sign + numeric, rtol=1e-6, atol=1e-8)


def _float_weight_gradient(layer, x, dy):
    """dL/d sign(W) of the unscaled product, from the float layer on sign(x) and sign(W)."""
    p = caffe_pb2.LayerParameter()
    p.CopyFrom(layer.layer_param)
    p.type = p.type.replace("Binary", "")
    p.ClearField("binary_param")
    ref, rb, rt = build(_text(p), [np.where(x >= 0, 1.0, -1.0)])
    ref.blobs[0].data[...] = np.where(layer.blobs[0].data >= 0, 1.0, -1.0)
    ref.Forward(rb, rt)
    rt[0].diff[...] = dy
    for b in ref.blobs:
        b.diff[...] = 0
    ref.Backward(rt, [False], rb)
    return ref.blobs[0].diff


def _text(param):
    return text_format.MessageToString(param)


# ---------------------------------------------------------------------------
# latent weights clipped by the solver
# ---------------------------------------------------------------------------
SOLVER = """
net_param {
  layer { name: "data" type: "Input" top: "x" top: "t" input_param { shape { dim: 8 dim: 6 } shape { dim: 8 dim: 2 } } }
  layer { name: "fc" type: "BinaryInnerProduct" bottom: "x" top: "y"
          inner_product_param { num_output: 2 weight_filler { type: "uniform" min: -0.9 max: 0.9 } }
          binary_param { %s } }
  layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
}
base_lr: 50 lr_policy: "fixed" type: "%s" max_iter: 2 display: 0 random_seed: 3
"""


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_solver_clips_latent_weights(tmp_path, solver_type):
    from pycaffe_lite.solvers import get_solver

    def trained(binary):
        param = text_format.Parse(SOLVER % (binary, solver_type), caffe_pb2.SolverParameter())
        param.snapshot_prefix = str(tmp_path / "s")
        solver = get_solver(param)
        rng = np.random.default_rng(0)
        solver.net.blobs["x"].data[...] = rng.standard_normal((8, 6))
        solver.net.blobs["t"].data[...] = 40 * rng.standard_normal((8, 2))
        solver.step(1)
        return solver.net.params["fc"][0].data.copy()

    clipped = trained("clip_weights: true")
    assert np.abs(clipped).max() == 1.0
    assert np.abs(trained("clip_weights: false")).max() > 1.0


def test_net_update_runs_after_update():
    from pycaffe_lite.net import Net
    net_text = (SOLVER % ("clip_weights: true", "SGD")).split("net_param {")[1].rsplit("}", 1)[0]
    net_param = text_format.Parse(net_text, caffe_pb2.NetParameter())
    net = Net(net_param, phase=TRAIN)
    weights = net.params["fc"][0]
    weights.data[...] = [[3.0, -0.5, -7.0, 0, 0, 0], [0.25, 1.5, -1.0, 0, 0, 0]]
    weights.diff[...] = 0
    net.update()
    np.testing.assert_array_equal(weights.data, [[1.0, -0.5, -1.0, 0, 0, 0], [0.25, 1.0, -1.0, 0, 0, 0]])


# ---------------------------------------------------------------------------
# set-up errors
# ---------------------------------------------------------------------------
def test_convolution_refuses_inexact_engines():
    with pytest.raises(ValueError, match=r"layer 'layer' \(type BinaryConvolution\) needs convolution_param "
                                         r"\{ engine: CAFFE \} .* got WINOGRAD"):
        build(conv_text(extra="engine: WINOGRAD"), [np.zeros((1, 2, 5, 5))])


def test_packed_refuses_three_spatial_axes():
    with pytest.raises(ValueError, match=r"engine: PACKED \}, which runs 1-D and 2-D convolutions only, not 3-D"):
        build(conv_text(kernel=2, engine="PACKED"), [np.zeros((1, 2, 3, 3, 3))])


def test_packed_refuses_real_inputs_that_are_not_fixed_point():
    layer, bottom, top = build(ip_text(2, False, engine="PACKED"), [np.full((2, 3), 0.1)], phase=TEST,
                               dtype=np.float32)
    with pytest.raises(ValueError, match=r"needs fixed-point inputs x = q \* 2\^-f with q in 16 bits; "
                                         r"this batch is not \(values from 0\.100000001 to"):
        layer.Forward(bottom, top)


def test_default_engine_falls_back_to_float_for_real_inputs():
    x = np.full((2, 3), 0.1, np.float32)
    layer, bottom, top = build(ip_text(2, False), [x], phase=TEST, dtype=np.float32)
    w = layer.blobs[0].data
    np.testing.assert_array_equal(run_forward(layer, bottom, top),
                                  (x @ np.where(w >= 0, 1, -1).astype(np.float32).T) + layer.blobs[1].data)


# ---------------------------------------------------------------------------
# packed path == float path, bit for bit
# ---------------------------------------------------------------------------
def _both_engines(text_of, x, set_weights=None):
    outs = []
    for engine in ("FLOAT", "PACKED"):
        layer, bottom, top = build(text_of(engine), [x], phase=TEST, dtype=np.float32)
        if set_weights is not None:
            set_weights(layer)
        outs.append(run_forward(layer, bottom, top))
    return outs


def _seeded_weights(seed):
    def set_weights(layer):
        rng = np.random.default_rng(seed)
        w = layer.blobs[0].data
        w[...] = rng.uniform(-1, 1, w.shape).astype(w.dtype)
        w.reshape(-1)[::7] = 0.0                      # sign(0) = +1 on both paths
        layer.blobs[1].data[...] = rng.standard_normal(layer.blobs[1].shape)
    return set_weights


PACKED_CONVS = [
    ((2, 3, 9, 9), 5, 3, "pad: 1"),
    ((2, 65, 8, 7), 7, 3, "pad: 2 stride: 2"),
    ((1, 130, 6, 6), 10, 3, "pad: 1 group: 2"),
    ((3, 20, 12, 12), 50, 5, ""),
    ((2, 64, 7, 7), 16, 1, ""),
    ((2, 6, 9, 11), 4, 3, "pad: 2 dilation: 2 stride: 3"),
    ((2, 12, 8, 8), 6, 3, "kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 group: 3"),
]


@pytest.mark.parametrize("shape,num_output,kernel,extra", PACKED_CONVS)
@pytest.mark.parametrize("scale", ["NONE", "MEAN_ABS"])
def test_packed_convolution_equals_float(shape, num_output, kernel, extra, scale):
    def extra_text(engine):
        if "kernel_h" in extra:                          # kernel_h / kernel_w instead of kernel_size
            return conv_text(num_output, 1, True, scale, extra, engine).replace("kernel_size: 1 ", "")
        return conv_text(num_output, kernel, True, scale, extra, engine)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = 0.0
    floats, packed = _both_engines(extra_text, x, _seeded_weights(8))
    np.testing.assert_array_equal(packed, floats)


@pytest.mark.parametrize("extra", ["pad: 2", "stride: 2 pad: 1 group: 2"])
@pytest.mark.parametrize("signed", [False, True])
def test_packed_first_layer_on_fixed_point_input(extra, signed):
    """A first layer's real input: 8-bit pixels scaled by 1/256 (or mean-subtracted, signed)
    run as bit planes, equal to the float path."""
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 256, (2, 4, 10, 10)).astype(np.float32)
    x = ((pixels - 128) if signed else pixels) * np.float32(0.00390625)
    floats, packed = _both_engines(lambda e: conv_text(6, 5, False, "MEAN_ABS", extra, e), x, _seeded_weights(10))
    np.testing.assert_array_equal(packed, floats)


def test_packed_one_dimensional_convolution():
    x = np.random.default_rng(11).standard_normal((2, 70, 15)).astype(np.float32)
    floats, packed = _both_engines(lambda e: conv_text(5, 3, True, "NONE", "pad: 1", e), x, _seeded_weights(12))
    np.testing.assert_array_equal(packed, floats)


@pytest.mark.parametrize("shape,num_output,extra", [((5, 100), 7, ""), ((3, 4, 4, 4), 9, "transpose: true"),
                                                    ((2, 129), 65, ""), ((1, 64), 3, "")])
@pytest.mark.parametrize("binarize_input", [True, False])
def test_packed_inner_product_equals_float(shape, num_output, extra, binarize_input):
    rng = np.random.default_rng(13)
    if binarize_input:
        x = rng.standard_normal(shape).astype(np.float32)
    else:
        x = (rng.integers(-50, 200, shape) * 0.0625).astype(np.float32)
    floats, packed = _both_engines(lambda e: ip_text(num_output, binarize_input, "MEAN_ABS", extra, e), x,
                                   _seeded_weights(14))
    np.testing.assert_array_equal(packed, floats)


def test_default_engine_is_packed_in_test_nets():
    layer, bottom, _ = build(ip_text(3), [np.ones((2, 4))], phase=TEST, dtype=np.float32)
    assert layer.runs_packed(bottom[0].data) == HAVE_NUMBA
    layer, bottom, _ = build(ip_text(3), [np.ones((2, 4))], phase=TRAIN, dtype=np.float32)
    assert not layer.runs_packed(bottom[0].data)


def test_packed_forward_then_ste_backward():
    """A PACKED layer still trains: backward is the float STE on the same values."""
    x = away_from_kinks(np.random.default_rng(15), (2, 3, 6, 6)).astype(np.float32)
    grads = []
    for engine in ("FLOAT", "PACKED"):
        layer, bottom, top = build(conv_text(4, 3, True, "MEAN_ABS", "pad: 1", engine), [x], dtype=np.float32)
        _seeded_weights(16)(layer)
        _analytic(layer, bottom, top)
        grads.append((bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
