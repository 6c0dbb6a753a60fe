"""The parallel per-channel passes give the NumPy expressions' results bit for bit."""
import numpy as np
import pytest

from pycaffe_lite import kernels
from pycaffe_lite.kernels import elementwise


@pytest.fixture(params=["numba", "numpy"])
def path(request, monkeypatch):
    if request.param == "numba":
        if not kernels.HAVE_NUMBA:
            pytest.skip("numba is not installed")
        monkeypatch.setattr(kernels, "MIN_WORK", 0)
    else:
        monkeypatch.setattr(kernels, "MIN_WORK", 1 << 62)
    return request.param


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    return x, rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)


@pytest.mark.parametrize("with_add", [True, False])
def test_channel_affine_is_multiply_then_add(path, with_add):
    x, mul, add = _data()
    expected = x * mul.reshape(1, 5, 1)
    if with_add:
        expected = expected + add.reshape(1, 5, 1)
    out = np.empty_like(x)
    elementwise.channel_affine(x, mul, add if with_add else None, out)
    np.testing.assert_array_equal(out, expected)
    elementwise.channel_affine(x, mul, add if with_add else None, x)          # in place
    np.testing.assert_array_equal(x, expected)


def test_channel_normalize_is_subtract_then_divide(path):
    x, sub, div = _data(1)
    expected = (x - sub.reshape(1, 5, 1)) / div.reshape(1, 5, 1)
    elementwise.channel_normalize(x, sub, div, x)
    np.testing.assert_array_equal(x, expected)


def test_relu_is_numpy_maximum_with_zero(path):
    x = np.array([-0.0, 0.0, np.nan, -1.5, 2.0, -np.inf, np.inf, 1e-45] * 5, np.float32)
    expected = np.maximum(x, 0)
    out = np.empty_like(x)
    elementwise.relu(x, out)
    np.testing.assert_array_equal(out, expected)                        # NaN where NumPy has NaN
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))  # -0 becomes +0
