"""The popcount GEMMs of binary nets: Numba kernels against their np.bitwise_count references and
against plain integer products of +-1 and 0/1 values; bit packing round trips."""
import numpy as np
import pytest

from pycaffe_lite.kernels import xnor


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 200, 2304])
def test_pack_round_trip(length):
    bits = np.random.default_rng(length).random((3, 2, length)) < 0.5
    packed = xnor.pack_bits(bits)
    assert packed.dtype == np.uint64 and packed.shape == (3, 2, xnor.words(length))
    np.testing.assert_array_equal(xnor.unpack_bits(packed, length), bits)
    # the bits past the end of a row are 0, and bit l sits at l % 64 of word l // 64
    assert int(np.bitwise_count(packed).sum()) == int(bits.sum())
    assert (int(packed[0, 0, 0]) & 1) == int(bits[0, 0, 0])


@pytest.mark.parametrize("m,n,length", [(1, 1, 1), (5, 3, 64), (4, 9, 65), (7, 13, 500), (3, 8, 2304)])
def test_gemms_equal_integer_products(m, n, length):
    rng = np.random.default_rng(m * n + length)
    a, b = rng.random((m, length)) < 0.5, rng.random((n, length)) < 0.5
    pa, pb = xnor.pack_bits(a), xnor.pack_bits(b)
    pm_a, pm_b = 2 * a.astype(np.int64) - 1, 2 * b.astype(np.int64) - 1
    np.testing.assert_array_equal(xnor.xnor_gemm(pa, pb, length), pm_a @ pm_b.T)
    np.testing.assert_array_equal(xnor.xnor_gemm_reference(pa, pb, length), pm_a @ pm_b.T)
    np.testing.assert_array_equal(xnor.and_gemm(pa, pb), a.astype(np.int64) @ pm_b.T)
    np.testing.assert_array_equal(xnor.and_gemm_reference(pa, pb), a.astype(np.int64) @ pm_b.T)


def test_gemm_shape_error():
    with pytest.raises(ValueError, match=r"needs \(M, W\) and \(N, W\) words, got \(2, 3\) and \(2, 4\)"):
        xnor.xnor_gemm(np.zeros((2, 3), np.uint64), np.zeros((2, 4), np.uint64), 10)
