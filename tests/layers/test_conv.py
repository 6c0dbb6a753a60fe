"""Convolution, Deconvolution and Im2col layers: Caffe's parameter rules, forward against
plain loops, numerical gradients (float64), engines through the layer, and the BVLC goldens
layer by layer."""
import numpy as np
import pytest

from goldens import golden
from layer_check import build, check_gradient, forward, layer_param
from layer_refs import conv_loops, deconv_loops, im2col_loops
from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.conv import chosen_engines, reset_choices
from pycaffe_lite.layer import create_layer
from pycaffe_lite.proto import caffe_pb2


# ---------------------------------------------------------------------------
# plain-loop references
# ---------------------------------------------------------------------------
def conv_text(params, type_="Convolution", filler='weight_filler { type: "gaussian" std: 0.5 } '
              'bias_filler { type: "gaussian" std: 0.5 }'):
    return f'type: "{type_}" convolution_param {{ {params} {filler} }}'


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------
# forward against loops
# ---------------------------------------------------------------------------
CONV_CASES = [
    # (prototxt convolution_param, bottom shape, kernel, stride, pad, dilation, group)
    ("num_output: 4 kernel_size: 3", (2, 3, 6, 7), (3, 3), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2", (2, 4, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), 2),
    ("num_output: 5 kernel_h: 1 kernel_w: 3 pad_w: 1", (2, 3, 5, 6), (1, 3), (1, 1), (0, 1), (1, 1), 1),
    ("num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1", (1, 3, 7, 6), (3, 2), (2, 1), (1, 0),
     (1, 1), 1),
    ("num_output: 3 kernel_size: 3 dilation: 2 pad: 2", (2, 2, 7, 8), (3, 3), (1, 1), (2, 2), (2, 2), 1),
    ("num_output: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 pad: 0 pad: 1 dilation: 1 dilation: 2",
     (1, 2, 6, 7), (3, 2), (1, 2), (0, 1), (1, 2), 1),
    ("num_output: 5 kernel_size: 1", (2, 4, 3, 5), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 6 kernel_size: 3 pad: 1 group: 3", (2, 3, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 3),
]


@pytest.mark.parametrize("params,shape,kernel,stride,pad,dilation,group", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_convolution_forward_matches_loops(params, shape, kernel, stride, pad, dilation, group):
    layer, bottom, top = build(conv_text(params), [_x(shape)])
    layer.Forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape == (w.shape[0], shape[1] // group) + kernel
    np.testing.assert_allclose(top[0].data, conv_loops(bottom[0].data, w, b, kernel, stride, pad, dilation, group),
                               rtol=1e-12, atol=1e-12)


def test_convolution_without_bias_has_one_blob():
    layer, bottom, top = build(conv_text("num_output: 3 kernel_size: 2 bias_term: false",
                                         filler='weight_filler { type: "gaussian" }'), [_x((1, 2, 4, 4))])
    assert len(layer.blobs) == 1
    layer.Forward(bottom, top)
    np.testing.assert_allclose(top[0].data, conv_loops(bottom[0].data, layer.blobs[0].data, None, (2, 2)))


def test_deconvolution_forward_matches_loops_with_stride_and_group():
    text = conv_text("num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2", "Deconvolution")
    layer, bottom, top = build(text, [_x((2, 4, 3, 5))])
    assert layer.blobs[0].shape == (4, 3, 4, 4)                      # (C_in, K/group, kh, kw)
    assert top[0].shape == (2, 6, 6, 10)                             # s(in-1) + k - 2p
    layer.Forward(bottom, top)
    ref = deconv_loops(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (4, 4), (2, 2), (1, 1), (1, 1), 2)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)


def test_deconvolution_dilated_rectangular():
    text = conv_text("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 1 dilation: 2",
                     "Deconvolution")
    layer, bottom, top = build(text, [_x((1, 3, 4, 3))])
    layer.Forward(bottom, top)
    ref = deconv_loops(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (3, 2), (1, 3), (1, 0), (2, 2))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("params,kernel,stride,pad,dilation", [
    ("kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 pad_h: 1 stride_h: 1 stride_w: 2", (2, 3), (1, 2), (1, 0), (1, 1)),
    ("kernel_size: 2 dilation: 2 pad: 1", (2, 2), (1, 1), (1, 1), (2, 2)),
])
def test_im2col_layer_matches_loops(params, kernel, stride, pad, dilation):
    x = _x((2, 3, 6, 5))
    (top,) = forward(f'type: "Im2col" convolution_param {{ {params} }}', [x])
    np.testing.assert_array_equal(top, im2col_loops(x, kernel, stride, pad, dilation))


# ---------------------------------------------------------------------------
# gradients (float64 central differences)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("params,shape", [
    ("num_output: 3 kernel_size: 3 pad: 1", (2, 2, 4, 5)),
    ("num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2", (1, 4, 5, 5)),
    ("num_output: 2 kernel_h: 1 kernel_w: 3 pad_w: 1 dilation: 2", (2, 2, 3, 6)),
    ("num_output: 3 kernel_size: 1", (2, 4, 3, 3)),
    ("num_output: 4 kernel_size: 3 pad: 1 group: 2", (1, 2, 4, 4)),                # depthwise x2
])
def test_convolution_gradients(params, shape):
    check_gradient(conv_text(params), [_x(shape)])


@pytest.mark.parametrize("engine", ["FFT", "WINOGRAD", "WINOGRAD4"])
def test_convolution_gradients_through_other_engines(engine):
    check_gradient(conv_text(f"num_output: 2 kernel_size: 3 pad: 1 engine: {engine}"), [_x((1, 2, 5, 4))],
                   rtol=1e-4)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2", (1, 2, 3, 3)),
    ("num_output: 2 kernel_size: 3 stride: 1 pad: 1", (2, 3, 3, 4)),
    ("num_output: 3 kernel_h: 2 kernel_w: 3 stride: 3 dilation: 2", (1, 2, 2, 3)),
])
def test_deconvolution_gradients(params, shape):
    check_gradient(conv_text(params, "Deconvolution"), [_x(shape)])


