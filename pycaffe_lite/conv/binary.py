"""Binary convolution and inner product on packed bits (XNOR-Net's and BinaryNet's inference).

Values +-1 are bits (1 for +1; sign(0) = +1), packed 64 to a uint64
(pycaffe_lite.kernels.xnor).  A convolution packs each pixel's channels of a
group into words, so a window of kh x kw pixels is kh*kw*ceil(C/64) words and
im2col is a strided copy of whole words; the weights are packed in the same
(kh, kw, channel) order.  Channels past C in a pixel's last word are 0 in the
input and in the weights: they agree and cancel out of `k - 2 * popcount`.

Caffe pads with 0, which is not +-1.  A padded pixel is packed as all +1 (its
channel bits set), so each window sum over-counts sum(w) over the taps that
fall in the padding; `pad_correction` precomputes that sum per output channel
and output position (it depends on the weights and the geometry only) and
subtracts it.  The result is the float path's zero-padded sum, exactly.

A layer whose input is not binarized (BinaryNet's first layer) gets a
fixed-point input x = q * 2^-f (an 8-bit image scaled by 1/256 is one) split
into bit planes: sum_c q_c w_c = sum_n s_n 2^n (2 popcount(plane_n & w) -
popcount(plane_n)), s_n = -1 for the sign plane of a two's-complement q.  Zero
padding is zero bits in every plane, so it needs no correction.

Every function returns the exact integer sums (int64); the caller scales them.
They equal the float path's sums as long as those are exact in the float
type (below 2^24 in magnitude for float32: K * max|q| < 2^24).
"""
import numpy as np

from ..kernels.xnor import and_gemm, pack_bits, words, xnor_gemm

MAX_PLANES = 16


def sign_bits(x):
    """The +1 bits of sign(x), sign(0) = +1 (-0.0 too)."""
    return np.asarray(x) >= 0


# ---- fixed-point inputs (the first layer) -------------------------------------------
def fixed_point(x, max_planes=MAX_PLANES):
    """(q, f, planes, signed) with x == q * 2^-f exactly, q int64 in `planes` bits
    (two's complement when signed), or None when x needs more than max_planes bits."""
    x = np.asarray(x)
    mantissa_bits = np.finfo(x.dtype).nmant + 1
    m, e = np.frexp(x.astype(np.float64, copy=False))
    whole = (m * float(1 << mantissa_bits)).astype(np.int64)
    nonzero = whole != 0
    if not nonzero.any():
        return np.zeros(x.shape, np.int64), 0, 1, False
    lowest = whole[nonzero] & -whole[nonzero]                  # the lowest set bit of each
    trailing = np.bitwise_count(lowest - 1).astype(np.int64)
    f = max(0, int((mantissa_bits - e[nonzero] - trailing).max()))
    if f > 62:
        return None
    q = np.rint(np.ldexp(x.astype(np.float64, copy=False), f)).astype(np.int64)
    low, high = int(q.min()), int(q.max())
    signed = low < 0
    planes = max(max(high, 0).bit_length(), (-low - 1).bit_length() if signed else 0) + signed
    if planes > max_planes:
        return None
    return q, f, max(planes, 1), signed


def plane_weights(planes, signed):
    """The factor of each bit plane: 2^n, and -2^(planes-1) for a two's-complement sign plane."""
    factors = [1 << n for n in range(planes)]
    if signed:
        factors[-1] = -factors[-1]
    return factors


def plane_bits(q, n):
    """Bit n of each q (two's complement) as bool."""
    return ((q >> n) & 1).astype(bool)


# ---- inner product ----------------------------------------------------------------
def pack_rows(signs):
    """(M, K) +1 bits -> (M, words(K)) uint64."""
    return pack_bits(signs)


def inner_product_packed(x_rows, w_rows, k_bits):
    """sum_k sign(x) sign(w) for packed rows x (M, W) and w (N, W): int64 (M, N)."""
    return xnor_gemm(x_rows, w_rows, k_bits).astype(np.int64)


def inner_product_planes(x, w_rows):
    """sum_k q_k sign(w)_k for a fixed-point x (M, K): (int64 (M, N), f), or None."""
    fixed = fixed_point(x)
    if fixed is None:
        return None
    q, f, planes, signed = fixed
    total = np.zeros((q.shape[0], w_rows.shape[0]), np.int64)
    for n, factor in enumerate(plane_weights(planes, signed)):
        total += factor * and_gemm(pack_bits(plane_bits(q, n)), w_rows).astype(np.int64)
    return total, f


