"""Pooling, LRN, SPP and Crop: forward against plain loops written after Caffe's C++,
backward by numerical gradients, and the BVLC goldens layer by layer."""
import numpy as np
import pytest

from goldens import golden
from layer_check import build, check_gradient, forward
from layer_refs import ref_lrn_across, ref_lrn_within, ref_pool, ref_sto_test
from pycaffe_lite import kernels
from pycaffe_lite.layers import lrn, pooling, spp
from pycaffe_lite.proto import caffe_pb2


# ---------------------------------------------------------------------------
# plain-loop references (Caffe's PoolingLayer::Forward_cpu and the GPU stochastic kernels)
# ---------------------------------------------------------------------------
def pool_text(**fields):
    return 'type: "Pooling" pooling_param { ' + " ".join(f"{k}: {v}" for k, v in fields.items()) + " }"


rng = np.random.default_rng(7)


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("H, W, k, s, p, expect", [
    (7, 10, 3, 2, 1, (4, 6)),     # ceil; windows clipped to the image
    (7, 10, 2, 2, 1, (4, 6)),     # ceil gives 5 rows but the 5th window starts in the padding
    (6, 6, 3, 2, 0, (3, 3)),      # ceil((6-3)/2)+1 = 3 where floor gives 2
    (5, 5, 2, 2, 0, (3, 3)),
    (4, 4, 4, 1, 0, (1, 1)),
])
def test_pooled_shape_rounds_up_like_caffe(H, W, k, s, p, expect):
    (top,) = forward(pool_text(pool="MAX", kernel_size=k, stride=s, pad=p), [rng.standard_normal((1, 2, H, W))])
    assert top.shape == (1, 2) + expect


def test_round_mode_floor():
    x = rng.standard_normal((1, 1, 6, 6))
    (top,) = forward(pool_text(pool="MAX", kernel_size=3, stride=2, round_mode="FLOOR"), [x])
    assert top.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(top, ref_pool(x, "MAX", (3, 3), (2, 2), (0, 0), ceil=False)[0])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("fields", [
    dict(kernel_size=3, stride=2, pad=1),
    dict(kernel_size=2, stride=2, pad=1),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2),
    dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=0),
    dict(kernel_size=4, stride=3, pad=1),      # fewer outputs than kernel offsets: the other loop order
])
def test_pooling_forward_matches_loops(method, fields):
    x = rng.standard_normal((2, 3, 7, 8))
    layer, bottom, top = build(pool_text(pool=method, **fields), [x], num_tops=2 if method == "MAX" else 1)
    layer.Forward(bottom, top)
    kernel = (fields.get("kernel_h", fields.get("kernel_size")), fields.get("kernel_w", fields.get("kernel_size")))
    stride = (fields.get("stride_h", fields.get("stride", 1)), fields.get("stride_w", fields.get("stride", 1)))
    pad = (fields.get("pad_h", fields.get("pad", 0)), fields.get("pad_w", fields.get("pad", 0)))
    want, mask = ref_pool(x, method, kernel, stride, pad)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(top[1].data, mask)


def test_max_pooling_takes_the_first_of_equal_maxima():
    x = np.zeros((1, 1, 2, 2))
    layer, bottom, top = build(pool_text(pool="MAX", kernel_size=2), [x], num_tops=2)
    layer.Forward(bottom, top)
    assert top[1].data.item() == 0
    bottom[0].data[...] = [[[[1, 5], [5, 2]]]]
    layer.Forward(bottom, top)
    assert top[1].data.item() == 1      # (0, 1) before (1, 0)


@pytest.mark.parametrize("text", [
    pool_text(pool="MAX", kernel_size=3, stride=2, pad=1),
    pool_text(pool="MAX", kernel_size=2, stride=2, pad=1),
    pool_text(pool="MAX", kernel_size=3, stride=1),
    pool_text(pool="AVE", kernel_size=3, stride=2, pad=1),
    pool_text(pool="AVE", kernel_size=2, stride=2, pad=1),
    pool_text(pool="AVE", kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=1),
    pool_text(pool="AVE", global_pooling="true"),
    pool_text(pool="MAX", global_pooling="true"),
    pool_text(pool="MAX", kernel_size=4, stride=3, pad=1),
    pool_text(pool="AVE", kernel_size=4, stride=3, pad=1),
])
def test_pooling_gradient(text):
    check_gradient(text, [rng.standard_normal((2, 2, 5, 6))])


