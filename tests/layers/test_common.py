"""Common layers: forward against plain loops or hand-worked values, backward against
numerical gradients (float64), Caffe's parameter rules and errors, and the BVLC golden
cases run layer by layer."""
import numpy as np
import pytest

from goldens import golden
from layer_check import build, check_gradient, forward, layer_param
from layer_refs import argmax_reference, broadcast_reference, mvn_reference
from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import create_layer
from pycaffe_lite.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN


def rand(*shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def run(text, bottoms, top_diffs, num_tops=1, propagate=None, seed=None):
    """Forward, set the top diffs, backward; returns (layer, bottom, top)."""
    if seed is not None:
        backend.set_random_seed(seed)
    layer, bottom, top = build(text, bottoms, num_tops)
    layer.forward(bottom, top)
    for t, g in zip(top, top_diffs):
        t.diff[...] = g
    for p in layer.blobs:
        p.diff[...] = 0
    layer.backward(top, propagate or [True] * len(bottom), bottom)
    return layer, bottom, top


def golden_layer(d, name, bottoms, num_tops=1):
    """The golden net's layer `name`, set up on float32 bottoms with the golden parameters."""
    param = next(lp for lp in d.net_param().layer if lp.name == name)
    layer = create_layer(param, TRAIN)
    bottom = []
    for array in bottoms:
        blob = Blob(array.shape, np.float32)
        blob.data[...] = array
        bottom.append(blob)
    top = [Blob((), np.float32) for _ in range(num_tops)]
    layer.SetUp(bottom, top)
    for i, p in enumerate(layer.blobs):
        key = f"param/{name}/{i}"
        if key in d.files:
            p.data[...] = d[key]
    return layer, bottom, top


def assert_golden(actual, expected, tol=1e-4):
    expected = np.asarray(expected, np.float64)
    err = np.abs(np.asarray(actual, np.float64) - expected).max() / (np.abs(expected).max() + 1e-8)
    assert actual.shape == expected.shape and err <= tol, f"relative error {err:.2e}"


# ---- InnerProduct ------------------------------------------------------------------------
def ip_text(num_output, extra=""):
    return (f'type: "InnerProduct" inner_product_param {{ num_output: {num_output} {extra} '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }')


@pytest.mark.parametrize("extra, shape, top_shape, weight_shape", [
    ("", (2, 3, 2), (2, 4), (4, 6)),
    ("axis: 2", (2, 3, 2, 2), (2, 3, 4), (4, 4)),
    ("axis: -1", (2, 3, 5), (2, 3, 4), (4, 5)),
    ("transpose: true", (2, 3, 2), (2, 4), (6, 4)),
    ("axis: 2 transpose: true", (2, 3, 2, 2), (2, 3, 4), (4, 4)),
    ("bias_term: false", (3, 5), (3, 4), (4, 5)),
])
def test_inner_product_forward_and_gradient(extra, shape, top_shape, weight_shape):
    text = ip_text(4, extra)
    x = rand(*shape)
    backend.set_random_seed(1)
    layer, bottom, top = build(text, [x])
    assert top[0].shape == top_shape and layer.blobs[0].shape == weight_shape
    layer.forward(bottom, top)
    w = layer.blobs[0].data
    if "transpose" in extra:
        w = w.T
    b = layer.blobs[1].data if len(layer.blobs) > 1 else np.zeros(4)
    rows = x.reshape(int(np.prod(top_shape[:-1])), -1)
    expected = np.array([[sum(r[k] * w[n, k] for k in range(r.size)) + b[n] for n in range(4)] for r in rows])
    np.testing.assert_allclose(top[0].data, expected.reshape(top_shape), rtol=1e-12)
    assert len(layer.blobs) == (1 if "bias_term: false" in extra else 2)
    backend.set_random_seed(1)
    check_gradient(text, [x])


def test_inner_product_default_fillers_are_zero_and_bad_sizes_raise():
    layer, bottom, top = build('type: "InnerProduct" inner_product_param { num_output: 3 }', [rand(2, 4)])
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()
    bottom[0].reshape(2, 5)
    with pytest.raises(ValueError, match="incompatible"):
        layer.reshape(bottom, top)
    with pytest.raises(ValueError, match="num_output"):
        build('type: "InnerProduct"', [rand(2, 4)])


def test_inner_product_skips_frozen_parameter_gradients():
    layer, bottom, top = build(ip_text(3), [rand(2, 4)])
    layer.param_propagate_down = [False, True]
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    assert not layer.blobs[0].diff.any()
    np.testing.assert_allclose(layer.blobs[1].diff, [2, 2, 2])


def test_inner_product_golden():
    d = golden("innerproduct_axis")
    for name in ("ip_axis2", "ip_t", "ip_axis2_t"):
        layer, bottom, top = golden_layer(d, name, [d["in/data"]])
        layer.forward(bottom, top)
        assert_golden(top[0].data, d[f"fwd/{name}"])
        top[0].diff[...] = d[f"topdiff/{name}"]
        layer.backward(top, [True], bottom)
        for i in range(2):
            assert_golden(layer.blobs[i].diff, d[f"pgrad/{name}/{i}"])
    # bwd/data is the sum over the three layers
    total = 0
    for name in ("ip_axis2", "ip_t", "ip_axis2_t"):
        layer, bottom, top = golden_layer(d, name, [d["in/data"]])
        layer.forward(bottom, top)
        top[0].diff[...] = d[f"topdiff/{name}"]
        layer.backward(top, [True], bottom)
        total = total + bottom[0].diff
    assert_golden(total, d["bwd/data"])


# ---- Softmax -------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, 0, -1, 2])
def test_softmax(axis):
    x = rand(2, 3, 4, seed=2, low=-3, high=3)
    text = f'type: "Softmax" softmax_param {{ axis: {axis} }}'
    (y,) = forward(text, [x])
    moved = np.moveaxis(x, axis, -1)
    expected = np.empty_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        e = [np.exp(v) for v in moved[idx]]
        expected[idx] = [v / sum(e) for v in e]
    np.testing.assert_allclose(y, np.moveaxis(expected, -1, axis), rtol=1e-12)
    check_gradient(text, [x])


def test_softmax_default_axis_is_1_and_large_inputs_are_stable():
    x = np.array([[1000.0, 1000.0], [-1000.0, 0.0]])
    (y,) = forward('type: "Softmax"', [x])
    np.testing.assert_allclose(y, [[0.5, 0.5], [0.0, 1.0]])


# ---- Concat / Slice ------------------------------------------------------------------------
@pytest.mark.parametrize("param, axis", [("", 1), ("concat_param { axis: 2 }", 2),
                                         ("concat_param { axis: -3 }", 0),
                                         ("concat_param { concat_dim: 2 }", 2)])
def test_concat(param, axis):
    shapes = [[2, 3, 2], [2, 3, 2], [2, 3, 2]]
    for s, extra in zip(shapes, (1, 2, 3)):
        s[axis] = extra
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    text = f'type: "Concat" {param}'
    (y,) = forward(text, xs)
    expected_shape = list(shapes[0])
    expected_shape[axis] = 6
    assert y.shape == tuple(expected_shape)
    offset = 0
    for x in xs:
        n = x.shape[axis]
        np.testing.assert_array_equal(np.take(y, range(offset, offset + n), axis=axis), x)
        offset += n
    check_gradient(text, xs)


def test_concat_single_bottom_shares_and_rules():
    x = rand(2, 3)
    layer, bottom, top = run('type: "Concat"', [x], [np.full((2, 3), 2.0)])
    assert top[0].data is bottom[0].data
    np.testing.assert_array_equal(bottom[0].diff, 2.0)
    with pytest.raises(ValueError, match="same shape except"):
        forward('type: "Concat"', [rand(2, 3, 4), rand(2, 3, 5)])
    with pytest.raises(ValueError, match="same shape except"):
        forward('type: "Concat"', [rand(2, 3), rand(2, 3, 1)])
    with pytest.raises(ValueError, match="not both"):
        forward('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [x, x])
    with pytest.raises(ValueError, match="out of range"):
        forward('type: "Concat" concat_param { axis: 2 }', [x, x])


def test_concat_respects_propagate_down():
    layer, bottom, top = run('type: "Concat"', [rand(2, 1), rand(2, 2)], [np.ones((2, 3))],
                             propagate=[False, True])
    assert not bottom[0].has_diff
    np.testing.assert_array_equal(bottom[1].diff, np.ones((2, 2)))


@pytest.mark.parametrize("param, num_tops, sizes, axis", [
    ("slice_param { slice_point: 1 slice_point: 4 }", 3, [1, 3, 2], 1),
    ("", 2, [3, 3], 1),
    ("slice_param { axis: 0 }", 2, [1, 1], 0),
    ("slice_param { axis: -1 slice_point: 2 }", 2, [2, 2], 2),
    ("slice_param { slice_dim: 2 slice_point: 1 }", 2, [1, 3], 2),
    ("slice_param { slice_point: 6 }", 2, [6, 0], 1),
])
def test_slice(param, num_tops, sizes, axis):
    x = rand(2, 6, 4)
    text = f'type: "Slice" {param}'
    ys = forward(text, [x], num_tops=num_tops)
    assert [y.shape[axis] for y in ys] == sizes
    offset = 0
    for y, n in zip(ys, sizes):
        np.testing.assert_array_equal(y, np.take(x, range(offset, offset + n), axis=axis))
        offset += n
    check_gradient(text, [x], num_tops=num_tops)


@pytest.mark.parametrize("param, num_tops, message", [
    ("slice_param { slice_point: 2 }", 3, "one fewer"),
    ("", 4, "evenly"),
    ("slice_param { slice_point: 3 slice_point: 2 }", 3, "increasing"),
    ("slice_param { slice_point: 7 }", 2, "past"),
    ("slice_param { axis: 1 slice_dim: 1 }", 2, "not both"),
])
def test_slice_rules(param, num_tops, message):
    with pytest.raises(ValueError, match=message):
        forward(f'type: "Slice" {param}', [rand(2, 6)], num_tops=num_tops)


def test_slice_single_top_shares():
    layer, bottom, top = run('type: "Slice"', [rand(2, 3)], [np.full((2, 3), 3.0)])
    assert top[0].data is bottom[0].data
    np.testing.assert_array_equal(bottom[0].diff, 3.0)


# ---- Eltwise -------------------------------------------------------------------------------
def test_eltwise_forward_by_hand():
    a = np.array([[1.0, -2.0, 3.0, 0.5]])
    b = np.array([[4.0, -2.0, -1.0, 0.5]])
    c = np.array([[2.0, 5.0, -3.0, 0.5]])
    (s,) = forward('type: "Eltwise"', [a, b])
    assert s.tolist() == [[5.0, -4.0, 2.0, 1.0]]
    (s,) = forward('type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }', [a, b])
    assert s.tolist() == [[-7.5, 3.0, 3.5, -0.75]]
    (p,) = forward('type: "Eltwise" eltwise_param { operation: PROD }', [a, b, c])
    assert p.tolist() == [[8.0, 20.0, 9.0, 0.125]]
    (m,) = forward('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    assert m.tolist() == [[4.0, 5.0, 3.0, 0.5]]


@pytest.mark.parametrize("param", ["", "eltwise_param { coeff: 1 coeff: -2 coeff: 3 }",
                                   "eltwise_param { coeff: 0.5 coeff: 1 coeff: 1 }"])
def test_eltwise_sum_in_place_equals_the_sum_into_a_new_top(param):
    xs = [rand(2, 3, seed=s) for s in (1, 2, 3)]
    (expected,) = forward(f'type: "Eltwise" {param}', xs)
    layer = create_layer(layer_param(f'type: "Eltwise" {param}'), caffe_pb2.TRAIN)
    blobs = [Blob(x.shape, np.float64) for x in xs]
    for blob, x in zip(blobs, xs):
        blob.data[...] = x
    layer.SetUp(blobs, [blobs[1]])                 # the top is the second bottom
    layer.forward(blobs, [blobs[1]])
    np.testing.assert_array_equal(blobs[1].data, expected)


def test_eltwise_max_ties_follow_caffe():
    # Caffe: bottom 0 beats bottom 1 only when strictly larger; later bottoms only when strictly
    # larger than the running max.  So a tie of all three goes to bottom 1.
    a = np.array([[1.0, 2.0, 0.0]])
    b = np.array([[1.0, 1.0, 0.0]])
    c = np.array([[1.0, 2.0, 0.0]])
    layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c], [np.ones((1, 3))])
    assert bottom[0].diff.tolist() == [[0.0, 1.0, 0.0]]
    assert bottom[1].diff.tolist() == [[1.0, 0.0, 1.0]]
    assert bottom[2].diff.tolist() == [[0.0, 0.0, 0.0]]


@pytest.mark.parametrize("param, n", [
    ("", 2), ("eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 }", 3),
    ("eltwise_param { operation: PROD }", 3), ("eltwise_param { operation: PROD stable_prod_grad: false }", 3),
    ("eltwise_param { operation: MAX }", 3), ("eltwise_param { operation: MAX }", 2),
])
def test_eltwise_gradient(param, n):
    xs = [rand(2, 3, 2, seed=i, low=0.3, high=2.0) * np.where(rand(2, 3, 2, seed=9 + i) > 0, 1, -1)
          for i in range(n)]
    check_gradient(f'type: "Eltwise" {param}', xs)


def test_eltwise_rules():
    x = rand(2, 3)
    with pytest.raises(ValueError, match="one coefficient per bottom"):
        forward('type: "Eltwise" eltwise_param { coeff: 1 }', [x, x])
    with pytest.raises(ValueError, match="only takes coefficients for summation"):
        forward('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [x, x])
    with pytest.raises(ValueError, match="one shape"):
        forward('type: "Eltwise"', [x, rand(3, 2)])
    with pytest.raises(ValueError, match="at least 2 bottom"):
        forward('type: "Eltwise"', [x])


def test_eltwise_concat_slice_golden():
    d = golden("eltwise_concat_slice")
    a, b, c = d["in/a"], d["in/b"], d["in/c"]
    grads = {k: np.zeros(a.shape, np.float64) for k in "abc"}
    ran = {}

    def layer_run(name, ins, names, num_tops=1, tops_diff=None):
        layer, bottom, top = golden_layer(d, name, ins, num_tops)
        layer.forward(bottom, top)
        ran[name] = (layer, bottom, top)
        return [t.data for t in top]

    esum, = layer_run("esum", [a, b], "ab")
    eprod, = layer_run("eprod", [a, b, c], "abc")
    emax, = layer_run("emax", [a, b, c], "abc")
    cat, = layer_run("cat", [esum, eprod, emax], None)
    s0, s1, s2 = layer_run("slice", [cat], None, num_tops=3)
    cat2, = layer_run("cat2", [a, b], "ab")
    for name, value in (("esum", esum), ("eprod", eprod), ("emax", emax), ("cat", cat), ("s0", s0),
                        ("s1", s1), ("s2", s2), ("cat2", cat2)):
        assert_golden(value, d[f"fwd/{name}"])

    def back(name, top_diffs):
        layer, bottom, top = ran[name]
        for t, g in zip(top, top_diffs):
            t.diff[...] = g
        layer.backward(top, [True] * len(bottom), bottom)
        return [blob.diff for blob in bottom]

    cat_diff, = back("slice", [d["topdiff/s0"], d["topdiff/s1"], d["topdiff/s2"]])
    esum_d, eprod_d, emax_d = back("cat", [cat_diff])
    for name, diff, inputs in (("esum", esum_d, "ab"), ("eprod", eprod_d, "abc"), ("emax", emax_d, "abc"),
                               ("cat2", d["topdiff/cat2"], "ab")):
        for key, g in zip(inputs, back(name, [diff])):
            grads[key] += g
    for key in "abc":
        assert_golden(grads[key], d[f"bwd/{key}"])


# ---- Flatten / Reshape ---------------------------------------------------------------------
@pytest.mark.parametrize("param, top_shape", [
    ("", (2, 24)), ("flatten_param { axis: 2 }", (2, 3, 8)), ("flatten_param { axis: 0 end_axis: 1 }", (6, 2, 4)),
    ("flatten_param { axis: -2 end_axis: -1 }", (2, 3, 8)), ("flatten_param { axis: 1 end_axis: 1 }", (2, 3, 2, 4)),
])
def test_flatten(param, top_shape):
    x = rand(2, 3, 2, 4)
    text = f'type: "Flatten" {param}'
    layer, bottom, top = run(text, [x], [rand(*top_shape, seed=3)])
    assert top[0].shape == top_shape
    np.testing.assert_array_equal(top[0].data, x.reshape(top_shape))
    np.testing.assert_array_equal(bottom[0].diff, rand(*top_shape, seed=3).reshape(x.shape))
    check_gradient(text, [x])


@pytest.mark.parametrize("param, top_shape", [
    ("shape { dim: 0 dim: -1 }", (2, 24)),
    ("shape { dim: -1 dim: 4 }", (12, 4)),
    ("shape { dim: 4 dim: 0 dim: 2 dim: -1 }", (4, 3, 2, 2)),
    ("shape { dim: 0 dim: 0 dim: 8 }", (2, 3, 8)),
    ("axis: 1 num_axes: 1 shape { dim: 3 dim: 1 }", (2, 3, 1, 2, 4)),
    ("axis: -1 num_axes: 0 shape { dim: 1 dim: 1 }", (2, 3, 2, 4, 1, 1)),
    ("axis: -2 shape { dim: 2 dim: 2 }", (2, 3, 2, 2, 2)),
    ("axis: 1 num_axes: 0 shape { dim: 1 }", (2, 1, 3, 2, 4)),
    ("axis: 2 shape { dim: -1 }", (2, 3, 8)),
    ("shape { }", ()),
])
def test_reshape(param, top_shape):
    x = rand(2, 3, 2, 4) if top_shape != () else np.array([[[5.0]]])
    text = f'type: "Reshape" reshape_param {{ {param} }}'
    (y,) = forward(text, [x])
    assert y.shape == top_shape
    np.testing.assert_array_equal(y, x.reshape(top_shape))
    check_gradient(text, [x])


@pytest.mark.parametrize("param, message", [
    ("shape { dim: -1 dim: -1 }", "multiple -1"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no\\s+corresponding bottom axis"),
    ("shape { dim: 5 dim: -1 }", "divisible"),
    ("shape { dim: 5 }", "count must match"),
    ("axis: 4 shape { dim: 1 }", "out of range"),
    ("axis: 1 num_axes: 4 shape { dim: 1 }", "out of range"),
])
def test_reshape_rules(param, message):
    with pytest.raises(ValueError, match=message):
        forward(f'type: "Reshape" reshape_param {{ {param} }}', [rand(2, 3, 4)])


@pytest.mark.parametrize("type_", ["Flatten", "Reshape"])
def test_view_layers_refuse_in_place(type_):
    layer = create_layer(layer_param(f'type: "{type_}"'), TRAIN)
    blob = Blob((2, 3), np.float64)
    with pytest.raises(ValueError, match="in-place"):
        layer.SetUp([blob], [blob])


# ---- MVN -----------------------------------------------------------------------------------
@pytest.mark.parametrize("param, kw", [
    ("", {}), ("mvn_param { normalize_variance: false }", {"normalize_variance": False}),
    ("mvn_param { across_channels: true }", {"across_channels": True}),
    ("mvn_param { across_channels: true normalize_variance: false }",
     {"across_channels": True, "normalize_variance": False}),
    ("mvn_param { eps: 0.1 }", {"eps": float(np.float32(0.1))}),
])
def test_mvn(param, kw):
    x = rand(2, 3, 2, 3, low=-2, high=3)
    text = f'type: "MVN" {param}'
    (y,) = forward(text, [x])
    np.testing.assert_allclose(y, mvn_reference(x, **kw), rtol=1e-10, atol=1e-12)
    if "eps: 0.1" not in param:   # Caffe's backward leaves out eps's own small term
        check_gradient(text, [x], rtol=1e-4)


def test_mvn_backward_is_caffes_formula_with_eps():
    x, g = rand(2, 2, 5, low=-2, high=3), rand(2, 2, 5, seed=4)
    layer, bottom, top = run('type: "MVN" mvn_param { eps: 0.1 }', [x], [g])
    y = top[0].data.reshape(4, 5)
    gg = g.reshape(4, 5)
    std = x.reshape(4, 5).std(axis=1, keepdims=True) + np.float32(0.1)
    expected = (gg - gg.mean(1, keepdims=True) - y * (gg * y).mean(1, keepdims=True)) / std
    np.testing.assert_allclose(bottom[0].diff, expected.reshape(x.shape), rtol=1e-12)


# ---- Embed ---------------------------------------------------------------------------------
EMBED = ('type: "Embed" embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } '
         'bias_filler { type: "gaussian" } %s }')


@pytest.mark.parametrize("bias", ["", "bias_term: false"])
def test_embed(bias):
    index = np.array([[0.0, 4.0, 2.0], [2.0, 2.0, 1.0]])
    text = EMBED % bias
    backend.set_random_seed(2)
    layer, bottom, top = build(text, [index])
    assert layer.blobs[0].shape == (5, 3) and len(layer.blobs) == (1 if bias else 2)
    layer.forward(bottom, top)
    w = layer.blobs[0].data
    b = layer.blobs[1].data if not bias else np.zeros(3)
    expected = np.array([[w[int(i)] + b for i in row] for row in index])
    assert top[0].shape == (2, 3, 3)
    np.testing.assert_allclose(top[0].data, expected)
    backend.set_random_seed(2)
    check_gradient(text, [index], check_bottoms=[])


def test_embed_gradient_adds_repeated_rows_and_refuses_the_input():
    index = np.array([1.0, 1.0, 3.0])
    g = np.arange(9.0).reshape(3, 3)
    layer, bottom, top = run(EMBED % "", [index], [g], propagate=[False])
    expected = np.zeros((5, 3))
    expected[1] = g[0] + g[1]
    expected[3] = g[2]
    np.testing.assert_allclose(layer.blobs[0].diff, expected)
    np.testing.assert_allclose(layer.blobs[1].diff, g.sum(0))
    assert not layer.allow_force_backward(0)
    with pytest.raises(ValueError, match="can't backpropagate"):
        layer.backward(top, [True], bottom)


@pytest.mark.parametrize("values", [[0.0, 5.0], [-1.0], [1.5]])
def test_embed_rejects_bad_indices(values):
    with pytest.raises(ValueError, match="integer indices"):
        forward(EMBED % "", [np.array(values)])


# ---- Tile ----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis, tiles", [(1, 2), (0, 3), (2, 1), (-1, 2)])
def test_tile(axis, tiles):
    x = rand(2, 3, 2)
    text = f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}'
    (y,) = forward(text, [x])
    a = axis % 3
    outer = int(np.prod(x.shape[:a]))
    blocks = x.reshape(outer, -1)
    expected = np.stack([np.concatenate([blocks[o]] * tiles) for o in range(outer)])
    shape = list(x.shape)
    shape[a] *= tiles
    np.testing.assert_array_equal(y, expected.reshape(shape))
    check_gradient(text, [x])


def test_tile_rules():
    with pytest.raises(ValueError, match="positive"):
        forward('type: "Tile" tile_param { tiles: 0 }', [rand(2, 3)])
    with pytest.raises(ValueError, match="tiles"):
        forward('type: "Tile"', [rand(2, 3)])


# ---- Reduction -----------------------------------------------------------------------------
OPS = {"SUM": lambda v: sum(v), "ASUM": lambda v: sum(abs(a) for a in v),
       "SUMSQ": lambda v: sum(a * a for a in v), "MEAN": lambda v: sum(v) / len(v)}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("axis, coeff", [(0, 1.0), (1, 2.0), (-1, -0.5), (2, 1.0)])
def test_reduction(op, axis, coeff):
    x = rand(2, 3, 4, seed=3, low=-2, high=2)
    x[np.abs(x) < 0.05] = 0.3      # away from |x|'s kink
    text = f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}'
    (y,) = forward(text, [x])
    a = axis % 3
    rows = x.reshape(int(np.prod(x.shape[:a])), -1)
    expected = np.array([coeff * OPS[op](list(r)) for r in rows]).reshape(x.shape[:a])
    assert y.shape == x.shape[:a]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    check_gradient(text, [x])


def test_reduction_default_is_a_sum_to_a_scalar():
    (y,) = forward('type: "Reduction"', [np.array([[1.0, 2.0], [3.0, -4.0]])])
    assert y.shape == () and float(y) == 2.0


# ---- ArgMax --------------------------------------------------------------------------------
def test_argmax_by_hand_with_caffes_tie_order():
    x = np.array([[[3.0, 1.0, 3.0, 2.0]], [[0.0, 5.0, -1.0, 5.0]]])    # (2, 1, 4)
    (y,) = forward('type: "ArgMax"', [x])
    assert y.shape == (2, 1, 1) and y.ravel().tolist() == [2.0, 3.0]   # ties: larger index
    (y,) = forward('type: "ArgMax" argmax_param { top_k: 3 }', [x])
    assert y.tolist() == [[[2.0, 0.0, 3.0]], [[3.0, 1.0, 0.0]]]
    (y,) = forward('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x])
    assert y.shape == (2, 2, 2)
    assert y.tolist() == [[[2.0, 0.0], [3.0, 3.0]], [[3.0, 1.0], [5.0, 5.0]]]


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("k", [1, 2])
def test_argmax_along_an_axis(axis, k):
    x = np.round(rand(3, 4, 5, seed=5) * 3)          # rounding makes ties
    idx, val = argmax_reference(x, k, axis)
    (y,) = forward(f'type: "ArgMax" argmax_param {{ axis: {axis} top_k: {k} }}', [x])
    np.testing.assert_array_equal(y, idx)
    (y,) = forward(f'type: "ArgMax" argmax_param {{ axis: {axis} top_k: {k} out_max_val: true }}', [x])
    np.testing.assert_array_equal(y, val)


def test_argmax_shapes_rules_and_no_backward():
    assert forward('type: "ArgMax"', [rand(2, 3, 4, 5)])[0].shape == (2, 1, 1, 1)
    assert forward('type: "ArgMax" argmax_param { out_max_val: true top_k: 3 }',
                   [rand(2, 3, 4, 5)])[0].shape == (2, 2, 3, 1)
    assert forward('type: "ArgMax"', [rand(2, 6)])[0].shape == (2, 1, 1)
    x = rand(2, 3, 2)
    (y,) = forward('type: "ArgMax" argmax_param { top_k: 2 }', [x])
    flat = x.reshape(2, -1)
    np.testing.assert_array_equal(y[:, 0], np.argsort(-flat, axis=1)[:, :2])
    with pytest.raises(ValueError, match="top_k"):
        forward('type: "ArgMax" argmax_param { top_k: 7 }', [x])
    with pytest.raises(ValueError, match="top_k"):
        forward('type: "ArgMax" argmax_param { axis: 1 top_k: 4 }', [x])
    layer, bottom, top = build('type: "ArgMax"', [x])
    layer.forward(bottom, top)
    with pytest.raises(NotImplementedError):
        layer.backward(top, [True], bottom)


# ---- Filter / BatchReindex -----------------------------------------------------------------
def test_filter():
    x, z = rand(4, 2, 3), rand(4, 5, seed=1)
    selector = np.array([[1.0], [0.0], [2.0], [0.0]])
    layer, bottom, top = build('type: "Filter"', [x, z, selector], num_tops=2)
    assert top[0].shape == (4, 2, 3) and top[1].shape == (4, 5)      # Caffe's first reshape: all items
    layer.reshape(bottom, top)
    assert top[0].shape == (2, 2, 3)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, x[[0, 2]])
    np.testing.assert_array_equal(top[1].data, z[[0, 2]])
    top[0].diff[...] = 1
    top[1].diff[...] = 2
    layer.backward(top, [True, True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.array([1, 0, 1, 0])[:, None, None] * np.ones((4, 2, 3)))
    np.testing.assert_array_equal(bottom[1].diff, np.array([2, 0, 2, 0])[:, None] * np.ones((4, 5)))
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)
    with pytest.raises(ValueError, match="selector"):
        layer.backward(top, [True, True, True], bottom)
    check_gradient('type: "Filter"', [x, z, selector], num_tops=2, check_bottoms=[0, 1])


def test_filter_forward_follows_a_new_selector_and_checks_shapes():
    x = rand(3, 2)
    layer, bottom, top = build('type: "Filter"', [x, np.array([1.0, 1.0, 1.0])])
    bottom[1].data[...] = [0, 0, 1]
    layer.forward(bottom, top)                     # no reshape call in between
    np.testing.assert_array_equal(top[0].data, x[[2]])
    bottom[1].data[...] = 0
    layer.forward(bottom, top)
    assert top[0].shape == (0, 2)
    with pytest.raises(ValueError, match="singletons|axes after the first"):
        forward('type: "Filter"', [x, np.ones((3, 2))])
    with pytest.raises(ValueError, match="first\\s+dimension"):
        forward('type: "Filter"', [x, np.ones(2)])
    with pytest.raises(ValueError, match="one top per"):
        forward('type: "Filter"', [x, np.ones(3)], num_tops=2)


def test_batch_reindex():
    x = rand(3, 2, 2)
    index = np.array([2.0, 0.0, 2.0, 2.0])
    g = rand(4, 2, 2, seed=8)
    layer, bottom, top = run('type: "BatchReindex"', [x, index], [g], propagate=[True, False])
    np.testing.assert_array_equal(top[0].data, x[[2, 0, 2, 2]])
    expected = np.zeros_like(x)
    for i, j in enumerate([2, 0, 2, 2]):
        expected[j] += g[i]
    np.testing.assert_allclose(bottom[0].diff, expected)
    with pytest.raises(ValueError, match="index input"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)
    check_gradient('type: "BatchReindex"', [x, index], check_bottoms=[0])
    with pytest.raises(ValueError, match="\\[0, 3\\)"):
        forward('type: "BatchReindex"', [x, np.array([3.0])])
    with pytest.raises(ValueError, match="1-D"):
        forward('type: "BatchReindex"', [x, np.zeros((1, 1))])


# ---- Parameter -----------------------------------------------------------------------------
def test_parameter():
    text = 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'
    layer, bottom, top = build(text, [])
    assert layer.blobs[0].shape == (2, 3) and top[0].shape == (2, 3) and not layer.blobs[0].data.any()
    layer.blobs[0].data[...] = rand(2, 3)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data)
    top[0].diff[...] = 1.5
    layer.backward(top, [], bottom)
    layer.backward(top, [], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, 3.0)
    check_gradient(text, [])


