"""Numba kernels of the convolution engines: im2col / col2im, the NCHW <-> channel-major copies,
depthwise convolution and the Winograd transforms.

The engines (pycaffe_lite.conv) call these on NumPy arrays and their array versions elsewhere (which
is also what CuPy runs); kernels.REFERENCES names each kernel's reference and the tests compare the two.

Layout conventions (C-contiguous):
    x     (N, C, H, W)             the input
    cols  (C*kh*kw, N*Ho*Wo)       im2col's columns, channel-major over the batch

A note on style, measured here: Numba checks every index for negative
wrap-around unless LLVM can prove it non-negative, and that check stops the
loop from vectorising.  So the inner loops either index a 1-D slice with the
bare loop variable (`src = a[c, start:start + n]; src[j]`), or test
`0 <= index < size` per element (which also proves it); `a[start + j]` ran
4-5x slower.
"""
import numpy as np

from . import HAVE_NUMBA

if HAVE_NUMBA:
    from numba import njit, prange, uint64

if HAVE_NUMBA:
    @njit(cache=True)
    def _wo_range(width, wo_n, sw, off):
        """[lo, hi) of the output columns wo with 0 <= wo*sw + off < width."""
        lo = 0
        if off < 0:
            lo = (-off + sw - 1) // sw
        hi = (width - 1 - off) // sw + 1 if width - 1 - off >= 0 else 0
        if hi > wo_n:
            hi = wo_n
        if lo > hi:
            lo = hi
        return lo, hi

    @njit(cache=True)
    def _im2col_same_rows(flat_x, dst, c, i, chans, height, width, ph, dh, off, lo, hi, n_img, ho_n):
        """One row of cols when stride is 1 and Wo == W (a "same" convolution): an
        output position q then reads x at q + a constant shift, so each image's
        block is one long contiguous copy, and the clipped columns are zeroed
        after (13-wide rows copied one by one stay scalar: AlexNet conv3's
        im2col ran 1.7x slower)."""
        seg = ho_n * width
        ho_lo = min(ho_n, max(0, ph - i * dh))
        ho_hi = max(ho_lo, min(ho_n, height + ph - i * dh))
        for n in range(n_img):
            base = uint64(n * seg)
            for q in range(uint64(ho_lo * width)):
                dst[base + q] = 0
            for q in range(uint64(ho_hi * width), uint64(seg)):
                dst[base + q] = 0
            if ho_lo == ho_hi:
                continue
            q0 = ho_lo * width + lo
            src = uint64((n * chans + c) * height * width + q0 + (i * dh - ph) * width + off)
            d0 = base + uint64(q0)
            for t in range(uint64((ho_hi - 1) * width + hi - q0)):
                dst[d0 + t] = flat_x[src + t]
            for ho in range(ho_lo, ho_hi):
                r = base + uint64(ho * width)
                for wo in range(uint64(lo)):
                    dst[r + wo] = 0
                for wo in range(uint64(hi), uint64(width)):
                    dst[r + wo] = 0

    @njit(parallel=True, cache=True)
    def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho_n, wo_n):
        """cols[(c*kh + i)*kw + j, (n*Ho + ho)*Wo + wo] = x[n, c, ho*sh-ph+i*dh, wo*sw-pw+j*dw]."""
        n_img, chans, height, width = x.shape
        kk = kh * kw
        usw = uint64(sw)
        flat_x = x.reshape(x.size)
        same_rows = sh == 1 and sw == 1 and wo_n == width
        for row in prange(chans * kk):
            c = row // kk
            i = (row % kk) // kw
            j = row % kw
            dst = cols[row]
            off = j * dw - pw
            lo, hi = _wo_range(width, wo_n, sw, off)
            if same_rows:
                _im2col_same_rows(flat_x, dst, c, i, chans, height, width, ph, dh, off, lo, hi, n_img, ho_n)
                continue
            for n in range(n_img):
                for ho in range(ho_n):
                    h = ho * sh - ph + i * dh
                    base = uint64((n * ho_n + ho) * wo_n)
                    if h < 0 or h >= height:
                        for wo in range(uint64(wo_n)):
                            dst[base + wo] = 0
                    else:
                        src = x[n, c, h]
                        for wo in range(uint64(lo)):
                            dst[base + wo] = 0
                        s0 = uint64(lo * sw + off)
                        d0 = base + uint64(lo)
                        for t in range(uint64(hi - lo)):
                            dst[d0 + t] = src[s0 + t * usw]
                        for wo in range(uint64(hi), uint64(wo_n)):
                            dst[base + wo] = 0

    @njit(parallel=True, cache=True)
    def col2im(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho_n, wo_n):
        """dx = the scatter-add adjoint of im2col (dx is overwritten).

        One job per (channel, image) plane, so the plane being added into stays
        in L1 while its kh*kw column segments stream past; flat uint64 indices
        and a unit-stride loop of its own keep the adds vectorised (1.1-1.4x
        faster than a job per channel walking every image for each tap)."""
        n_img, chans, height, width = dx.shape
        kk = kh * kw
        plane_size = height * width
        seg = ho_n * wo_n
        n_cols = cols.shape[1]
        flat_dx = dx.reshape(dx.size)
        flat_cols = cols.reshape(cols.size)
        usw = uint64(sw)
        for job in prange(chans * n_img):
            c = job // n_img
            n = job - c * n_img
            base = uint64((n * chans + c) * plane_size)
            for p in range(uint64(plane_size)):
                flat_dx[base + p] = 0
            for ij in range(kk):
                i = ij // kw
                j = ij - i * kw
                off = j * dw - pw
                lo, hi = _wo_range(width, wo_n, sw, off)
                run = uint64(hi - lo)
                src = uint64((c * kk + ij) * n_cols + n * seg + lo)
                for ho in range(ho_n):
                    h = ho * sh - ph + i * dh
                    if h >= 0 and h < height:
                        s0 = src + uint64(ho * wo_n)
                        d0 = base + uint64(h * width + lo * sw + off)
                        if sw == 1:
                            for t in range(run):
                                flat_dx[d0 + t] += flat_cols[s0 + t]
                        else:
                            for t in range(run):
                                flat_dx[d0 + t * usw] += flat_cols[s0 + t]

    # GEMM layouts: the GEMM works channel-major over the batch, (K, N, P),
    # the blobs are (N, K, P).  NumPy swaps the two axes on one thread; these
    # copy one contiguous (n, k) row per job on every core.

    @njit(parallel=True, cache=True)
    def batch_major(ynk, bias, out):
        """out[n, k, :] = ynk[k, n, :] (+ bias[k] when bias has K entries)."""
        k_out, n_img, plane = ynk.shape
        with_bias = bias.shape[0] == k_out
        for job in prange(n_img * k_out):
            n = job // k_out
            k = job - n * k_out
            src = ynk[k, n]
            dst = out[n, k]
            if with_bias:
                b = bias[k]
                for p in range(uint64(plane)):
                    dst[p] = src[p] + b
            else:
                for p in range(uint64(plane)):
                    dst[p] = src[p]

    @njit(parallel=True, cache=True)
    def channel_major(y, out):
        """out[k, n, :] = y[n, k, :]."""
        n_img, k_out, plane = y.shape
        for job in prange(n_img * k_out):
            n = job // k_out
            k = job - n * k_out
            src = y[n, k]
            dst = out[k, n]
            for p in range(uint64(plane)):
                dst[p] = src[p]

    # Depthwise, stride 1: each plane is padded into a (Hp, Wp) buffer and the
    # output computed on the (Ho, Wp) grid, so that every kernel tap is one long
    # contiguous multiply-add, y[p] += w[i, j] * xpad[p + i*dh*Wp + j*dw]; the
    # Wp - Wo spare columns are cropped (or, going back, held at zero).

    @njit(cache=True)
    def _pad_plane(src, buf, ph, pw):
        height, width = src.shape
        buf[:] = 0
        wp = buf.shape[0] // (height + 2 * ph)
        for h in range(height):
            d0 = uint64((h + ph) * wp + pw)
            row_ = src[h]
            for w in range(uint64(width)):
                buf[d0 + w] = row_[w]

    @njit(parallel=True, cache=True)
    def depthwise_forward(x, wt, y, sh, sw, ph, pw, dh, dw):
        """y[n,k] = sum_ij wt[k,0,i,j] x[n, k//m, ...]: group == channels, m = K/C."""
        n_img, chans, height, width = x.shape
        k_out, _, kh, kw = wt.shape
        mult = k_out // chans
        ho_n, wo_n = y.shape[2], y.shape[3]
        usw = uint64(sw)
        if sh == 1 and sw == 1:
            hp, wp = height + 2 * ph, width + 2 * pw
            for job in prange(n_img * k_out):
                n = job // k_out
                k = job % k_out
                c = k // mult
                xpad = np.empty(hp * wp + wp, x.dtype)
                grid = np.zeros(ho_n * wp, x.dtype)
                _pad_plane(x[n, c], xpad[:hp * wp], ph, pw)
                xpad[hp * wp:] = 0
                for i in range(kh):
                    for j in range(kw):
                        wv = wt[k, 0, i, j]
                        s0 = uint64(i * dh * wp + j * dw)
                        for t in range(uint64(ho_n * wp)):
                            grid[t] += wv * xpad[s0 + t]
                for ho in range(ho_n):
                    dst = y[n, k, ho]
                    g0 = uint64(ho * wp)
                    for wo in range(uint64(wo_n)):
                        dst[wo] = grid[g0 + wo]
            return
        for job in prange(n_img * k_out):
            n = job // k_out
            k = job % k_out
            c = k // mult
            for ho in range(ho_n):
                dst = y[n, k, ho]
                for wo in range(wo_n):
                    dst[wo] = 0
                for i in range(kh):
                    h = ho * sh - ph + i * dh
                    if h >= 0 and h < height:
                        src = x[n, c, h]
                        for j in range(kw):
                            off = j * dw - pw
                            lo, hi = _wo_range(width, wo_n, sw, off)
                            wv = wt[k, 0, i, j]
                            d0 = uint64(lo)
                            s0 = uint64(lo * sw + off)
                            for t in range(uint64(hi - lo)):
                                dst[d0 + t] += wv * src[s0 + t * usw]

    @njit(parallel=True, cache=True)
    def depthwise_backward_data(dy, wt, dx, sh, sw, ph, pw, dh, dw):
        n_img, chans, height, width = dx.shape
        k_out, _, kh, kw = wt.shape
        mult = k_out // chans
        ho_n, wo_n = dy.shape[2], dy.shape[3]
        usw = uint64(sw)
        if sh == 1 and sw == 1:
            hp, wp = height + 2 * ph, width + 2 * pw
            for job in prange(n_img * chans):
                n = job // chans
                c = job % chans
                dxpad = np.zeros(hp * wp + wp, dx.dtype)
                grid = np.zeros(ho_n * wp, dx.dtype)
                for k in range(c * mult, (c + 1) * mult):
                    for ho in range(ho_n):
                        src = dy[n, k, ho]
                        g0 = uint64(ho * wp)
                        for wo in range(uint64(wo_n)):
                            grid[g0 + wo] = src[wo]
                    for i in range(kh):
                        for j in range(kw):
                            wv = wt[k, 0, i, j]
                            d0 = uint64(i * dh * wp + j * dw)
                            for t in range(uint64(ho_n * wp)):
                                dxpad[d0 + t] += wv * grid[t]
                for h in range(height):
                    dst = dx[n, c, h]
                    s0 = uint64((h + ph) * wp + pw)
                    for w in range(uint64(width)):
                        dst[w] = dxpad[s0 + w]
            return
        for job in prange(n_img * chans):
            n = job // chans
            c = job % chans
            for h in range(height):
                row_ = dx[n, c, h]
                for w in range(width):
                    row_[w] = 0
            for k in range(c * mult, (c + 1) * mult):
                for ho in range(ho_n):
                    src = dy[n, k, ho]
                    for i in range(kh):
                        h = ho * sh - ph + i * dh
                        if h >= 0 and h < height:
                            dst = dx[n, c, h]
                            for j in range(kw):
                                off = j * dw - pw
                                lo, hi = _wo_range(width, wo_n, sw, off)
                                wv = wt[k, 0, i, j]
                                s0 = uint64(lo)
                                d0 = uint64(lo * sw + off)
                                for t in range(uint64(hi - lo)):
                                    dst[d0 + t * usw] += wv * src[s0 + t]

    @njit(parallel=True, cache=True)
    def depthwise_backward_weights(x, dy, dwt, sh, sw, ph, pw, dh, dw):
        """dwt[k,0,i,j] = sum over n, ho, wo of dy[n,k,ho,wo] x[n, k//m, ...] (overwritten)."""
        n_img, chans, height, width = x.shape
        k_out, _, kh, kw = dwt.shape
        mult = k_out // chans
        ho_n, wo_n = dy.shape[2], dy.shape[3]
        usw = uint64(sw)
        if sh == 1 and sw == 1:
            hp, wp = height + 2 * ph, width + 2 * pw
            for k in prange(k_out):
                c = k // mult
                xpad = np.empty(hp * wp + wp, x.dtype)
                grid = np.zeros(ho_n * wp, x.dtype)
                acc = np.zeros((kh * kw, ho_n * wp), x.dtype)     # per-tap vectors of partial sums
                for n in range(n_img):
                    _pad_plane(x[n, c], xpad[:hp * wp], ph, pw)
                    xpad[hp * wp:] = 0
                    for ho in range(ho_n):
                        src = dy[n, k, ho]
                        g0 = uint64(ho * wp)
                        for wo in range(uint64(wo_n)):
                            grid[g0 + wo] = src[wo]
                    for i in range(kh):
                        for j in range(kw):
                            s0 = uint64(i * dh * wp + j * dw)
                            a_ = acc[i * kw + j]
                            for t in range(uint64(ho_n * wp)):
                                a_[t] += grid[t] * xpad[s0 + t]
                for i in range(kh):
                    for j in range(kw):
                        total = 0.0
                        a_ = acc[i * kw + j]
                        for t in range(ho_n * wp):
                            total += a_[t]
                        dwt[k, 0, i, j] = total
            return
        for k in prange(k_out):
            c = k // mult
            acc = np.zeros(wo_n, np.float64)       # a vector of partial sums: the loop vectorises
            for i in range(kh):
                for j in range(kw):
                    off = j * dw - pw
                    lo, hi = _wo_range(width, wo_n, sw, off)
                    acc[:] = 0
                    for n in range(n_img):
                        for ho in range(ho_n):
                            h = ho * sh - ph + i * dh
                            if h >= 0 and h < height:
                                a_ = dy[n, k, ho]
                                b_ = x[n, c, h]
                                s0 = uint64(lo)
                                x0 = uint64(lo * sw + off)
                                for t in range(uint64(hi - lo)):
                                    acc[s0 + t] += a_[s0 + t] * b_[x0 + t * usw]
                    dwt[k, 0, i, j] = acc.sum()

    # -- Winograd transforms ------------------------------------------------
    # V, M, dM, dV are (a*a, channels, T) over T = N*nth*nW tile columns,
    # t = (n*nth + th)*nW + tw: the tile rows the output needs, each with one
    # spare tile (tw = ntw, whose output is dropped and whose dM is zero), so
    # that a row of V is a contiguous run of the grid below.
    # The input side reads the padded input deinterleaved on a grid one tile
    # larger each way (nH = nth + 1, nW = ntw + 1), flattened with the batch
    # into q = (n*nH + hq)*nW + wq:
    #     xd[c, r % m, b % m, q] = xpad[n, c, hq*m + r, wq*m + b]
    # so pixel (r, b) of every tile is one contiguous vector
    # xd[c, r%m, b%m, q + (r//m)*nW + b//m], and the transforms run over long
    # contiguous ranges of q (whole grid rows at a time) and vectorise; the
    # grid rows th < nth are then copied to (or from) their T columns.
    # Zero coefficients of the transform matrices are skipped.

    from .winograd_codelets import a2, a4, at2, at2b, at4, at4b, b2, b4, bt2, bt4

    # transform kinds for _apply
    BT, AT, A, B = 0, 1, 2, 3

    @njit(cache=True)
    def _apply(kind, m, s, sr, sc, d, dr, dc, n, cf):
        """One codelet of F(m x m, 3x3) on rows of s into rows of d (see winograd._codelet)."""
        n = uint64(n)
        if m == 2:
            if kind == 0:
                bt2(s, sr, sc, d, dr, dc, n, cf)
            elif kind == 1:
                at2(s, sr, sc, d, dr, dc, n, cf)
            elif kind == 2:
                a2(s, sr, sc, d, dr, dc, n, cf)
            else:
                b2(s, sr, sc, d, dr, dc, n, cf)
        else:
            if kind == 0:
                bt4(s, sr, sc, d, dr, dc, n, cf)
            elif kind == 1:
                at4(s, sr, sc, d, dr, dc, n, cf)
            elif kind == 2:
                a4(s, sr, sc, d, dr, dc, n, cf)
            else:
                b4(s, sr, sc, d, dr, dc, n, cf)

    @njit(cache=True)
    def _apply_at_bias(m, s, sr, sc, d, dr, dc, n, cf, bias):
        if m == 2:
            at2b(s, sr, sc, d, dr, dc, uint64(n), cf, bias)
        else:
            at4b(s, sr, sc, d, dr, dc, uint64(n), cf, bias)

    @njit(parallel=True, cache=True)
    def winograd_input(x, cf, v, m, ph, pw, n_h, n_w):
        """v[xi*a+nu, c, t] = (B^T d B)[xi, nu] of tile t, x (N, C, H, W) padded by (ph, pw)."""
        n_img, chans = x.shape[0], x.shape[1]
        a = m + 2
        nth = n_h - 1
        per_img = n_h * n_w
        imgs = max(1, 4096 // per_img)           # blocks of whole images on the grid
        blk = min(imgs, n_img) * per_img
        v2 = v.reshape(a * a * chans, v.shape[2])
        for c in prange(chans):
            xd = np.empty((m * m, n_img * per_img + n_w + 2), v.dtype)
            _deinterleave(x, c, xd, m, ph, pw, n_h, n_w)
            tmp = np.empty((a * a, blk), v.dtype)
            sr = np.empty(a, np.uint64)
            sc = np.empty(a, np.uint64)
            dr = np.empty(a, np.uint64)
            dc = np.empty(a, np.uint64)
            for n0 in range(0, n_img, imgs):
                ni = min(imgs, n_img - n0)
                q0 = n0 * per_img
                nb = ni * per_img
                # d B along tile row r: pixel (r, b) is xd[(r%m)*m + b%m, q + (r//m)*nW + b//m]
                for r in range(a):
                    for b in range(a):
                        sr[b] = (r % m) * m + b % m
                        sc[b] = q0 + (r // m) * n_w + b // m
                        dr[b] = r * a + b
                        dc[b] = 0
                    _apply(0, m, xd, sr, sc, tmp, dr, dc, nb, cf)
                # B^T (d B) down column nu, straight into V for each image's valid tile rows
                for nu in range(a):
                    for r in range(a):
                        sr[r] = r * a + nu
                        dr[r] = (r * a + nu) * chans + c
                    for i in range(ni):
                        for r in range(a):
                            sc[r] = i * per_img
                            dc[r] = (n0 + i) * nth * n_w
                        _apply(0, m, tmp, sr, sc, v2, dr, dc, nth * n_w, cf)

    @njit(parallel=True, cache=True)
    def winograd_output(mm, cf, bias, out, m, nth, row_len):
        """out[n, k, th*m+i, tw*m+j] = (A^T M A)[i, j] + bias[k], cropped to the output
        (tile t = (n*nth + th)*row_len + tw; tiles past the output are dropped)."""
        n_img, k_out, ho_n, wo_n = out.shape
        a = m + 2
        rows_per = max(1, 4096 // row_len)          # blocks of whole tile rows
        n_rows = n_img * nth
        blk = min(rows_per, n_rows) * row_len
        um = uint64(m)
        m2 = mm.reshape(a * a * k_out, mm.shape[2])
        for k in prange(k_out):
            tmp = np.empty((m * a, blk), mm.dtype)
            y = np.empty((m, blk), mm.dtype)
            sr = np.empty(a, np.uint64)
            sc = np.empty(a, np.uint64)
            dr = np.empty(a, np.uint64)
            dc = np.zeros(a, np.uint64)
            bk = bias[k]
            for r0 in range(0, n_rows, rows_per):
                nr = min(rows_per, n_rows - r0)
                q0 = r0 * row_len
                nb = nr * row_len
                for nu in range(a):                      # A^T M down each column nu
                    for xi in range(a):
                        sr[xi] = (xi * a + nu) * k_out + k
                        sc[xi] = q0
                    for i in range(m):
                        dr[i] = i * a + nu
                    _apply(1, m, m2, sr, sc, tmp, dr, dc, nb, cf)
                for i in range(m):                       # (A^T M) A along row i, plus the bias
                    for nu in range(a):
                        sr[nu] = i * a + nu
                        sc[nu] = 0
                    for jj in range(m):
                        dr[jj] = jj
                    _apply_at_bias(m, tmp, sr, sc, y, dr, dc, nb, cf, bk)
                    # interleave: out row h = th*m + i takes y[jj, rr*row_len + tw] at w = tw*m + jj
                    full = wo_n // m                     # tiles wholly inside the row
                    for rr in range(nr):
                        row = r0 + rr
                        h = (row % nth) * m + i
                        if h < ho_n:
                            dst = out[row // nth, k, h]
                            s0 = uint64(rr * row_len)
                            for jj in range(um):
                                src = y[jj]
                                for tw in range(uint64(full)):
                                    dst[tw * um + jj] = src[s0 + tw]
                            for w in range(full * m, wo_n):
                                dst[w] = y[w % m, rr * row_len + w // m]

    @njit(parallel=True, cache=True)
    def winograd_dy(dy, cf, dm, m, nth, row_len):
        """dm[xi*a+nu, k, t] = (A dY A^T)[xi, nu] of dy's m x m tile t (zero past the output)."""
        n_img, k_out, ho_n, wo_n = dy.shape
        a = m + 2
        rows_per = max(1, 4096 // row_len)
        n_rows = n_img * nth
        blk = min(rows_per, n_rows) * row_len
        um = uint64(m)
        d2 = dm.reshape(a * a * k_out, dm.shape[2])
        for k in prange(k_out):
            d = np.empty((m * m, blk), dy.dtype)
            tmp = np.empty((a * m, blk), dy.dtype)
            sr = np.empty(a, np.uint64)
            sc = np.zeros(a, np.uint64)
            dr = np.empty(a, np.uint64)
            dc = np.empty(a, np.uint64)
            for r0 in range(0, n_rows, rows_per):
                nr = min(rows_per, n_rows - r0)
                q0 = r0 * row_len
                nb = nr * row_len
                for i in range(m):
                    for jj in range(m):
                        dst = d[i * m + jj]
                        for rr in range(nr):
                            row = r0 + rr
                            h = (row % nth) * m + i
                            d0 = uint64(rr * row_len)
                            cnt = 0
                            if h < ho_n and jj < wo_n:
                                cnt = min((wo_n - 1 - jj) // m + 1, row_len)
                                src = dy[row // nth, k, h]
                                s0 = uint64(jj)
                                for tw in range(uint64(cnt)):
                                    dst[d0 + tw] = src[s0 + tw * um]
                            for tw in range(cnt, row_len):
                                dst[rr * row_len + tw] = 0
                for jj in range(m):                      # A dY down each column jj
                    for i in range(m):
                        sr[i] = i * m + jj
                        sc[i] = 0
                    for xi in range(a):
                        dr[xi] = xi * m + jj
                        dc[xi] = 0
                    _apply(2, m, d, sr, sc, tmp, dr, dc, nb, cf)
                for xi in range(a):                      # (A dY) A^T along each row xi, into dM
                    for jj in range(m):
                        sr[jj] = xi * m + jj
                        sc[jj] = 0
                    for nu in range(a):
                        dr[nu] = (xi * a + nu) * k_out + k
                        dc[nu] = q0
                    _apply(2, m, tmp, sr, sc, d2, dr, dc, nb, cf)

    @njit(parallel=True, cache=True)
    def winograd_dx(dv, cf, dx, m, ph, pw, n_h, n_w):
        """dx = sum over the tiles of (B dV B^T) placed at their corners, padding cropped
        (accumulated per channel on the deinterleaved grid, then written back; dx overwritten)."""
        n_img, chans = dx.shape[0], dx.shape[1]
        a = m + 2
        nth = n_h - 1
        per_img = n_h * n_w
        imgs = max(1, 4096 // per_img)
        blk = min(imgs, n_img) * per_img
        v2 = dv.reshape(a * a * chans, dv.shape[2])
        for c in prange(chans):
            xdd = np.zeros((m * m, n_img * per_img + n_w + 2), dv.dtype)
            tmp = np.empty((a * a, blk), dv.dtype)
            acc = np.empty((a, blk), dv.dtype)
            sr = np.empty(a, np.uint64)
            sc = np.empty(a, np.uint64)
            dr = np.empty(a, np.uint64)
            dc = np.empty(a, np.uint64)
            for n0 in range(0, n_img, imgs):
                ni = min(imgs, n_img - n0)
                q0 = n0 * per_img
                nb = ni * per_img
                for xi in range(a):                      # dV B^T along each row xi, onto the grid
                    for nu in range(a):
                        sr[nu] = (xi * a + nu) * chans + c
                        dr[nu] = xi * a + nu
                    for i in range(ni):
                        for nu in range(a):
                            sc[nu] = (n0 + i) * nth * n_w
                            dc[nu] = i * per_img
                        _apply(3, m, v2, sr, sc, tmp, dr, dc, nth * n_w, cf)
                        for nu in range(a):              # the spare grid row of the image is 0
                            row = tmp[xi * a + nu]
                            for j in range(i * per_img + nth * n_w, (i + 1) * per_img):
                                row[j] = 0
                for b in range(a):                       # B (dV B^T) down each column b
                    for xi in range(a):
                        sr[xi] = xi * a + b
                        sc[xi] = 0
                        dr[xi] = xi
                        dc[xi] = 0
                    _apply(3, m, tmp, sr, sc, acc, dr, dc, nb, cf)
                    for r in range(a):
                        start = q0 + (r // m) * n_w + b // m
                        dst = xdd[(r % m) * m + b % m, start:start + nb]
                        src = acc[r, :nb]
                        for j in range(nb):
                            dst[j] += src[j]
            _interleave(xdd, dx, c, m, ph, pw, n_h, n_w)

    @njit(cache=True)
    def _deinterleave(x, c, xd, m, ph, pw, n_h, n_w):
        """xd[r*m + b, (n*nH + hq)*nW + wq] = x[n, c, hq*m + r - ph, wq*m + b - pw] (0 outside),
        one channel; the tail of xd past the grid is zeroed."""
        n_img, chans, height, width = x.shape
        n_q = n_img * n_h * n_w
        um = uint64(m)
        for r in range(m):
            for b in range(m):
                dst = xd[r * m + b]
                dst[n_q:] = 0
                # columns w = wq*m + b - pw >= 0 start at wq0
                wq0 = (pw - b + m - 1) // m if pw > b else 0
                w0 = wq0 * m + b - pw
                cnt = 0
                if w0 < width:
                    cnt = min((width - 1 - w0) // m + 1, n_w - wq0)
                for n in range(n_img):
                    for hq in range(n_h):
                        h = hq * m + r - ph
                        q0 = (n * n_h + hq) * n_w
                        if h >= 0 and h < height and cnt > 0:
                            src = x[n, c, h]
                            d0 = uint64(q0 + wq0)
                            s0 = uint64(w0)
                            for j in range(uint64(cnt)):
                                dst[d0 + j] = src[s0 + j * um]
                            for j in range(q0, q0 + wq0):
                                dst[j] = 0
                            for j in range(q0 + wq0 + cnt, q0 + n_w):
                                dst[j] = 0
                        else:
                            for j in range(q0, q0 + n_w):
                                dst[j] = 0

    @njit(cache=True)
    def _interleave(xd, dx, c, m, ph, pw, n_h, n_w):
        """dx[n, c, h, w] = xd[((h+ph) % m)*m + (w+pw) % m, (n*nH + (h+ph)//m)*nW + (w+pw)//m]:
        the padded, deinterleaved gradient of one channel back to NCHW, cropped."""
        n_img, chans, height, width = dx.shape
        um = uint64(m)
        for n in range(n_img):
            for h in range(height):
                r = (h + ph) % m
                q0 = (n * n_h + (h + ph) // m) * n_w
                dst = dx[n, c, h]
                for b in range(m):
                    # w = wq*m + b - pw in [0, width)
                    wq0 = (pw - b + m - 1) // m if pw > b else 0
                    w0 = wq0 * m + b - pw
                    if w0 < width:
                        cnt = uint64((width - 1 - w0) // m + 1)
                        src = xd[r * m + b]
                        s0 = uint64(q0 + wq0)
                        d0 = uint64(w0)
                        for j in range(cnt):
                            dst[d0 + j * um] = src[s0 + j]