def test_max_pooling_mask_top_gets_no_gradient_role():
    x = rng.standard_normal((1, 2, 5, 5))
    check_gradient(pool_text(pool="MAX", kernel_size=2, stride=2, pad=1), [x], num_tops=2, top_weights=[0])


def test_numba_max_pooling_matches_numpy():
    if not kernels.HAVE_NUMBA:
        pytest.skip("Numba is not installed")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 8, 13, 11)).astype(dtype)
        x[0, 0, :3, :3] = 0.5          # ties
        for kernel, stride, pad in [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (0, 1)), ((3, 3), (3, 3), (0, 0))]:
            size = (pooling.pooled_size(13, kernel[0], stride[0], pad[0], any_pad=any(pad)),
                    pooling.pooled_size(11, kernel[1], stride[1], pad[1], any_pad=any(pad)))
            top, argk = pooling.max_pool_forward(x, kernel, stride, pad, size)
            fast_top, fast_argk = pooling.max_pool_forward_fast(x, kernel, stride, pad, size)
            np.testing.assert_array_equal(top, fast_top)
            np.testing.assert_array_equal(argk, fast_argk)
            dy = rng.standard_normal(top.shape).astype(dtype)
            np.testing.assert_allclose(pooling.max_pool_backward_fast(dy, argk, kernel, stride, pad, (13, 11)),
                                       pooling.max_pool_backward(dy, argk, kernel, stride, pad, (13, 11)),
                                       rtol=1e-6)


def test_stochastic_pooling_train_samples_proportionally_and_routes_gradient():
    x = rng.uniform(0.1, 1.0, (2, 2, 5, 5))
    layer, bottom, top = build(pool_text(pool="STOCHASTIC", kernel_size=3, stride=2), [x])
    layer.Forward(bottom, top)
    assert top[0].data.shape == (2, 2, 2, 2)
    # each output is the element at its sampled window position
    mask = pooling.max_pool_mask(layer.argk, (3, 3), (2, 2), (0, 0), (5, 5))
    np.testing.assert_array_equal(top[0].data, np.take_along_axis(x.reshape(2, 2, 25), mask.reshape(2, 2, 4),
                                                                  axis=2).reshape(2, 2, 2, 2))
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    layer.Backward(top, [True], bottom)
    want = np.zeros((2, 2, 25))
    for n, c, i in np.ndindex(2, 2, 4):
        want[n, c, mask.reshape(2, 2, 4)[n, c, i]] += top[0].diff.reshape(2, 2, 4)[n, c, i]
    np.testing.assert_allclose(bottom[0].diff, want.reshape(x.shape))
    # u -> 0 picks the first element; u -> 1 the last non-zero; frequencies follow x / sum
    window = np.array([[[[1.0, 3.0], [0.0, 4.0]]]])
    for u, expect in [(0.0, 1.0), (0.999, 4.0), (0.2, 3.0), (0.5, 3.0), (0.51, 4.0)]:
        out, _ = pooling.sto_pool_forward_train(window, (2, 2), (2, 2), (1, 1), uniform=np.full((1, 1, 1, 1), u))
        assert out.item() == expect


def test_stochastic_pooling_test_phase_is_the_weighted_average():
    x = rng.uniform(0.1, 1.0, (2, 2, 6, 5))
    (top,) = forward(pool_text(pool="STOCHASTIC", kernel_size=3, stride=2), [x], phase=caffe_pb2.TEST)
    np.testing.assert_allclose(top, ref_sto_test(x, 3, 2), rtol=1e-12)
    check_gradient(pool_text(pool="STOCHASTIC", kernel_size=3, stride=2), [x], phase=caffe_pb2.TEST)