# ---- Scale / Bias --------------------------------------------------------------------------
SCALE_CASES = [   # (scale_param, operand shape, axis it lines up with)
    ("", (3,), 1), ("axis: 0 num_axes: 2", (2, 3), 0), ("num_axes: -1", (3, 2, 2), 1),
    ("num_axes: 0", (), 0), ("axis: -1", (2,), 3), ("axis: 1 num_axes: 2", (3, 2), 1),
]


@pytest.mark.parametrize("param, shape, axis", SCALE_CASES)
def test_scale_learned(param, shape, axis):
    x = rand(2, 3, 2, 2)
    text = f'type: "Scale" scale_param {{ {param} filler {{ type: "uniform" min: -2 max: 2 }} }}'
    backend.set_random_seed(6)
    layer, bottom, top = build(text, [x])
    assert layer.blobs[0].shape == shape and len(layer.blobs) == 1
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, broadcast_reference(x, layer.blobs[0].data, axis, np.multiply))
    backend.set_random_seed(6)
    check_gradient(text, [x])


@pytest.mark.parametrize("param, shape, axis", SCALE_CASES)
def test_scale_with_bias_and_two_bottoms(param, shape, axis):
    x, s = rand(2, 3, 2, 2), rand(*shape, seed=3, low=0.5, high=2)
    text = f'type: "Scale" scale_param {{ {param} bias_term: true bias_filler {{ type: "uniform" }} }}'
    backend.set_random_seed(7)
    layer, bottom, top = build(text, [x, s])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == shape
    layer.forward(bottom, top)
    b = layer.blobs[0].data
    expected = broadcast_reference(broadcast_reference(x, s, axis, np.multiply), b, axis, np.add)
    np.testing.assert_allclose(top[0].data, expected)
    backend.set_random_seed(7)
    check_gradient(text, [x, s])