def test_im2col_layer_gradient():
    check_gradient('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 }', [_x((2, 2, 5, 4))])


def test_shared_weights_over_several_bottoms():
    text = conv_text("num_output: 3 kernel_size: 2 stride: 1")
    check_gradient(text, [_x((1, 2, 4, 4), 1), _x((1, 2, 4, 4), 2)], num_tops=2)
    layer, bottom, top = build(text, [_x((1, 2, 4, 4), 1), _x((1, 2, 4, 4), 2)], num_tops=2)
    layer.Forward(bottom, top)
    for x, y in zip(bottom, top):
        np.testing.assert_allclose(y.data, conv_loops(x.data, layer.blobs[0].data, layer.blobs[1].data, (2, 2)),
                                   rtol=1e-12)


# ---------------------------------------------------------------------------
# Caffe's bookkeeping: accumulated parameter diffs, propagate_down, axis, 1-D
# ---------------------------------------------------------------------------
def _run_backward(layer, bottom, top, propagate=(True,)):
    layer.Forward(bottom, top)
    for t in top:
        t.diff[...] = 1.0
    layer.Backward(top, list(propagate), bottom)


def test_parameter_diffs_accumulate_and_bottom_diffs_are_assigned():
    layer, bottom, top = build(conv_text("num_output: 2 kernel_size: 3"), [_x((1, 2, 5, 5))])
    _run_backward(layer, bottom, top)
    w1, b1, dx1 = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(), bottom[0].diff.copy()
    _run_backward(layer, bottom, top)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * w1)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * b1)
    np.testing.assert_allclose(bottom[0].diff, dx1)
    np.testing.assert_allclose(b1, [9.0, 9.0])


def test_propagate_down_and_frozen_parameters_are_respected():
    layer, bottom, top = build(conv_text("num_output: 2 kernel_size: 3"), [_x((1, 2, 5, 5))])
    bottom[0].diff[...] = 7.0
    layer.param_propagate_down = [False, True]
    _run_backward(layer, bottom, top, propagate=(False,))
    assert np.all(bottom[0].diff == 7.0)
    assert np.all(layer.blobs[0].diff == 0)
    assert np.all(layer.blobs[1].diff == 9.0)