@pytest.mark.parametrize("text, message", [
    (pool_text(pool="MAX", kernel_size=2, pad=2), "pad < kernel"),
    (pool_text(pool="MAX", kernel_size=2, kernel_h=2, kernel_w=2), "kernel_size OR"),
    (pool_text(pool="MAX", kernel_h=2), "kernel_size OR"),
    (pool_text(pool="MAX", global_pooling="true", kernel_size=2), "global_pooling"),
    (pool_text(pool="STOCHASTIC", kernel_size=3, pad=1), "padding only for AVE and MAX"),
    (pool_text(pool="MAX", kernel_size=2, pad=1, pad_h=1, pad_w=1), "pad OR"),
])
def test_pooling_parameter_errors(text, message):
    with pytest.raises(ValueError, match=message):
        build(text, [np.zeros((1, 1, 4, 4))])


def test_pooling_mask_top_only_for_max_and_4d_input():
    with pytest.raises(ValueError, match="mask top only with MAX"):
        build(pool_text(pool="AVE", kernel_size=2), [np.zeros((1, 1, 4, 4))], num_tops=2)
    with pytest.raises(ValueError, match="4-axis"):
        build(pool_text(pool="AVE", kernel_size=2), [np.zeros((1, 4, 4))])


# ---------------------------------------------------------------------------
# LRN
# ---------------------------------------------------------------------------
def lrn_text(region, **fields):
    body = " ".join(f"{k}: {v}" for k, v in fields.items())
    return f'type: "LRN" lrn_param {{ norm_region: {region} {body} }}'


@pytest.mark.parametrize("n, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (3, 2.0, 0.6, 1.5), (1, 0.5, 0.5, 2.0)])
def test_lrn_across_channels(n, alpha, beta, k):
    x = rng.uniform(-2, 2, (2, 6, 3, 4))
    text = lrn_text("ACROSS_CHANNELS", local_size=n, alpha=alpha, beta=beta, k=k)
    (top,) = forward(text, [x])
    alpha, beta, k = (float(np.float32(v)) for v in (alpha, beta, k))     # the proto holds floats
    np.testing.assert_allclose(top, ref_lrn_across(x, n, alpha, beta, k), rtol=1e-12)
    check_gradient(text, [x])


@pytest.mark.parametrize("n, alpha, beta", [(3, 1.0, 0.75), (5, 0.3, 0.5)])
def test_lrn_within_channel_uses_alpha_over_size_squared_and_zero_padding(n, alpha, beta):
    x = rng.uniform(-2, 2, (2, 2, 6, 5))
    text = lrn_text("WITHIN_CHANNEL", local_size=n, alpha=alpha, beta=beta, k=7.0)   # k is unused here
    (top,) = forward(text, [x])
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))
    np.testing.assert_allclose(top, ref_lrn_within(x, n, alpha, beta), rtol=1e-12)
    check_gradient(text, [x])


def test_lrn_needs_odd_local_size():
    with pytest.raises(ValueError, match="odd"):
        build(lrn_text("ACROSS_CHANNELS", local_size=4), [np.zeros((1, 4, 2, 2))])


# ---------------------------------------------------------------------------
# SPP
# ---------------------------------------------------------------------------
def test_spp_levels_follow_caffes_geometry():
    # 7 x 6 input: level 1 -> kernel (4, 3), pad (1, 0); level 2 -> kernel 2, pad 1 (ceil, then the drop rule)
    assert spp.spp_level_geometry(1, 7, 6) == ((4, 3), (4, 3), (1, 0))
    assert spp.spp_level_geometry(2, 7, 6) == ((2, 2), (2, 2), (1, 1))
    x = rng.standard_normal((1, 2, 7, 6))
    for method in ("MAX", "AVE"):
        text = f'type: "SPP" spp_param {{ pyramid_height: 3 pool: {method} }}'
        (top,) = forward(text, [x])
        parts = [ref_pool(x, method, *spp.spp_level_geometry(i, 7, 6))[0].reshape(1, -1) for i in range(3)]
        assert [p.shape[1] for p in parts] == [2, 2 * 4, 2 * 16]
        np.testing.assert_allclose(top, np.concatenate(parts, axis=1), rtol=1e-12)
        check_gradient(text, [x])