def test_scale_default_fillers_and_learned_bias():
    layer, bottom, top = build('type: "Scale" scale_param { bias_term: true }', [rand(2, 3, 2)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0].data, 1.0)
    np.testing.assert_array_equal(layer.blobs[1].data, 0.0)
    check_gradient('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } '
                   'bias_filler { type: "gaussian" } }', [rand(2, 3, 2)])


def test_scale_in_place_keeps_each_pass_input_for_its_gradient():
    """The copy of x an in-place layer keeps is reused across passes, and holds the latest x."""
    text = 'type: "Scale" scale_param { filler { type: "uniform" min: 1 max: 2 } }'
    layer = create_layer(layer_param(text), TRAIN)
    blob = Blob((2, 3, 2), np.float64)
    layer.SetUp([blob], [blob])
    g = rand(2, 3, 2, seed=7)
    kept = None
    for seed in (1, 2):
        x = rand(2, 3, 2, seed=seed)
        blob.data[...] = x
        layer.forward([blob], [blob])
        assert kept is None or layer._x is kept                 # the same buffer, not a new copy
        kept = layer._x
        np.testing.assert_array_equal(kept, x)                 # not the top, which overwrote x
    layer.blobs[0].diff[...] = 0
    blob.diff[...] = g
    layer.backward([blob], [True], [blob])
    expected = (g * x).sum(axis=(0, 2))
    np.testing.assert_allclose(layer.blobs[0].diff, expected)


