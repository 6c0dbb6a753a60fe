"""The convolution engines against a plain direct-loop convolution, and against each other.

The reference is Caffe's definition written as loops over output pixels and
kernel offsets (float64).  im2col must match it to rounding; FFT and Winograd
F(2x2) must agree with im2col to 1e-4 relative in float32, Winograd F(4x4) to
1e-3, forward and both backwards.  The Numba kernels are checked against the
plain array versions they replace (which CuPy runs).
"""
import types

import numpy as np
import pytest

from pycaffe_lite.conv import (ConvGeometry, backward, choice, fft, forward, im2col, winograd,
                               workspace)
from pycaffe_lite import kernels as _kernels
from pycaffe_lite.kernels import conv as conv_kernels
from pycaffe_lite.conv.engines import ENGINES, get_engine


# ---------------------------------------------------------------------------
# the reference: Caffe's convolution as plain loops
# ---------------------------------------------------------------------------
def conv_direct(x, w, b, geom):
    """y[n,k,ho,wo] = b[k] + sum_{c in group(k), i, j} w[k,c,i,j] x[n,c,ho*s-p+i*d, wo*s-p+j*d]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    g = geom.group
    kg = k // g
    (sh, sw), (ph, pw), (dh, dw) = geom.stride, geom.pad, geom.dilation
    ho, wo = geom.output_hw(h, wd)
    y = np.zeros((n, k, ho, wo))
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r, q = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                    if 0 <= r < h and 0 <= q < wd:
                        for gi in range(g):
                            xs = x[:, gi * cg:(gi + 1) * cg, r, q]            # (n, cg)
                            ws = w[gi * kg:(gi + 1) * kg, :, i, j]            # (kg, cg)
                            y[:, gi * kg:(gi + 1) * kg, oh, ow] += xs @ ws.T
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv_direct_backward(x, w, dy, geom):
    """(dx, dw) of conv_direct by the same loops, transposed."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    g = geom.group
    kg = k // g
    (sh, sw), (ph, pw), (dh, dw_) = geom.stride, geom.pad, geom.dilation
    ho, wo = dy.shape[2:]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r, q = oh * sh - ph + i * dh, ow * sw - pw + j * dw_
                    if 0 <= r < h and 0 <= q < wd:
                        for gi in range(g):
                            cs, ks = slice(gi * cg, (gi + 1) * cg), slice(gi * kg, (gi + 1) * kg)
                            d = dy[:, ks, oh, ow]                              # (n, kg)
                            dx[:, cs, r, q] += d @ w[ks, :, i, j]
                            dw[ks, :, i, j] += d.T @ x[:, cs, r, q]
    return dx, dw


# (x shape, K, geometry) covering kernel, stride, pad, dilation, group and rectangular cases
GEOMETRIES = [
    ((2, 3, 7, 8), 4, ConvGeometry(3, 1, 1)),
    ((2, 4, 9, 11), 6, ConvGeometry(3, 2, 1, 1, 2)),                   # group, stride, pad
    ((2, 3, 10, 13), 5, ConvGeometry(3, 1, 2, 2)),                     # dilation 2
    ((2, 3, 10, 13), 4, ConvGeometry(3, 2, 1, 3)),                     # dilation 3, stride 2
    ((3, 8, 5, 7), 5, ConvGeometry(1)),                                # 1x1: plain GEMM
    ((2, 6, 6, 7), 4, ConvGeometry(1, 2)),                             # strided 1x1
    ((2, 3, 7, 10), 5, ConvGeometry((1, 3), 1, (0, 1))),               # factorised
    ((2, 3, 7, 10), 4, ConvGeometry((3, 1), (2, 1), (1, 0))),
    ((2, 6, 7, 8), 6, ConvGeometry(3, 1, 1, 1, 6)),                    # depthwise
    ((2, 3, 7, 8), 6, ConvGeometry((3, 2), (1, 2), (1, 0), 1, 3)),     # depthwise, multiplier 2
    ((1, 2, 12, 12), 3, ConvGeometry(5, 3, 2)),
    ((2, 2, 9, 9), 3, ConvGeometry(4, 1, 0)),                          # even kernel
]
IDS = [f"{xs}->{k} {g}" for xs, k, g in GEOMETRIES]