def test_channel_axis_and_leading_batch_axes():
    x = _x((2, 3, 2, 5, 4))                                             # axis 2: 6 images of 2 channels
    layer, bottom, top = build(conv_text("num_output: 3 kernel_size: 3 pad: 1 axis: 2"), [x])
    assert top[0].shape == (2, 3, 3, 5, 4)
    layer.Forward(bottom, top)
    ref = conv_loops(x.reshape(6, 2, 5, 4), layer.blobs[0].data, layer.blobs[1].data, (3, 3), pad=(1, 1))
    np.testing.assert_allclose(top[0].data, ref.reshape(2, 3, 3, 5, 4), rtol=1e-12)
    check_gradient(conv_text("num_output: 2 kernel_size: 3 axis: 2"), [_x((1, 2, 2, 3, 4))])


def test_one_dimensional_convolution():
    x = _x((2, 3, 9))
    layer, bottom, top = build(conv_text("num_output: 4 kernel_size: 3 stride: 2 pad: 1"), [x])
    assert layer.blobs[0].shape == (4, 3, 3)
    assert top[0].shape == (2, 4, 5)
    layer.Forward(bottom, top)
    ref = conv_loops(x[:, :, None], layer.blobs[0].data[:, :, None], layer.blobs[1].data, (1, 3), (1, 2), (0, 1))
    np.testing.assert_allclose(top[0].data, ref[:, :, 0], rtol=1e-12)
    check_gradient(conv_text("num_output: 2 kernel_size: 3 dilation: 2", "Deconvolution"), [_x((1, 2, 4))])


def conv_nd_loops(x, w, b, stride, pad, dilation, group):
    """Caffe's N-D convolution, one output position and kernel tap at a time."""
    import itertools
    n, c = x.shape[:2]
    k, axes, kernel = w.shape[0], x.ndim - 2, w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(x.shape[2 + a] + 2 * pad[a] - (dilation[a] * (kernel[a] - 1) + 1)) // stride[a] + 1 for a in range(axes)]
    y = np.zeros((n, k) + tuple(out))
    cg, kg = c // group, k // group
    for o in itertools.product(*map(range, out)):
        for t in itertools.product(*map(range, kernel)):
            patch = xp[(slice(None), slice(None)) + tuple(o[a] * stride[a] + t[a] * dilation[a] for a in range(axes))]
            for g in range(group):
                y[(slice(None), slice(g * kg, (g + 1) * kg)) + o] += (
                    patch[:, g * cg:(g + 1) * cg] @ w[(slice(g * kg, (g + 1) * kg), slice(None)) + t].T)
    return y + b.reshape((1, k) + (1,) * axes)


ND_PARAMS = ("num_output: 4 kernel_size: 3 kernel_size: 2 kernel_size: 3 stride: 2 stride: 1 stride: 1 "
             "pad: 1 pad: 0 pad: 2 dilation: 1 dilation: 2 dilation: 1 group: 2")


def test_three_dimensional_convolution_matches_loops():
    x = _x((2, 4, 5, 6, 7))
    layer, bottom, top = build(conv_text(ND_PARAMS), [x])
    assert layer.blobs[0].shape == (4, 2, 3, 2, 3) and top[0].shape == (2, 4, 3, 4, 9)
    layer.Forward(bottom, top)
    ref = conv_nd_loops(x, layer.blobs[0].data, layer.blobs[1].data, (2, 1, 1), (1, 0, 2), (1, 2, 1), 2)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)


def test_four_dimensional_convolution_matches_loops():
    x = _x((1, 2, 3, 4, 3, 4))
    layer, bottom, top = build(conv_text("num_output: 3 kernel_size: 2 pad: 1 stride: 2"), [x])
    layer.Forward(bottom, top)
    ref = conv_nd_loops(x, layer.blobs[0].data, layer.blobs[1].data, (2,) * 4, (1,) * 4, (1,) * 4, 1)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)


def test_n_dimensional_gradients():
    check_gradient(conv_text(ND_PARAMS), [_x((1, 4, 4, 5, 4))])
    check_gradient(conv_text("num_output: 2 kernel_size: 2 stride: 2 pad: 1 group: 2", "Deconvolution"),
                   [_x((1, 2, 2, 3, 2))])


