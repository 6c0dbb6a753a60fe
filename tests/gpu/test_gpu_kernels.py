"""The CUDA kernels on a device against their NumPy references (float32 and float64)."""
import numpy as np
import pytest

from gpu_helpers import cp, rel_err  # noqa: F401  (cp is a fixture)
from pycaffe_lite.conv.geometry import ConvGeometry
from pycaffe_lite.conv.im2col import col2im_array, im2col_array
from pycaffe_lite.gpu import kernels
from pycaffe_lite.layers import pooling

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
CONV_GEOMS = [ConvGeometry(3, 1, 1), ConvGeometry(11, 4, 0), ConvGeometry((3, 2), (2, 1), (1, 0), (2, 1)),
              ConvGeometry(1), ConvGeometry(5, 3, 2), ConvGeometry(3, 1, 2, 2)]
POOL_GEOMS = [((3, 3), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)),
              ((2, 2), (2, 2), (0, 0)), (None, (1, 1), (0, 0))]


def _rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", CONV_GEOMS, ids=str)
def test_im2col_col2im_on_device(cp, geom, dtype):
    x = _rand((3, 4, 23, 19), dtype)
    cols = kernels.im2col(cp.asarray(x), geom)
    assert isinstance(cols, cp.ndarray) and cols.dtype == dtype
    np.testing.assert_array_equal(cols.get(), im2col_array(x, geom))
    dcols = _rand(cols.shape, dtype, seed=1)
    dx = kernels.col2im(cp.asarray(dcols), x.shape, geom)
    assert rel_err(dx, col2im_array(dcols, x.shape, geom)) <= TOL[dtype]


def test_im2col_into_a_strided_device_view(cp):
    geom = ConvGeometry(3, 1, 1)
    x = _rand((2, 3, 5, 4), np.float32)
    big = cp.full((27, 2, 40), cp.nan, cp.float32)
    out = big[:, :, ::2]
    kernels.im2col(cp.asarray(x), geom, out=out)
    np.testing.assert_array_equal(out.get(), im2col_array(x, geom))
    assert bool(cp.isnan(big[:, :, 1::2]).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, pad", POOL_GEOMS, ids=str)
def test_pooling_on_device(cp, kernel, stride, pad, dtype):
    x = _rand((2, 5, 17, 13), dtype)
    h, w = x.shape[2:]
    kernel = kernel or (h, w)
    any_pad = bool(pad[0] or pad[1])
    out_size = (pooling.pooled_size(h, kernel[0], stride[0], pad[0], any_pad=any_pad),
                pooling.pooled_size(w, kernel[1], stride[1], pad[1], any_pad=any_pad))
    xd = cp.asarray(x)
    top, argk = kernels.max_pool_forward(xd, kernel, stride, pad, out_size)
    ref_top, ref_argk = pooling.max_pool_forward(x, kernel, stride, pad, out_size)
    np.testing.assert_array_equal(top.get(), ref_top)
    np.testing.assert_array_equal(argk.get(), ref_argk)
    dy = _rand(ref_top.shape, dtype, seed=3)
    assert rel_err(kernels.max_pool_backward(cp.asarray(dy), argk, kernel, stride, pad, (h, w)),
                   pooling.max_pool_backward(dy, ref_argk, kernel, stride, pad, (h, w))) <= TOL[dtype]
    assert rel_err(kernels.ave_pool_forward(xd, kernel, stride, pad, out_size),
                   pooling.ave_pool_forward(x, kernel, stride, pad, out_size)) <= TOL[dtype]
    assert rel_err(kernels.ave_pool_backward(cp.asarray(dy), kernel, stride, pad, (h, w)),
                   pooling.ave_pool_backward(dy, kernel, stride, pad, (h, w))) <= TOL[dtype]


def test_conv_engine_on_device_matches_numpy(cp):
    """The im2col engine through CuPy (whole-array or kernel im2col, cuBLAS GEMM, rank-1 bias)."""
    from pycaffe_lite.conv import im2col as engine
    geom = ConvGeometry(3, 2, 1, group=2)
    x, w, b = _rand((4, 6, 15, 12), np.float32), _rand((8, 3, 3, 3), np.float32, 1), _rand((8,), np.float32, 2)
    y = engine.forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), geom)
    y_ref = engine.forward(x, w, b, geom)
    assert rel_err(y, y_ref) <= 1e-5
    dy = _rand(y_ref.shape, np.float32, 3)
    dx, dw = engine.backward(cp.asarray(x), cp.asarray(w), cp.asarray(dy), geom)
    dx_ref, dw_ref = engine.backward(x, w, dy, geom)
    assert rel_err(dx, dx_ref) <= 1e-5 and rel_err(dw, dw_ref) <= 1e-5
