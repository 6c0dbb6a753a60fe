"""The fused SGD update is bit-identical to Caffe's step-by-step sequence (the NumPy reference)."""
import numpy as np
import pytest

from pycaffe_lite.kernels import updates as fused

pytestmark = pytest.mark.skipif(not fused.available(np.zeros(1, np.float32)), reason="Numba is not installed")


def step_by_step(data, diff, history, scale, decay, l1, lr, momentum):
    """normalize, regularize, SGD's axpby, copy to diff, data -= diff: Caffe's order, float32 ops."""
    if scale != 1:
        diff *= scale
    if decay:
        diff += (np.sign(data) if l1 else data) * decay
    history *= momentum
    history += diff * lr
    diff[...] = history
    data -= diff


@pytest.mark.parametrize("size", [1000, 3 * (1 << 16) + 7])           # the serial and the parallel kernel
@pytest.mark.parametrize("l1, scale, decay", [(False, 1, 5e-4), (True, 1, 1e-3), (False, 0.5, 0), (False, 0.25, 1e-2)])
def test_fused_sgd_matches_step_by_step(size, l1, scale, decay):
    rng = np.random.default_rng(size)
    f32 = np.float32
    data = rng.standard_normal(size).astype(f32)
    data[:5] = 0                                                       # sign(0) = 0 for L1
    diff = rng.standard_normal(size).astype(f32)
    history = rng.standard_normal(size).astype(f32) * f32(0.01)
    want = [a.copy() for a in (data, diff, history)]
    got = [a.copy() for a in (data, diff, history)]
    args = dict(scale=f32(scale), decay=f32(decay), l1=l1, lr=f32(0.01) * f32(2), momentum=f32(0.9))
    for _ in range(3):
        step_by_step(*want, **args)
        fused.sgd_step(*got, **args)
    for name, a, b in zip(("data", "diff", "history"), got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_all_finite_finds_nan_and_inf_anywhere():
    arrays = [np.ones(10, np.float32), np.ones(1 << 18, np.float32)]
    assert fused.all_finite(arrays)
    for value in (np.nan, np.inf, -np.inf):
        arrays[1][123456] = value
        assert not fused.all_finite(arrays)
    arrays[1][123456] = np.finfo(np.float32).max                      # huge but finite
    assert fused.all_finite(arrays)