# ---- convolution --------------------------------------------------------------------
def pack_conv_weights(signs, group):
    """(K, C/g, kh, kw) +1 bits -> (g, K/g, kh*kw*words(C/g)) uint64, (kh, kw, channel) order."""
    k, cg, kh, kw = signs.shape
    packed = pack_bits(np.ascontiguousarray(np.asarray(signs).transpose(0, 2, 3, 1)))
    return packed.reshape(group, k // group, kh * kw * words(cg))


def pack_pixels(bits, group):
    """(N, C, H, W) bits -> (g, N, H, W, words(C/g)) uint64: each pixel's channels of a group."""
    n, c, h, w = bits.shape
    per_group = bits.reshape(n, group, c // group, h, w).transpose(1, 0, 3, 4, 2)
    return pack_bits(np.ascontiguousarray(per_group))


def pad_word(channels):
    """The words of a pixel whose `channels` bits are all +1 (the rest 0)."""
    return pack_bits(np.ones(channels, bool))


def columns(pixels, geom, fill):
    """im2col on words: pixels (N, H, W, Wc) -> (N*Ho*Wo, kh*kw*Wc), padding filled with `fill`."""
    n, h, w, wc = pixels.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    ho, wo = geom.output_hw(h, w)
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return pixels.reshape(n * h * w, wc)
    padded = np.empty((n, h + 2 * ph, w + 2 * pw, wc), np.uint64)
    if ph or pw:
        padded[...] = fill
    padded[:, ph:ph + h, pw:pw + w] = pixels
    s_n, s_h, s_w, s_c = padded.strides
    windows = np.lib.stride_tricks.as_strided(
        padded, (n, ho, wo, kh, kw, wc), (s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c))
    return np.ascontiguousarray(windows).reshape(n * ho * wo, kh * kw * wc)


def pad_correction(signs, geom, h, w):
    """(K, Ho, Wo) int64: sum of the +-1 weights over the taps of each window that fall in
    the padding (what a padded pixel packed as all +1 adds to the window's sum)."""
    k = signs.shape[0]
    ho, wo = geom.output_hw(h, w)
    correction = np.zeros((k, ho, wo), np.int64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    if not (ph or pw):
        return correction
    tap_sums = (2 * np.asarray(signs, np.int64) - 1).sum(axis=1)          # (K, kh, kw)
    outside = np.ones((h + 2 * ph, w + 2 * pw), np.int64)
    outside[ph:ph + h, pw:pw + w] = 0
    for i in range(kh):
        for j in range(kw):
            hit = outside[i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            correction += tap_sums[:, i, j, None, None] * hit
    return correction


class PackedConvWeights:
    """A binary convolution's weights, packed once for many forward passes."""

    def __init__(self, signs, geom):
        signs = np.asarray(signs, bool)
        self.geom = geom
        self.signs = signs
        self.num_output, self.group_channels = signs.shape[0], signs.shape[1]
        self.k_bits = self.group_channels * geom.kernel[0] * geom.kernel[1]
        self.packed = pack_conv_weights(signs, geom.group)
        self._corrections = {}

    def correction(self, h, w):
        if (h, w) not in self._corrections:
            self._corrections[(h, w)] = pad_correction(self.signs, self.geom, h, w)
        return self._corrections[(h, w)]


def _conv_from_groups(weights, x_shape, per_group):
    """Assemble (N, K, Ho, Wo) int64 from per_group(g) -> (K/g, N*Ho*Wo) sums."""
    n, _, h, w = x_shape
    ho, wo = weights.geom.output_hw(h, w)
    group = weights.geom.group
    kg = weights.num_output // group
    out = np.empty((n, weights.num_output, ho, wo), np.int64)
    for g in range(group):
        out[:, g * kg:(g + 1) * kg] = per_group(g).reshape(kg, n, ho, wo).transpose(1, 0, 2, 3)
    return out


def conv_packed(x_signs, weights):
    """sum sign(x) sign(w) over each window (zero padding), from the +1 bits of x (N, C, H, W)."""
    geom = weights.geom
    pixels = pack_pixels(np.asarray(x_signs, bool), geom.group)
    fill = pad_word(weights.group_channels)
    h, w = x_signs.shape[2:]

    def per_group(g):
        cols = columns(pixels[g], geom, fill)
        return xnor_gemm(weights.packed[g], cols, weights.k_bits)

    out = _conv_from_groups(weights, x_signs.shape, per_group)
    if geom.pad != (0, 0):
        out -= weights.correction(h, w)[None]
    return out


def conv_planes(x, weights):
    """sum q sign(w) over each window for a fixed-point x = q 2^-f: (int64 (N, K, Ho, Wo), f),
    or None when x is not fixed point in MAX_PLANES bits."""
    fixed = fixed_point(x)
    if fixed is None:
        return None
    q, f, planes, signed = fixed
    geom = weights.geom
    factors = plane_weights(planes, signed)
    plane_pixels = [pack_pixels(plane_bits(q, n), geom.group) for n in range(planes)]

    def per_group(g):
        total = 0
        for factor, pixels in zip(factors, plane_pixels):
            cols = columns(pixels[g], geom, np.uint64(0))        # zero padding: zero bits
            total = total + factor * and_gemm(cols, weights.packed[g]).astype(np.int64).T
        return total

    return _conv_from_groups(weights, x.shape, per_group), f
