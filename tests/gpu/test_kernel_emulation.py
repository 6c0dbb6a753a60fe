"""The CUDA kernels' own code, compiled as C++ and run on the CPU (no GPU needed).

pycaffe_lite.gpu.emulate translates each ElementwiseKernel into a C++ loop with
CuPy's semantics; here the kernels' Python entry points run through it and must
equal the NumPy references (exactly where both add in the same order), for float32 and float64, over geometries
that exercise padding, strides, dilation, rectangular kernels, ceil-mode
pooling windows and global pooling.  Skipped without a C++ compiler."""
import numpy as np
import pytest

from pycaffe_lite.conv.geometry import ConvGeometry
from pycaffe_lite.conv.im2col import col2im_array, im2col_array
from pycaffe_lite.gpu import emulate, kernels
from pycaffe_lite.layers import pooling


@pytest.fixture(scope="module")
def emulated():
    if emulate.compiler() is None:
        pytest.skip("no C++ compiler (g++, clang++ or $CXX) to emulate the CUDA kernels")
    run = emulate.runner()
    with kernels.emulated(run):
        yield run


DTYPES = [np.float32, np.float64]
CONV_GEOMS = [
    ConvGeometry(3, 1, 1),
    ConvGeometry(3, 2, 0),
    ConvGeometry((3, 2), (2, 1), (1, 0), (2, 1)),
    ConvGeometry(1),
    ConvGeometry(5, 3, 2),
    ConvGeometry(3, 1, 2, 2),
    ConvGeometry((1, 4), (1, 3), (0, 2)),
]
# (kernel, stride, pad) on a 9x8 input; None kernel = global pooling
POOL_GEOMS = [((3, 3), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)),
              ((3, 3), (3, 3), (0, 0)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 3), (2, 1)), (None, (1, 1), (0, 0))]


def _rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", CONV_GEOMS, ids=str)
def test_im2col_and_col2im_kernels_equal_the_reference(emulated, geom, dtype):
    x = _rand((2, 3, 9, 8), dtype)
    cols = kernels.im2col(x, geom)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col_array(x, geom))
    dcols = _rand(cols.shape, dtype, seed=1)
    dx = kernels.col2im(dcols, x.shape, geom)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(dx, col2im_array(dcols, x.shape, geom))


def test_im2col_writes_into_a_strided_out(emulated):
    geom = ConvGeometry(3, 1, 1)
    x = _rand((2, 3, 5, 4), np.float32)
    big = np.full((27, 2, 40), np.nan, np.float32)
    out = big[:, :, ::2]
    assert kernels.im2col(x, geom, out=out) is out
    np.testing.assert_array_equal(out, im2col_array(x, geom))
    assert np.isnan(big[:, :, 1::2]).all()


def test_im2col_takes_a_non_contiguous_input(emulated):
    geom = ConvGeometry(3, 2, 1)
    x = _rand((3, 2, 7, 9), np.float32).transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(kernels.im2col(x, geom), im2col_array(np.ascontiguousarray(x), geom))


def test_kernel_argument_errors(emulated):
    geom = ConvGeometry(3, 1, 1)
    x = _rand((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"im2col: out has shape \(18, 1, 16\) and dtype float64, needs"):
        kernels.im2col(x, geom, out=np.empty((18, 1, 16), np.float64))
    with pytest.raises(ValueError, match="col2im: cols of shape"):
        kernels.col2im(np.zeros((5, 1, 16), np.float32), x.shape, geom)
    with pytest.raises(TypeError, match="floating-point"):
        kernels.im2col(x.astype(np.int32), geom)


def _rel(ours, reference):
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    return float(np.abs(ours.astype(np.float64) - reference).max() / np.abs(reference).max())


def _pool_sizes(x, kernel, stride, pad):
    h, w = x.shape[2:]
    kernel = kernel or (h, w)
    any_pad = bool(pad[0] or pad[1])
    return kernel, (pooling.pooled_size(h, kernel[0], stride[0], pad[0], any_pad=any_pad),
                    pooling.pooled_size(w, kernel[1], stride[1], pad[1], any_pad=any_pad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, pad", POOL_GEOMS, ids=str)
def test_pooling_kernels_equal_the_reference(emulated, kernel, stride, pad, dtype):
    x = _rand((2, 3, 9, 8), dtype)
    x[0, 0, :3, :3] = 1.5                   # ties: the first maximum in row-major order wins
    kernel, out_size = _pool_sizes(x, kernel, stride, pad)
    h, w = x.shape[2:]
    top, argk = kernels.max_pool_forward(x, kernel, stride, pad, out_size)
    ref_top, ref_argk = pooling.max_pool_forward(x, kernel, stride, pad, out_size)
    assert top.dtype == dtype and argk.dtype == np.int32
    np.testing.assert_array_equal(top, ref_top)
    np.testing.assert_array_equal(argk, ref_argk)
    dy = _rand(top.shape, dtype, seed=2)
    np.testing.assert_array_equal(kernels.max_pool_backward(dy, argk, kernel, stride, pad, (h, w)),
                                  pooling.max_pool_backward(dy, ref_argk, kernel, stride, pad, (h, w)))
    # the reference may sum a window pairwise (few outputs): equal within rounding
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert _rel(kernels.ave_pool_forward(x, kernel, stride, pad, out_size),
                pooling.ave_pool_forward(x, kernel, stride, pad, out_size)) <= tol
    assert _rel(kernels.ave_pool_backward(dy, kernel, stride, pad, (h, w)),
                pooling.ave_pool_backward(dy, kernel, stride, pad, (h, w))) <= tol


def test_max_pool_keeps_minus_flt_max_and_nan_semantics(emulated):
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    x[0, 0, 3, 3] = np.nan
    top, argk = kernels.max_pool_forward(x, (2, 2), (2, 2), (0, 0), (2, 2))
    ref_top, ref_argk = pooling.max_pool_forward(x, (2, 2), (2, 2), (0, 0), (2, 2))
    np.testing.assert_array_equal(top, ref_top)          # -FLT_MAX where nothing beats it
    np.testing.assert_array_equal(argk, ref_argk)        # -1 there
    assert (argk == -1).all() and (top == np.float32(-pooling.FLT_MAX)).all()


def test_emulator_checks_its_arguments(emulated):
    spec = kernels.KERNELS["pycaffe_ave_pool_fwd"]
    x = np.zeros(16, np.float32)
    with pytest.raises(TypeError, match="takes 11 inputs and 1 outputs"):
        emulated(spec, (x,), (np.zeros(4, np.float32),))
    with pytest.raises(TypeError, match="the arrays typed T have dtypes"):
        emulated(spec, (x, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0), (np.zeros(4, np.float64),))


def test_translation_binds_outputs_and_raw_inputs():
    text = emulate.translate(kernels.KERNELS["pycaffe_max_pool_fwd"])
    assert "template <typename T>" in text
    assert "T& top = _out_top[i];" in text and "int& argk = _out_argk[i];" in text
    assert "const T* x" in text and "const int height" in text
    assert 'extern "C" void pycaffe_max_pool_fwd_float(' in text
    assert 'extern "C" void pycaffe_max_pool_fwd_double(' in text
