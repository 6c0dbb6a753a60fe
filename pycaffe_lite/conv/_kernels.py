"""Numba kernels for the CPU hot loops that whole-array NumPy does badly.

Each kernel has a plain array version in the engine modules (which is also
what CuPy runs); the tests compare the two.  `HAVE_NUMBA` is False when Numba
cannot be imported, or when PYCAFFE_LITE_NO_NUMBA=1, and the engines then use
the array versions everywhere.

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
import os

import numpy as np

HAVE_NUMBA = False
# Below this many elements of work the plain array versions run instead: waking
# Numba's worker threads costs tens of microseconds on a quiet machine and up
# to a scheduler time slice (milliseconds) on a busy one.
MIN_WORK = int(os.environ.get("PYCAFFE_LITE_NUMBA_MIN_WORK", 1 << 17))
if os.environ.get("PYCAFFE_LITE_NO_NUMBA", "") not in ("1", "true", "yes"):
    try:
        from numba import njit, prange, uint64
        HAVE_NUMBA = True
    except Exception:  # pragma: no cover - numba missing or broken
        HAVE_NUMBA = False


if HAVE_NUMBA:
    @njit(parallel=True, cache=True)
    def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho_n, wo_n):
        """cols[(c*kh + i)*kw + j, (n*Ho + ho)*Wo + wo] = x[n, c, ho*sh-ph+i*dh, wo*sw-pw+j*dw]."""
        n_img, chans, height, width = x.shape
        kk = kh * kw
        for row in prange(chans * kk):
            c = row // kk
            i = (row % kk) // kw
            j = row % kw
            for n in range(n_img):
                for ho in range(ho_n):
                    h = ho * sh - ph + i * dh
                    base = (n * ho_n + ho) * wo_n
                    if h < 0 or h >= height:
                        for wo in range(wo_n):
                            cols[row, base + wo] = 0
                    else:
                        for wo in range(wo_n):
                            w = wo * sw - pw + j * dw
                            cols[row, base + wo] = x[n, c, h, w] if (w >= 0 and w < width) else 0

    @njit(parallel=True, cache=True)
    def col2im(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho_n, wo_n):
        """dx = the scatter-add adjoint of im2col (dx is overwritten); one thread per channel."""
        n_img, chans, height, width = dx.shape
        for c in prange(chans):
            for n in range(n_img):
                for h in range(height):
                    for w in range(width):
                        dx[n, c, h, w] = 0
                for i in range(kh):
                    for ho in range(ho_n):
                        h = ho * sh - ph + i * dh
                        if h >= 0 and h < height:
                            base = (n * ho_n + ho) * wo_n
                            for j in range(kw):
                                row = (c * kh + i) * kw + j
                                for wo in range(wo_n):
                                    w = wo * sw - pw + j * dw
                                    if w >= 0 and w < width:
                                        dx[n, c, h, w] += cols[row, base + wo]

    @njit(parallel=True, cache=True)
    def depthwise_forward(x, wt, y, sh, sw, ph, pw, dh, dw):
        """y[n,k] = sum_ij wt[k,0,i,j] x[n, k//m, ...]: group == channels, m = K/C."""
        n_img, chans, height, width = x.shape
        k_out, _, kh, kw = wt.shape
        mult = k_out // chans
        ho_n, wo_n = y.shape[2], y.shape[3]
        for job in prange(n_img * k_out):
            n = job // k_out
            k = job % k_out
            c = k // mult
            for ho in range(ho_n):
                for wo in range(wo_n):
                    y[n, k, ho, wo] = 0
                for i in range(kh):
                    h = ho * sh - ph + i * dh
                    if h >= 0 and h < height:
                        for j in range(kw):
                            wv = wt[k, 0, i, j]
                            for wo in range(wo_n):
                                w = wo * sw - pw + j * dw
                                if w >= 0 and w < width:
                                    y[n, k, ho, wo] += wv * x[n, c, h, w]

    @njit(parallel=True, cache=True)
    def depthwise_backward_data(dy, wt, dx, sh, sw, ph, pw, dh, dw):
        n_img, chans, height, width = dx.shape
        k_out, _, kh, kw = wt.shape
        mult = k_out // chans
        ho_n, wo_n = dy.shape[2], dy.shape[3]
        for job in prange(n_img * chans):
            n = job // chans
            c = job % chans
            for h in range(height):
                for w in range(width):
                    dx[n, c, h, w] = 0
            for k in range(c * mult, (c + 1) * mult):
                for ho in range(ho_n):
                    for i in range(kh):
                        h = ho * sh - ph + i * dh
                        if h >= 0 and h < height:
                            for j in range(kw):
                                wv = wt[k, 0, i, j]
                                for wo in range(wo_n):
                                    w = wo * sw - pw + j * dw
                                    if w >= 0 and w < width:
                                        dx[n, c, h, w] += wv * dy[n, k, ho, wo]

    @njit(parallel=True, cache=True)
    def depthwise_backward_weights(x, dy, dwt, sh, sw, ph, pw, dh, dw):
        """dwt[k,0,i,j] = sum over n, ho, wo of dy[n,k,ho,wo] x[n, k//m, ...] (overwritten)."""
        n_img, chans, height, width = x.shape
        k_out, _, kh, kw = dwt.shape
        mult = k_out // chans
        ho_n, wo_n = dy.shape[2], dy.shape[3]
        for k in prange(k_out):
            c = k // mult
            for i in range(kh):
                for j in range(kw):
                    acc = 0.0
                    for n in range(n_img):
                        for ho in range(ho_n):
                            h = ho * sh - ph + i * dh
                            if h >= 0 and h < height:
                                for wo in range(wo_n):
                                    w = wo * sw - pw + j * dw
                                    if w >= 0 and w < width:
                                        acc += dy[n, k, ho, wo] * x[n, c, h, w]
                    dwt[k, 0, i, j] = acc

    # -- Winograd transforms ------------------------------------------------
    # The tiles live on a grid of nH x nW positions per image (one more row
    # and column than the output needs), flattened with the batch into
    # q = (n*nH + hq)*nW + wq.  The padded input is stored deinterleaved,
    # xd[c, r % m, b % m, q] = xpad[n, c, hq*m + r, wq*m + b], so pixel (r, b)
    # of every tile is one contiguous vector xd[c, r%m, b%m, q + (r//m)*nW + b//m]:
    # all inner loops run over long contiguous ranges of q and vectorise.
    # Grid positions past the output (hq = nth or wq = ntw) are computed and
    # ignored on the way out; on the way back their dM is zero.
    # V, M, dM, dV are (a*a, channels, Q); zero coefficients are skipped.

    @njit(parallel=True, cache=True)
    def winograd_input(xd, bt, v, m, n_w):
        """v[xi*a+nu, c, q] = (B^T d B)[xi, nu] of the tile at grid position q."""
        chans = xd.shape[0]
        a = m + 2
        n_q = v.shape[2]
        blk = min(n_q, 4096)
        for c in prange(chans):
            tmp = np.empty((a, a, blk), v.dtype)
            for q0 in range(0, n_q, blk):
                nb = min(blk, n_q - q0)
                for xi in range(a):
                    for b in range(a):
                        acc = tmp[xi, b, :nb]
                        for j in range(nb):
                            acc[j] = 0
                        for r in range(a):
                            coef = bt[xi, r]
                            if coef != 0:
                                start = q0 + (r // m) * n_w + b // m
                                src = xd[c, r % m, b % m, start:start + nb]
                                for j in range(nb):
                                    acc[j] += coef * src[j]
                for xi in range(a):
                    for nu in range(a):
                        dst = v[xi * a + nu, c, q0:q0 + nb]
                        for j in range(nb):
                            dst[j] = 0
                        for b in range(a):
                            coef = bt[nu, b]
                            if coef != 0:
                                src = tmp[xi, b, :nb]
                                for j in range(nb):
                                    dst[j] += coef * src[j]

    @njit(parallel=True, cache=True)
    def winograd_output(mm, at, bias, out, m, n_h, n_w):
        """out[n, k, hq*m+i, wq*m+j] = (A^T M A)[i, j] + bias[k] on the valid tiles."""
        n_img, k_out, ho_n, wo_n = out.shape
        a = m + 2
        rows_per = max(1, 4096 // n_w)          # blocks of whole grid rows
        n_rows = n_img * n_h
        blk = min(rows_per, n_rows) * n_w
        um = uint64(m)
        for k in prange(k_out):
            tmp = np.empty((m, a, blk), mm.dtype)
            y = np.empty((m, m * blk), mm.dtype)
            bk = bias[k]
            for r0 in range(0, n_rows, rows_per):
                nr = min(rows_per, n_rows - r0)
                q0 = r0 * n_w
                nb = nr * n_w
                tmp[:, :, :nb] = 0
                for nu in range(a):
                    for xi in range(a):
                        src = mm[xi * a + nu, k, q0:q0 + nb]
                        for i in range(m):
                            coef = at[i, xi]
                            if coef != 0:
                                acc = tmp[i, nu, :nb]
                                for j in range(nb):
                                    acc[j] += coef * src[j]
                for i in range(m):
                    for jj in range(m):
                        acc = y[i, jj * blk:jj * blk + nb]
                        for j in range(nb):
                            acc[j] = bk
                        for nu in range(a):
                            coef = at[jj, nu]
                            if coef != 0:
                                src = tmp[i, nu, :nb]
                                for j in range(nb):
                                    acc[j] += coef * src[j]
                # interleave: out row h = hq*m + i takes y[i, jj, rr*nW + wq] at w = wq*m + jj
                for rr in range(nr):
                    row = r0 + rr
                    for i in range(m):
                        h = (row % n_h) * m + i
                        if h < ho_n:
                            dst = out[row // n_h, k, h]
                            src = y[i]
                            for jj in range(min(m, wo_n)):
                                cnt = uint64((wo_n - 1 - jj) // m + 1)
                                s0 = uint64(jj * blk + rr * n_w)
                                d0 = uint64(jj)
                                for wq in range(cnt):
                                    dst[d0 + wq * um] = src[s0 + wq]

    @njit(parallel=True, cache=True)
    def winograd_dy(dy, at, dm, m, n_h, n_w):
        """dm[xi*a+nu, k, q] = (A dY A^T)[xi, nu] of dy's m x m tile at q (0 off the output)."""
        n_img, k_out, ho_n, wo_n = dy.shape
        a = m + 2
        rows_per = max(1, 4096 // n_w)
        n_rows = n_img * n_h
        blk = min(rows_per, n_rows) * n_w
        for k in prange(k_out):
            d = np.empty((m, m, blk), dy.dtype)
            tmp = np.empty((a, m, blk), dy.dtype)
            for r0 in range(0, n_rows, rows_per):
                nr = min(rows_per, n_rows - r0)
                q0 = r0 * n_w
                nb = nr * n_w
                for i in range(m):
                    for jj in range(m):
                        for rr in range(nr):
                            row = r0 + rr
                            h = (row % n_h) * m + i
                            dst = d[i, jj, rr * n_w:(rr + 1) * n_w]
                            if h < ho_n:
                                src = dy[row // n_h, k, h]
                                for wq in range(n_w):
                                    w = wq * m + jj
                                    dst[wq] = src[w] if w < wo_n else 0
                            else:
                                for wq in range(n_w):
                                    dst[wq] = 0
                for xi in range(a):
                    for jj in range(m):
                        acc = tmp[xi, jj, :nb]
                        for j in range(nb):
                            acc[j] = 0
                        for i in range(m):
                            coef = at[i, xi]
                            if coef != 0:
                                src = d[i, jj, :nb]
                                for j in range(nb):
                                    acc[j] += coef * src[j]
                for xi in range(a):
                    for nu in range(a):
                        dst = dm[xi * a + nu, k, q0:q0 + nb]
                        for j in range(nb):
                            dst[j] = 0
                        for jj in range(m):
                            coef = at[jj, nu]
                            if coef != 0:
                                src = tmp[xi, jj, :nb]
                                for j in range(nb):
                                    dst[j] += coef * src[j]

    @njit(parallel=True, cache=True)
    def winograd_dx(dv, bt, xdd, m, n_w):
        """xdd[c, r%m, b%m, q + (r//m)*nW + b//m] = sum of (B dV B^T)[r, b] over tiles q
        (the deinterleaved padded dx; xdd is overwritten)."""
        chans = xdd.shape[0]
        a = m + 2
        n_q = dv.shape[2]
        blk = min(n_q, 4096)
        for c in prange(chans):
            xdd[c] = 0
            tmp = np.empty((a, a, blk), dv.dtype)
            acc = np.empty(blk, dv.dtype)
            for q0 in range(0, n_q, blk):
                nb = min(blk, n_q - q0)
                for xi in range(a):
                    for b in range(a):
                        t = tmp[xi, b, :nb]
                        for j in range(nb):
                            t[j] = 0
                        for nu in range(a):
                            coef = bt[nu, b]
                            if coef != 0:
                                src = dv[xi * a + nu, c, q0:q0 + nb]
                                for j in range(nb):
                                    t[j] += coef * src[j]
                for r in range(a):
                    for b in range(a):
                        for j in range(nb):
                            acc[j] = 0
                        for xi in range(a):
                            coef = bt[xi, r]
                            if coef != 0:
                                src = tmp[xi, b, :nb]
                                for j in range(nb):
                                    acc[j] += coef * src[j]
                        start = q0 + (r // m) * n_w + b // m
                        dst = xdd[c, r % m, b % m, start:start + nb]
                        for j in range(nb):
                            dst[j] += acc[j]

    @njit(parallel=True, cache=True)
    def winograd_deinterleave(x, xd, m, ph, pw, n_h, n_w):
        """xd[c, r, b, (n*nH + hq)*nW + wq] = x[n, c, hq*m + r - ph, wq*m + b - pw] (0 outside);
        the tail of xd past the grid is zeroed."""
        n_img, chans, height, width = x.shape
        n_q = n_img * n_h * n_w
        um = uint64(m)
        for c in prange(chans):
            for r in range(m):
                for b in range(m):
                    dst = xd[c, r, b]
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
