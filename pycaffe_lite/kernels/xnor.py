"""Bit packing and the popcount GEMMs of binary nets (BinaryNet, XNOR-Net).

Values +1 / -1 are bits 1 / 0, packed 64 to a uint64 along the last axis, least
significant bit first; the bits past the end of a row are 0 in every operand, so
they agree and add nothing to a popcount.  Two products of packed rows:

    xnor_gemm(a, b, k)   out[i, j] = sum_w (+-1 a) * (+-1 b)
                                   = k - 2 * popcount(a[i] ^ b[j])          (k real bits)
    and_gemm(a, b)       out[i, j] = sum_w a01 * (+-1 b)
                                   = 2 * popcount(a[i] & b[j]) - popcount(a[i])

`and_gemm` takes one bit plane of a fixed-point input (bits 0/1, not +-1), for
BinaryNet's first layer (sum over planes n of 2^n * plane_n . w).  The NumPy
versions (`*_reference`, over `np.bitwise_count`) are what the Numba kernels are
tested against, and what runs when Numba is missing.
"""
import numpy as np

from . import HAVE_NUMBA

if HAVE_NUMBA:
    from numba import njit, prange, types
    from numba.core.extending import intrinsic

WORD_BITS = 64


def words(bits):
    """uint64 words holding `bits` bits."""
    return (int(bits) + WORD_BITS - 1) // WORD_BITS


def pack_bits(bits):
    """(..., L) bool -> (..., words(L)) uint64, bit l of a row in word l // 64 at position l % 64."""
    bits = np.asarray(bits, dtype=bool)
    lead, length = bits.shape[:-1], bits.shape[-1]
    packed = np.packbits(bits.reshape(-1, length), axis=1, bitorder="little")
    padded = np.zeros((packed.shape[0], words(length) * 8), np.uint8)
    padded[:, :packed.shape[1]] = packed
    return padded.view("<u8").astype(np.uint64, copy=False).reshape(lead + (words(length),))


def unpack_bits(packed, length):
    """The inverse of pack_bits: (..., words) uint64 -> (..., length) bool."""
    packed = np.ascontiguousarray(packed, dtype="<u8")
    lead = packed.shape[:-1]
    as_bytes = packed.reshape(-1, packed.shape[-1]).view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, count=length, bitorder="little").astype(bool).reshape(lead + (length,))


def xnor_gemm_reference(a, b, k_bits):
    """k - 2 * popcount(a[i] ^ b[j]) summed over words, as int64 (M, N)."""
    return k_bits - 2 * np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int64)


def and_gemm_reference(a, b):
    """2 * popcount(a[i] & b[j]) - popcount(a[i]) summed over words, as int64 (M, N)."""
    ones = np.bitwise_count(a).sum(axis=1, dtype=np.int64)
    return 2 * np.bitwise_count(a[:, None, :] & b[None, :, :]).sum(axis=2, dtype=np.int64) - ones[:, None]


if HAVE_NUMBA:
    @intrinsic
    def _popcount(typingctx, x):
        """LLVM's ctpop on a uint64 (one POPCNT instruction, or vectorised), as int64."""
        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])
        return types.int64(types.uint64), codegen

    # Four columns of b at a time share each word of a row of a: five loads feed four
    # xor / popcount / add chains, and the four chains run side by side on the ALUs.
    @njit(parallel=True, cache=True)
    def _xnor_gemm(a, b, k_bits, out):
        m, nw = a.shape
        n = b.shape[0]
        for jb in prange((n + 3) // 4):
            j0 = jb * 4
            if j0 + 4 <= n:
                b0, b1, b2, b3 = b[j0], b[j0 + 1], b[j0 + 2], b[j0 + 3]
                for i in range(m):
                    ai = a[i]
                    s0 = s1 = s2 = s3 = 0
                    for w in range(nw):
                        x = ai[w]
                        s0 += _popcount(x ^ b0[w])
                        s1 += _popcount(x ^ b1[w])
                        s2 += _popcount(x ^ b2[w])
                        s3 += _popcount(x ^ b3[w])
                    out[i, j0] = k_bits - 2 * s0
                    out[i, j0 + 1] = k_bits - 2 * s1
                    out[i, j0 + 2] = k_bits - 2 * s2
                    out[i, j0 + 3] = k_bits - 2 * s3
            else:
                for j in range(j0, n):
                    bj = b[j]
                    for i in range(m):
                        ai = a[i]
                        s = 0
                        for w in range(nw):
                            s += _popcount(ai[w] ^ bj[w])
                        out[i, j] = k_bits - 2 * s

    @njit(parallel=True, cache=True)
    def _and_gemm(a, b, out):
        m, nw = a.shape
        n = b.shape[0]
        for i in prange(m):
            ai = a[i]
            ones = 0
            for w in range(nw):
                ones += _popcount(ai[w])
            for j in range(n):
                bj = b[j]
                s = 0
                for w in range(nw):
                    s += _popcount(ai[w] & bj[w])
                out[i, j] = 2 * s - ones


def _gemm_args(a, b, out):
    a = np.ascontiguousarray(a, dtype=np.uint64)
    b = np.ascontiguousarray(b, dtype=np.uint64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"popcount GEMM needs (M, W) and (N, W) words, got {a.shape} and {b.shape}")
    if out is None:
        out = np.empty((a.shape[0], b.shape[0]), np.int32)
    return a, b, out


def xnor_gemm(a, b, k_bits, out=None):
    """out (M, N) int32 = sum of the +-1 products of rows a[i] and b[j] (k_bits real bits each)."""
    a, b, out = _gemm_args(a, b, out)
    if HAVE_NUMBA:
        _xnor_gemm(a, b, np.int64(k_bits), out)
    else:
        out[...] = xnor_gemm_reference(a, b, k_bits)
    return out


def and_gemm(a, b, out=None):
    """out (M, N) int32 = sum of a's 0/1 bits times b's +-1 values, row by row."""
    a, b, out = _gemm_args(a, b, out)
    if HAVE_NUMBA:
        _and_gemm(a, b, out)
    else:
        out[...] = and_gemm_reference(a, b)
    return out