def test_scale_in_place_and_rules():
    x, g = rand(2, 3, 2), rand(2, 3, 2, seed=5)
    text = 'type: "Scale" scale_param { bias_term: true filler { type: "uniform" min: 1 max: 2 } }'
    backend.set_random_seed(1)
    ref_layer, ref_bottom, ref_top = run(text, [x], [g])
    backend.set_random_seed(1)
    layer = create_layer(layer_param(text), TRAIN)
    blob = Blob(x.shape, np.float64)
    blob.data[...] = x
    layer.SetUp([blob], [blob])
    layer.forward([blob], [blob])
    np.testing.assert_allclose(blob.data, ref_top[0].data)
    blob.diff[...] = g
    layer.backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, ref_bottom[0].diff)
    for p, q in zip(layer.blobs, ref_layer.blobs):
        np.testing.assert_allclose(p.diff, q.diff)
    with pytest.raises(ValueError, match="does not match"):
        forward('type: "Scale"', [rand(2, 3), rand(2)])
    with pytest.raises(ValueError, match="extends past"):
        forward('type: "Scale" scale_param { axis: 1 num_axes: 3 }', [rand(2, 3)])


@pytest.mark.parametrize("param, shape, axis", SCALE_CASES)
def test_bias(param, shape, axis):
    x = rand(2, 3, 2, 2)
    text = f'type: "Bias" bias_param {{ {param} filler {{ type: "uniform" min: -2 max: 2 }} }}'
    backend.set_random_seed(6)
    layer, bottom, top = build(text, [x])
    assert layer.blobs[0].shape == shape
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, broadcast_reference(x, layer.blobs[0].data, axis, np.add))
    backend.set_random_seed(6)
    check_gradient(text, [x])
    b = rand(*shape, seed=2)
    (y,) = forward(f'type: "Bias" bias_param {{ {param} }}', [x, b])
    np.testing.assert_allclose(y, broadcast_reference(x, b, axis, np.add))
    check_gradient(f'type: "Bias" bias_param {{ {param} }}', [x, b])


def test_bias_default_filler_is_zero():
    layer, _, _ = build('type: "Bias"', [rand(2, 3)])
    assert layer.blobs[0].shape == (3,) and not layer.blobs[0].data.any()