def test_three_dimensional_deconvolution_is_the_adjoint_of_the_convolution():
    # <deconv(x), y> = <x, conv(y)> with the same weights and no bias
    params = "num_output: 3 kernel_size: 3 kernel_size: 2 kernel_size: 2 stride: 2 pad: 1 bias_term: false"
    x = _x((1, 2, 3, 3, 4))
    deconv, bottom, top = build(conv_text(params, "Deconvolution"), [x])
    deconv.Forward(bottom, top)
    y = _x(top[0].shape, 1)
    conv_y = conv_nd_loops(y, deconv.blobs[0].data, np.zeros(2), (2, 2, 2), (1, 1, 1), (1, 1, 1), 1)
    assert conv_y.shape == x.shape
    np.testing.assert_allclose(np.vdot(top[0].data, y), np.vdot(x, conv_y), rtol=1e-10)


def test_im2col_layer_refuses_three_spatial_axes():
    with pytest.raises(ValueError, match="1-D and 2-D convolution only"):
        build('type: "Im2col" convolution_param { kernel_size: 2 }', [np.zeros((1, 2, 3, 4, 4))])


def test_preset_weights_are_kept_and_checked():
    param = layer_param(conv_text("num_output: 2 kernel_size: 3"))
    layer = create_layer(param)
    weight = Blob((2, 3, 3, 3), np.float64)
    weight.data[...] = 0.5
    bias = Blob((2,), np.float64)
    layer.blobs = [weight, bias]
    bottom, top = [Blob((1, 3, 4, 4), np.float64)], [Blob((), np.float64)]
    layer.SetUp(bottom, top)
    assert layer.blobs[0] is weight and np.all(weight.data == 0.5)
    layer = create_layer(param)
    layer.blobs = [Blob((2, 3, 2, 2), np.float64), Blob((2,), np.float64)]
    with pytest.raises(ValueError, match=r"Incorrect weight shape: expected shape \(2, 3, 3, 3\)"):
        layer.SetUp(bottom, top)
    layer = create_layer(param)
    layer.blobs = [Blob((2, 3, 3, 3), np.float64)]
    with pytest.raises(ValueError, match="Incorrect number of weight blobs"):
        layer.SetUp(bottom, top)


# ---------------------------------------------------------------------------
# errors, worded after Caffe and naming the layer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("params,shape,message", [
    ("num_output: 2", (1, 2, 4, 4), "kernel_size must be specified once"),
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 2, 4, 4), "Either kernel or kernel_h/w"),
    ("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3", (1, 2, 4, 4), "specified 3 times; 2 spatial"),
    ("num_output: 2 kernel_size: 0", (1, 2, 4, 4), "Filter dimensions must be nonzero"),
    ("num_output: 2 kernel_size: 3 stride: 0", (1, 2, 4, 4), "Stride dimensions must be nonzero"),
    ("num_output: 0 kernel_size: 3", (1, 2, 4, 4), "num_output > 0"),
    ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 4, 4), "multiples of group"),
    ("num_output: 2 kernel_size: 3 group: 2", (1, 3, 4, 4), "not a multiple of group 2"),
    ("num_output: 2 kernel_size: 5", (1, 2, 3, 8, 8), "output would be empty"),
    ("num_output: 2 kernel_h: 3 kernel_w: 3", (1, 2, 4), "can only be used for 2D convolution"),
    ("num_output: 2 kernel_size: 5", (1, 2, 4, 4), "output would be empty"),
    ("num_output: 2 kernel_size: 5 engine: WINOGRAD", (1, 2, 8, 8), "engine WINOGRAD, which cannot run"),
    ("num_output: 2 kernel_size: 3 stride: 2 engine: FFT", (1, 2, 8, 8), "engine FFT, which cannot run"),
])
def test_bad_settings_are_refused_with_caffes_words(params, shape, message):
    with pytest.raises(ValueError, match=message) as info:
        build(conv_text(params), [np.zeros(shape)])
    assert "layer 'layer' (type Convolution)" in str(info.value)


def test_bottoms_must_share_a_shape_and_keep_their_channels():
    text = conv_text("num_output: 2 kernel_size: 3")
    with pytest.raises(ValueError, match="All inputs must have the same shape"):
        build(text, [np.zeros((1, 2, 5, 5)), np.zeros((1, 2, 6, 5))], num_tops=2)
    layer, bottom, top = build(text, [np.zeros((1, 2, 5, 5))])
    bottom[0].reshape(1, 3, 5, 5)
    with pytest.raises(ValueError, match="Input size incompatible"):
        layer.reshape(bottom, top)


