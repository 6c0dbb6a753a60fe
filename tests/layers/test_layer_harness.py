"""The layer harness: every case of tests/layer_cases.py (one at least per registered layer type)
sets up with the right top shapes, matches its NumPy reference in every dtype, passes the float64
numerical gradient check of every bottom and parameter, and gives the same result in place where
the layer allows it, on NumPy and (marked gpu) on CuPy.  A registered type without a case fails."""
import importlib.util

import numpy as np
import pytest

import layer_check
from conftest import require_cupy
from layer_cases import CASES, DTYPES, bottom_arrays
from pycaffe_lite import backend
from pycaffe_lite.layer import layer_type_list

# Without CuPy installed the CuPy runs skip at collection, in one place, not test by test.
NO_CUPY = pytest.mark.skipif(importlib.util.find_spec("cupy") is None,
                             reason="CuPy is not installed (pip install 'pycaffe-lite[gpu]')")
ARRAY_MODULES = [pytest.param("numpy", id="numpy"), pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, NO_CUPY])]


def cases(**wanted):
    """pytest params of the cases with the wanted properties (the case id names the test)."""
    return [pytest.param(c, id=c.id) for c in CASES
            if all(bool(getattr(c, key)) == value for key, value in wanted.items())]


@pytest.fixture(params=ARRAY_MODULES)
def xp(request):
    return require_cupy() if request.param == "cupy" else np


def gpu_case(case, xp):
    if xp is not np and not case.gpu:
        pytest.skip(f"{case.id}: a host-side layer")


def built(case, xp, dtype, folder=None, in_place=False):
    """(layer, bottom, top) of the case set up on module xp in dtype, the random fillers seeded."""
    backend.set_random_seed(case.seed)
    return layer_check.build(case.layer_text(folder), bottom_arrays(case, dtype), case.num_tops,
                             phase=case.phase, dtype=dtype, xp=xp, in_place=in_place)


def host(blobs):
    return [backend.to_numpy(b.data).astype(np.float64) for b in blobs]


def closed(layer):
    close = getattr(layer, "close", None)    # data layers stop their prefetch threads
    if close:
        close()


@pytest.mark.parametrize("case", cases())
def test_setup_and_top_shapes(case, xp, tmp_path):
    gpu_case(case, xp)
    layer, bottom, top = built(case, xp, np.float32, tmp_path)
    try:
        expected = case.top_shapes
        if expected is None:
            expected = tuple(np.shape(t) for t in case.reference(host(bottom), host(layer.blobs)))
        setup = expected if case.setup_shapes is None else case.setup_shapes
        assert tuple(t.shape for t in top) == tuple(setup), f"{case.id}: tops after SetUp"
        if case.feed:
            case.feed(layer)
        layer.Forward(bottom, top)
        assert tuple(t.shape for t in top) == tuple(expected), f"{case.id}: tops after Forward"
        for blob in list(top) + list(layer.blobs):
            assert blob.dtype == np.float32, f"{case.id}: a {blob.dtype} blob in a float32 layer"
            assert backend.get_array_module(blob.data) is xp or not bottom, f"{case.id}: blob off the device"
    finally:
        closed(layer)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", cases(shape_only=False))
def test_forward_matches_the_reference(case, dtype, xp):
    gpu_case(case, xp)
    dtype, tol = DTYPES[dtype]
    layer, bottom, top = built(case, xp, dtype)
    expected = case.reference(host(bottom), host(layer.blobs))
    layer.Forward(bottom, top)
    assert len(top) == len(expected)
    for i, (blob, want) in enumerate(zip(top, expected)):
        assert blob.dtype == dtype, f"{case.id}: top {i} is {blob.dtype}"
        np.testing.assert_allclose(backend.to_numpy(blob.data), want, rtol=tol.rtol, atol=tol.atol,
                                   err_msg=f"{case.id}: top {i}")


@pytest.mark.parametrize("case", cases(shape_only=False, backward=True, no_gradient_check=False))
def test_gradient_matches_central_differences(case, xp):
    gpu_case(case, xp)
    backend.set_random_seed(case.seed)
    layer_check.check_gradient(case.text, bottom_arrays(case), case.num_tops, check_bottoms=case.differentiated,
                               phase=case.phase, seed=case.seed, xp=xp)


def forward_backward(case, xp, in_place):
    """Top data, bottom diff and parameter diffs of one pass, top and bottom the same blob or not."""
    layer, bottom, top = built(case, xp, np.float64, in_place=in_place)
    layer.Forward(bottom, top)
    y = host(top)
    if not case.backward:
        return y
    backend.copy_into(top[0].diff, np.random.default_rng(7).standard_normal(top[0].shape))
    for p in layer.blobs:
        p.diff[...] = 0
    layer.Backward(top, [True], bottom)
    return y + [backend.to_numpy(b.diff).copy() for b in list(bottom) + list(layer.blobs)]


@pytest.mark.parametrize("case", cases(in_place=True))
def test_in_place_equals_out_of_place(case, xp):
    gpu_case(case, xp)
    ours, want = forward_backward(case, xp, in_place=True), forward_backward(case, xp, in_place=False)
    for i, (a, b) in enumerate(zip(ours, want)):
        np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=f"{case.id}: result {i} in place")


def test_every_registered_layer_type_has_a_case():
    missing = sorted(set(layer_type_list()) - {c.type for c in CASES})
    assert not missing, f"layer types with no case in tests/layer_cases.py: {missing}"


def test_cases_are_well_formed():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids repeat"
    for case in CASES:
        assert (case.reference is None) == bool(case.shape_only), f"{case.id}: a reference or a shape_only reason"
        assert not case.shape_only or case.top_shapes is not None, f"{case.id}: shape_only needs top_shapes"