def _data(x_shape, k, geom, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    w_shape = (k, x_shape[1] // geom.group) + geom.kernel
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ho, wo = geom.output_hw(*x_shape[2:])
    dy = rng.standard_normal((x_shape[0], k, ho, wo)).astype(dtype)
    return x, w, b, dy


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(params=[True, False], ids=["numba", "arrays"])
def kernels(request, monkeypatch):
    """Run a test with the Numba kernels and again with the plain array versions."""
    if request.param and not _kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_kernels, "HAVE_NUMBA", request.param)
    monkeypatch.setattr(_kernels, "MIN_WORK", 0)          # the kernels even on tiny arrays
    return request.param


@pytest.fixture
def numba_always(monkeypatch):
    if not _kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_kernels, "MIN_WORK", 0)


# ---------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------
def test_output_size_rounds_down_like_caffe():
    g = ConvGeometry(3, 2, 1)
    assert g.output_hw(9, 10) == (5, 5)                   # (9+2-3)//2+1, (10+2-3)//2+1
    assert ConvGeometry(3, 1, 2, 2).output_hw(10, 13) == (10, 13)
    assert ConvGeometry(3, 2, 1, 3).output_hw(10, 13) == (3, 5)
    assert ConvGeometry(4, 2, 1).deconv_output_hw(5, 7) == (10, 14)  # s(in-1) + k - 2p
    assert ConvGeometry((1, 3), 1, (0, 1)).extent == (1, 3)


def test_geometry_rejects_bad_values():
    with pytest.raises(ValueError, match="nonzero"):
        ConvGeometry(0)
    with pytest.raises(ValueError, match="stride"):
        ConvGeometry(3, 0)
    with pytest.raises(ValueError, match="empty"):
        ConvGeometry(5).output_hw(3, 3)
    with pytest.raises(ValueError, match="do not fit"):
        ConvGeometry(3).check_shapes((1, 4, 5, 5), (2, 3, 3, 3))