def test_spp_height_one_is_a_global_pooling():
    x = rng.standard_normal((2, 3, 4, 5))
    (top,) = forward('type: "SPP" spp_param { pyramid_height: 1 }', [x])
    np.testing.assert_allclose(top, x.max(axis=(2, 3), keepdims=True))


def test_spp_too_many_levels_for_the_input():
    # 5 rows in 4 bins: kernel 2 needs pad 2, which Caffe's pooling refuses
    with pytest.raises(ValueError, match="pad < kernel"):
        build('type: "SPP" spp_param { pyramid_height: 3 }', [np.zeros((1, 1, 5, 8))])


# ---------------------------------------------------------------------------
# Crop
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("params, window", [
    ("", np.s_[:, :, 0:3, 0:2]),
    ("offset: 1", np.s_[:, :, 1:4, 1:3]),
    ("offset: 2 offset: 1", np.s_[:, :, 2:5, 1:3]),
    ("axis: 1 offset: 1", np.s_[:, 1:3, 1:4, 1:3]),
    ("axis: 1 offset: 0 offset: 2 offset: 3", np.s_[:, 0:2, 2:5, 3:5]),
    ("axis: -1 offset: 2", np.s_[:, :, :, 2:4]),
])
def test_crop(params, window):
    x = rng.standard_normal((2, 4, 5, 6))
    ref = np.zeros((2, 2, 3, 2))        # only the axes from `axis` on are read
    want = x[window]
    text = f'type: "Crop" crop_param {{ {params} }}'
    (top,) = forward(text, [x, ref])
    np.testing.assert_array_equal(top, want)
    check_gradient(text, [x, ref], check_bottoms=[0])


def test_crop_errors():
    with pytest.raises(ValueError, match="out of bounds"):
        build('type: "Crop" crop_param { offset: 4 }', [np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2))])
    with pytest.raises(ValueError, match="one offset or one per cropped axis"):
        build('type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }',
              [np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2))])


# ---------------------------------------------------------------------------
# BVLC Caffe's goldens, layer by layer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["pool_ave_pad", "pool_global", "pool_max_ceil", "lrn_across", "lrn_within"])
def test_goldens(case):
    from google.protobuf import text_format
    d = golden(case)
    net = d.net_param()
    grad = 0
    for lp in net.layer:
        if lp.type == "Input":
            continue
        layer, bottom, top = build(text_format.MessageToString(lp), [d["in/data"]], num_tops=len(lp.top),
                                   dtype=np.float32)
        layer.Forward(bottom, top)
        for blob, name in zip(top, lp.top):
            np.testing.assert_allclose(blob.data, d["fwd/" + name], rtol=1e-5, atol=1e-6 * np.abs(blob.data).max())
        top[0].diff[...] = d["topdiff/" + lp.top[0]]
        layer.Backward(top, [True], bottom)
        grad = grad + bottom[0].diff
    np.testing.assert_allclose(grad, d["bwd/data"], rtol=1e-4, atol=1e-5 * np.abs(grad).max())


def test_numba_lrn_window_sums_match_numpy():
    if not kernels.HAVE_NUMBA:
        pytest.skip("Numba is not installed")
    for dtype, C, size in [(np.float32, 7, 5), (np.float64, 3, 5), (np.float64, 8, 1), (np.float32, 9, 3)]:
        a = rng.standard_normal((2, C, 17, 19)).astype(dtype)
        for square, factor, start in [(True, 0.3, 1.5), (False, 1.0, 0.0)]:
            for pre_pad in {(size - 1) // 2, size - 1 - (size - 1) // 2, 0}:
                want = lrn.channel_window_sum(a, size, pre_pad, square, factor, start)
                got = lrn.channel_window_sum_fast(a, size, pre_pad, square, factor, start)
                np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                           atol=1e-5 if dtype == np.float32 else 1e-12)
    x = rng.uniform(-2, 2, (2, 8, 16, 16))          # large enough for the Numba path in the layer
    (top,) = forward(lrn_text("ACROSS_CHANNELS", local_size=5, alpha=2.0, beta=0.75), [x])
    np.testing.assert_allclose(top, ref_lrn_across(x, 5, 2.0, 0.75, 1.0), rtol=1e-12)