# ---------------------------------------------------------------------------
# engines through the layer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("engine,tol", [("CAFFE", 1e-12), ("CUDNN", 1e-12), ("FFT", 1e-10), ("WINOGRAD", 1e-10),
                                        ("WINOGRAD4", 1e-10), ("AUTO", 1e-10)])
def test_engines_agree_through_the_layer(engine, tol):
    x = _x((2, 4, 7, 6))
    base = conv_text("num_output: 4 kernel_size: 3 pad: 1 group: 2")
    backend.set_random_seed(3)
    (ref,) = forward(base, [x])
    backend.set_random_seed(3)
    (got,) = forward(base.replace("group: 2", f"group: 2 engine: {engine}"), [x])
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    layer, _, _ = build(base.replace("group: 2", f"group: 2 engine: {engine}"), [x])
    assert layer.engine_name in ("im2col", "fft", "winograd", "winograd4")


def test_deconvolution_through_fft_and_winograd():
    x = _x((1, 3, 5, 6))
    base = conv_text("num_output: 2 kernel_size: 3 pad: 1", "Deconvolution")
    backend.set_random_seed(3)
    (ref,) = forward(base, [x])
    for engine in ("FFT", "WINOGRAD", "WINOGRAD4", "AUTO"):
        backend.set_random_seed(3)
        (got,) = forward(base.replace("pad: 1", f"pad: 1 engine: {engine}"), [x])
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    check_gradient(base.replace("pad: 1", "pad: 1 engine: WINOGRAD"), [_x((1, 2, 3, 4))], rtol=1e-4)


def test_auto_engine_records_its_choice_per_shape():
    reset_choices()
    x = _x((2, 3, 8, 8)).astype(np.float32)
    layer, bottom, top = build(conv_text("num_output: 4 kernel_size: 3 pad: 1 engine: AUTO"), [x], dtype=np.float32)
    assert chosen_engines() == {}                      # set-up alone times nothing: the first pass does
    layer.Forward(bottom, top)
    chosen = chosen_engines()
    assert len(chosen) == 1 and layer.engine_name == next(iter(chosen.values()))
    assert next(iter(chosen)).startswith("conv 2x3x8x8->4 k3x3 s1 p1")
    reset_choices()


# ---------------------------------------------------------------------------
# BVLC Caffe's own results, layer by layer
# ---------------------------------------------------------------------------
GOLDENS = ["conv_1x1", "conv_dilated", "conv_group_stride_pad", "conv_rect_kernel", "deconv_stride_group"]


@pytest.mark.parametrize("case", GOLDENS)
def test_goldens_layer_by_layer(case):
    data = golden(case)
    net = data.net_param()
    for lp in net.layer:
        if lp.type == "Input":
            continue
        x = data[f"fwd/{lp.bottom[0]}"]
        layer = create_layer(lp, caffe_pb2.TRAIN)
        bottom = [Blob(x.shape, np.float32)]
        bottom[0].data[...] = x
        top = [Blob((), np.float32)]
        layer.SetUp(bottom, top)
        for i, blob in enumerate(layer.blobs):
            blob.data[...] = data[f"param/{lp.name}/{i}"]
        layer.Forward(bottom, top)
        expected = data[f"fwd/{lp.top[0]}"]
        assert np.abs(top[0].data - expected).max() <= 1e-4 * np.abs(expected).max()
        if f"topdiff/{lp.top[0]}" in data.files:
            top[0].diff[...] = data[f"topdiff/{lp.top[0]}"]
            layer.Backward(top, [True], bottom)
            for i, blob in enumerate(layer.blobs):
                expected = data[f"pgrad/{lp.name}/{i}"]
                assert np.abs(blob.diff - expected).max() <= 1e-4 * np.abs(expected).max()
            if len(net.layer) == 2:                    # the only consumer of the input
                expected = data[f"bwd/{lp.bottom[0]}"]
                assert np.abs(bottom[0].diff - expected).max() <= 1e-4 * np.abs(expected).max()