# ---------------------------------------------------------------------------
# im2col against the loops (float64: rounding only)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,k,geom", GEOMETRIES, ids=IDS)
def test_im2col_engine_matches_direct_loops(x_shape, k, geom):
    x, w, b, dy = _data(x_shape, k, geom)
    np.testing.assert_allclose(im2col.forward(x, w, b, geom), conv_direct(x, w, b, geom), rtol=1e-12, atol=1e-12)
    dx, dw = im2col.backward(x, w, dy, geom)
    dx_ref, dw_ref = conv_direct_backward(x, w, dy, geom)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    # the halves on their own (a Deconvolution's forward and weight gradient)
    np.testing.assert_allclose(im2col.backward_data(dy, w, geom, x.shape), dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(im2col.backward_weights(x, dy, geom, w.shape), dw_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_shape,k,geom", GEOMETRIES, ids=IDS)
def test_numba_engine_matches_the_array_engine(x_shape, k, geom, monkeypatch):
    """float32, the precision the kernels are compiled for in real use."""
    if not _kernels.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    x, w, b, dy = _data(x_shape, k, geom, np.float32)
    results = []
    for min_work in (0, 1 << 60):                            # Numba kernels, then the arrays
        monkeypatch.setattr(_kernels, "MIN_WORK", min_work)
        results.append((im2col.forward(x, w, b, geom),) + im2col.backward(x, w, dy, geom))
    for got, ref in zip(*results):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,k,geom", GEOMETRIES[:4] + GEOMETRIES[6:8], ids=IDS[:4] + IDS[6:8])
def test_numba_im2col_and_col2im_match_the_array_versions(x_shape, k, geom, numba_always):
    x, _, _, _ = _data(x_shape, k, geom, np.float32)
    cols = im2col.im2col(x, geom)
    ref = im2col.im2col_array(x, geom)
    np.testing.assert_array_equal(cols, ref)
    rng = np.random.default_rng(1)
    c = rng.standard_normal(cols.shape).astype(np.float32)
    np.testing.assert_allclose(im2col.col2im(c, x.shape, geom), im2col.col2im_array(c, x.shape, geom),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,geom", [
    ((2, 3, 13, 13), ConvGeometry(3, 1, 1)),           # AlexNet conv3's "same" rows
    ((2, 2, 4, 5), ConvGeometry(3, 1, (3, 1))),        # Wo == W, padded rows wholly outside
    ((1, 2, 6, 9), ConvGeometry((2, 5), 1, (0, 4), 2)),  # dilated, Wo == W, every column clipped
])
def test_numba_im2col_same_width_rows_match_the_array_version(x_shape, geom, numba_always):
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    assert geom.output_hw(*x_shape[2:])[1] == x_shape[3]            # the contiguous-copy path
    np.testing.assert_array_equal(im2col.im2col(x, geom), im2col.im2col_array(x, geom))


@pytest.mark.parametrize("with_bias", [True, False])
def test_numba_gemm_layout_copies_are_exact_transposes(with_bias, numba_always):
    rng = np.random.default_rng(2)
    ynk = rng.standard_normal((5, 3, 7)).astype(np.float32)        # (K, N, P), as the GEMM writes it
    bias = rng.standard_normal(5).astype(np.float32) if with_bias else None
    out = np.empty((3, 5, 7), np.float32)
    im2col._batch_major(np, ynk, bias, out)
    expected = ynk.transpose(1, 0, 2) + (bias.reshape(1, 5, 1) if with_bias else 0)
    np.testing.assert_array_equal(out, expected)
    back = np.empty_like(ynk)
    im2col._channel_major(np, ynk.transpose(1, 0, 2).copy(), back)
    np.testing.assert_array_equal(back, ynk)


def test_im2col_into_a_strided_view(numba_always):
    geom = ConvGeometry(3, 1, 1)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    top = np.empty((2, 27, 30), np.float32)                 # the Im2col layer's (N, C*k*k, Ho*Wo)
    im2col.im2col(x, geom, out=top.transpose(1, 0, 2))
    np.testing.assert_array_equal(top.transpose(1, 0, 2), im2col.im2col_array(x, geom))


def test_depthwise_kernels_match_array_versions(numba_always):
    geom = ConvGeometry(3, 2, 1, 1, 4)
    x, w, _, _ = _data((2, 4, 9, 8), 8, geom, np.float32)
    ho, wo = geom.output_hw(9, 8)
    y = np.empty((2, 8, ho, wo), np.float32)
    conv_kernels.depthwise_forward(x, w, y, *geom.stride, *geom.pad, *geom.dilation)
    np.testing.assert_allclose(y, im2col.depthwise_forward_array(x, w, geom, np.empty_like(y)), rtol=1e-5,
                               atol=1e-5)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    dx = np.empty_like(x)
    conv_kernels.depthwise_backward_data(dy, w, dx, *geom.stride, *geom.pad, *geom.dilation)
    np.testing.assert_allclose(dx, im2col.depthwise_backward_data_array(dy, w, geom, x.shape, np.empty_like(x)),
                               rtol=1e-5, atol=1e-5)
    dwt = np.empty_like(w)
    conv_kernels.depthwise_backward_weights(x, dy, dwt, *geom.stride, *geom.pad, *geom.dilation)
    np.testing.assert_allclose(dwt, im2col.depthwise_backward_weights_array(x, dy, geom), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# FFT and Winograd agree with im2col
# ---------------------------------------------------------------------------
AGREEMENT = [
    ((2, 3, 10, 13), 5, ConvGeometry(3, 1, 1)),
    ((2, 4, 9, 11), 6, ConvGeometry(3, 1, 1, 1, 2)),           # groups
    ((2, 3, 7, 6), 4, ConvGeometry(3, 1, 0)),                  # no padding, sizes not multiples of 4
    ((1, 4, 6, 9), 2, ConvGeometry(3, 1, (2, 0))),
    ((1, 2, 3, 3), 3, ConvGeometry(3)),                        # a single output pixel
]
FFT_ONLY = [
    ((2, 3, 10, 13), 5, ConvGeometry(3, 1, 2, 2)),             # dilation
    ((2, 4, 20, 23), 6, ConvGeometry(5, 1, 2, 1, 2)),
    ((1, 2, 30, 30), 3, ConvGeometry(9, 1, 4)),                # large kernel
    ((2, 3, 7, 10), 5, ConvGeometry((1, 3), 1, (0, 1))),
]


def _agree(engine, x_shape, k, geom, tol, dtype=np.float32, **engine_kw):
    x, w, b, dy = _data(x_shape, k, geom, dtype)
    y_ref = im2col.forward(x, w, b, geom)
    dx_ref, dw_ref = im2col.backward(x, w, dy, geom)
    ctx = {}
    y = engine.forward(x, w, b, geom, ctx=ctx, **engine_kw)
    dx, dw = engine.backward(x, w, dy, geom, ctx=ctx, **engine_kw)
    assert _rel(y, y_ref) < tol and _rel(dx, dx_ref) < tol and _rel(dw, dw_ref) < tol, \
        (_rel(y, y_ref), _rel(dx, dx_ref), _rel(dw, dw_ref))
    assert _rel(engine.backward_data(dy, w, geom, x.shape, **engine_kw), dx_ref) < tol
    assert _rel(engine.backward_weights(x, dy, geom, w.shape, **engine_kw), dw_ref) < tol


@pytest.mark.parametrize("x_shape,k,geom", AGREEMENT, ids=[str(a[2]) for a in AGREEMENT])
@pytest.mark.parametrize("m,tol", [(2, 1e-4), (4, 1e-3)], ids=["F2", "F4"])
def test_winograd_agrees_with_im2col(x_shape, k, geom, m, tol, kernels):
    _agree(winograd, x_shape, k, geom, tol, m=m)


@pytest.mark.parametrize("x_shape,k,geom", AGREEMENT + FFT_ONLY, ids=[str(a[2]) for a in AGREEMENT + FFT_ONLY])
@pytest.mark.parametrize("tile", [None, 4, (3, 5)], ids=["auto-tile", "tile4", "tile3x5"])
def test_fft_agrees_with_im2col(x_shape, k, geom, tile):
    _agree(fft, x_shape, k, geom, 1e-4, tile=tile)


def test_winograd_float64_is_exact_to_rounding():
    geom = ConvGeometry(3, 1, 1, 1, 2)
    x, w, b, dy = _data((2, 4, 9, 7), 6, geom)
    for m in (2, 4):
        np.testing.assert_allclose(winograd.forward(x, w, b, geom, m=m), conv_direct(x, w, b, geom), rtol=1e-11,
                                   atol=1e-11)


def test_winograd_numba_transforms_match_the_array_versions(numba_always):
    geom = ConvGeometry(3, 1, (1, 2))
    x, w, b, dy = _data((2, 3, 9, 10), 4, geom, np.float32)
    for m in (2, 4):
        bt, _, _ = winograd.matrices(m, np.float32)
        grid = winograd._Plan(x.shape, 4, geom, m, True)
        flat = winograd._Plan(x.shape, 4, geom, m, False)
        v_grid = winograd._input_transform(np, x, grid, bt, workspace.workspace())
        v_flat = winograd.input_transform_array(x, flat, bt)
        # the grid's V has one spare tile per tile row
        v_grid = v_grid.reshape(v_grid.shape[:2] + (-1, grid.n_w))[:, :, :, :grid.ntw]
        np.testing.assert_allclose(v_grid.reshape(v_flat.shape), v_flat, rtol=1e-5, atol=1e-4)


def test_engines_refuse_geometries_they_cannot_run():
    x, w, b, dy = _data((1, 2, 8, 8), 2, ConvGeometry(5))
    with pytest.raises(ValueError, match="3x3"):
        winograd.forward(x, w, b, ConvGeometry(5))
    x, w, b, dy = _data((1, 2, 8, 8), 2, ConvGeometry(3, 2))
    with pytest.raises(ValueError, match="stride 1"):
        fft.forward(x, w, b, ConvGeometry(3, 2))
    with pytest.raises(ValueError, match="cannot run"):
        forward(x, w, b, ConvGeometry(3, 2), engine="winograd4")
    assert not ENGINES["winograd"].supports(ConvGeometry(3, 1, 1, 2))


def test_backward_reuses_forward_transforms_only_while_inputs_are_unchanged(kernels):
    geom = ConvGeometry(3, 1, 1)
    x, w, b, dy = _data((2, 3, 8, 8), 4, geom, np.float32)
    for engine in (get_engine("fft"), get_engine("winograd4")):
        ctx = {}
        engine.forward(x, w, b, geom, ctx=ctx)
        w2 = w * 1.5                                       # a solver step between forward and backward
        x[...] *= -1                                       # and a new batch written in place
        dx, dw = engine.backward(x, w2, dy, geom, ctx=ctx)
        dx_ref, dw_ref = im2col.backward(x, w2, dy, geom)
        assert _rel(dx, dx_ref) < 1e-3 and _rel(dw, dw_ref) < 1e-3


# ---------------------------------------------------------------------------
# the dispatcher, the workspace and the automatic choice
# ---------------------------------------------------------------------------
def test_module_level_forward_backward_with_bias_gradient():
    geom = ConvGeometry(3, 1, 1)
    x, w, b, dy = _data((2, 3, 6, 6), 4, geom)
    y = forward(x, w, b, geom, engine="winograd")
    np.testing.assert_allclose(y, conv_direct(x, w, b, geom), rtol=1e-10, atol=1e-10)
    dx, dw, db = backward(x, w, dy, geom, engine="fft")
    dx_ref, dw_ref = conv_direct_backward(x, w, dy, geom)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(db, dy.sum((0, 2, 3)))
    assert backward(x, w, dy, geom, need_dx=False, need_dw=False)[:2] == (None, None)


def test_workspace_cap_chunks_the_batch_with_the_same_result():
    geom = ConvGeometry(3, 1, 1, 1, 2)
    x, w, b, dy = _data((5, 4, 9, 9), 6, geom)
    y_ref = im2col.forward(x, w, b, geom)
    dx_ref, dw_ref = im2col.backward(x, w, dy, geom)
    ws = workspace.Workspace(limit_bytes=4 * 9 * 9 * (36 + 6) * 8 * 2)    # room for two images
    y = im2col.forward(x, w, b, geom, ws=ws)
    dx, dw = im2col.backward(x, w, dy, geom, ws=ws)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12)
    assert 0 < ws.nbytes() <= ws.limit_bytes
    # no reallocation on the next iteration: the same buffers come back
    before = {k: v.__array_interface__["data"][0] for k, v in ws._buffers.items()}
    im2col.forward(x, w, b, geom, ws=ws)
    assert before == {k: v.__array_interface__["data"][0] for k, v in ws._buffers.items()}


def test_workspace_size_is_reported_and_capped():
    old = workspace.workspace_limit()
    try:
        workspace.set_workspace_limit(1 << 16)
        geom = ConvGeometry(3, 1, 1)
        x, w, b, dy = _data((4, 8, 16, 16), 8, geom, np.float32)
        workspace.release_workspace()
        im2col.forward(x, w, b, geom)
        # one image's columns (8*9*256 floats + the GEMM output) is more than the cap: one at a time
        per_image = ((8 * 9 + 8) * 256 + 8 * 18 * 18) * 4
        assert workspace.workspace_bytes() <= max(1 << 16, per_image) + 1024
    finally:
        workspace.set_workspace_limit(old)
        workspace.release_workspace()


def test_auto_choice_is_timed_once_per_shape_and_listed():
    choice.reset_choices()
    geom = ConvGeometry(3, 1, 1)
    x, w, b, dy = _data((2, 4, 12, 12), 4, geom, np.float32)
    name = choice.choose("conv", x.shape, w.shape, geom, x.dtype)
    assert name in ("im2col", "winograd", "winograd4", "fft")
    chosen = choice.chosen_engines()
    assert list(chosen.values()) == [name]
    key = next(iter(chosen))
    assert "conv 2x4x12x12->4 k3x3 s1 p1" in key and "float32" in key
    assert set(choice.engine_timings()[key]) == {"im2col", "winograd", "winograd4"}
    # cached: a second call times nothing
    choice._TIMINGS.clear()
    assert choice.choose("conv", x.shape, w.shape, geom, x.dtype) == name and not choice.engine_timings()
    # a geometry only im2col can run is decided without timing
    assert choice.choose("conv", x.shape, w.shape, ConvGeometry(3, 2, 1), x.dtype) == "im2col"
    y = forward(x, w, b, geom, engine="auto")
    np.testing.assert_allclose(y, im2col.forward(x, w, b, geom), rtol=1e-3, atol=1e-3)
    choice.reset_choices()
    assert choice.chosen_engines() == {}


def test_candidates_and_enum_resolution():
    assert choice.candidates(ConvGeometry(3, 1, 1), 16) == ["im2col", "winograd", "winograd4"]
    assert choice.candidates(ConvGeometry(3, 1, 2, 2), 16) == ["im2col", "fft"]            # extent 5
    assert choice.candidates(ConvGeometry(5, 1, 2), 16) == ["im2col", "fft"]
    assert choice.candidates(ConvGeometry(3, 2, 1), 16) == ["im2col"]
    assert choice.candidates(ConvGeometry(3, 1, 1, 1, 16), 16) == ["im2col"]       # depthwise
    assert choice.candidates(ConvGeometry(1), 16) == ["im2col"]
    assert [choice.resolve(v) for v in (0, 1, 2, 1000, 1001, 1002, 1003)] == \
        [choice.DEFAULT, "im2col", choice.DEFAULT, "fft", "winograd", "winograd4", choice.AUTO]
    with pytest.raises(ValueError, match="unknown convolution engine"):
        choice.resolve(7)


def test_generated_winograd_codelets_match_their_matrices():
    from pathlib import Path
    text = (Path(_kernels.__file__).parent / winograd.CODELET_FILE).read_text()
    assert text == winograd.codelet_source(), \
        "regenerate: python -c 'from pycaffe_lite.conv import winograd; winograd.write_codelets()'"


def test_a_single_changed_weight_invalidates_kept_transforms():
    """Net surgery between two forwards: one value of a large weight array changes."""
    geom = ConvGeometry(3, 1, 1)
    x, w, b, _ = _data((1, 96, 6, 6), 96, geom, np.float32)          # w has 82944 values
    for engine in (get_engine("winograd4"), get_engine("fft")):
        ctx = {}
        engine.forward(x, w, b, geom, ctx=ctx)
        w2 = w.copy()
        w[7, 11, 2, 1] += 0.5
        y = engine.forward(x, w, b, geom, ctx=ctx)
        assert _rel(y, im2col.forward(x, w, b, geom)) < 1e-3
        w[...] = w2


def test_default_times_only_large_layers_and_inference_times_forward_only(monkeypatch):
    choice.reset_choices()
    geom = ConvGeometry(3, 1, 1)
    x, w, b, dy = _data((2, 4, 12, 12), 4, geom, np.float32)
    macs = geom.macs(x.shape, w.shape[0])
    monkeypatch.setattr(choice, "DEFAULT_MIN_MACS", macs + 1)
    assert choice.choose("conv", x.shape, w.shape, geom, x.dtype, request=choice.DEFAULT) == "im2col"
    assert choice.chosen_engines() == {} and choice.engine_timings() == {}     # untimed, unlisted
    monkeypatch.setattr(choice, "DEFAULT_MIN_MACS", macs)
    runs = []
    real = choice._run
    monkeypatch.setattr(choice, "_run", lambda *a: runs.append(a[-1]) or real(*a))
    name = choice.choose("conv", x.shape, w.shape, geom, x.dtype, train=False, request=choice.DEFAULT)
    (key,) = choice.chosen_engines()
    assert key.endswith(" inference") and choice.chosen_engines()[key] == name
    assert runs and not any(runs)                                               # forward passes only
    choice.reset_choices()


@pytest.mark.parametrize("winograd_rounds,chosen", [
    ((0.5, 0.5), "winograd"),          # faster by half in every round: chosen
    ((0.5, 1.2), "im2col"),            # one fast round (say im2col's was disturbed): not enough
    ((0.95, 0.95), "im2col"),          # within MARGIN of im2col: im2col's exact arithmetic stays
])
def test_an_engine_replaces_im2col_only_when_faster_by_the_margin_in_every_round(
        winograd_rounds, chosen, monkeypatch):
    choice.reset_choices()
    geom = ConvGeometry(3, 1, 1)
    x, w, _, _ = _data((2, 4, 12, 12), 4, geom, np.float32)
    clock = [0.0]
    timed = {"im2col": iter([1.0] * 3), "winograd": iter((1.0,) + winograd_rounds),
             "winograd4": iter([2.0] * 3)}    # the full-size warm-up (not timed), then the rounds

    def fake_run(engine, kind, geom_, x_, w_, dy_, x_shape, train):
        if x_shape == x.shape:                # full-size runs: warm-up, then ROUNDS timed
            clock[0] += next(timed[engine.name])

    monkeypatch.setattr(choice, "_run", fake_run)
    monkeypatch.setattr(choice, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(choice, "ROUNDS", 2)
    assert choice.choose("conv", x.shape, w.shape, geom, x.dtype) == chosen
    choice.reset_choices()


def test_im2col_backward_reuses_the_forward_columns_only_while_x_is_unchanged(monkeypatch):
    geom = ConvGeometry(3, 1, 1)
    x, w, b, dy = _data((2, 3, 9, 9), 4, geom, np.float32)
    want_dx, want_dw = im2col.backward(x, w, dy, geom)
    calls = []
    real = im2col.im2col
    monkeypatch.setattr(im2col, "im2col", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = {}
    im2col.forward(x, w, b, geom, ctx=ctx)
    assert len(calls) == 1 and "cols" in ctx
    dx, dw = im2col.backward(x, w, dy, geom, ctx=ctx)
    assert len(calls) == 1                                     # the kept columns served
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5)
    x[1, 2, 4, 4] += 1.0                                       # x rewritten between the passes
    _, dw2 = im2col.backward(x, w, dy, geom, ctx=ctx)
    assert len(calls) == 2                                     # recomputed, not stale
    np.testing.assert_allclose(dw2, im2col.backward(x, w, dy, geom)[1], rtol=1e-5)
