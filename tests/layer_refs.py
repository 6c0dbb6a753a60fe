"""Plain NumPy references for the layers, written from Caffe's C++ one value at a time: the
per-family tests and the layer harness (tests/layer_cases.py) check the layers against them."""
import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)


# ---- neuron ------------------------------------------------------------
def elementwise(fn, x):
    """A plain loop over the elements: the reference the layers are checked against."""
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        out[i] = fn(float(v))
    return out


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def prelu_reference(x, slopes):
    out = np.empty_like(x)
    for idx, v in np.ndenumerate(x):
        a = slopes if np.ndim(slopes) == 0 else slopes[idx[1]]
        out[idx] = max(v, 0) + a * min(v, 0)
    return out


# ---- vision ------------------------------------------------------------
def out_size(H, k, s, p, ceil=True):
    n = (math.ceil if ceil else math.floor)((H + 2 * p - k) / s) + 1
    return n


def ref_pool(x, method, kernel, stride, pad, ceil=True):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    N, C, H, W = x.shape
    Ho, Wo = out_size(H, kh, sh, ph, ceil), out_size(W, kw, sw, pw, ceil)
    if ph or pw:
        Ho -= (Ho - 1) * sh >= H + ph
        Wo -= (Wo - 1) * sw >= W + pw
    top = np.zeros((N, C, Ho, Wo))
    mask = np.full((N, C, Ho, Wo), -1)
    for n in range(N):
        for c in range(C):
            for oy in range(Ho):
                for ox in range(Wo):
                    hs, ws = oy * sh - ph, ox * sw - pw
                    he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
                    size = (he - hs) * (we - ws)
                    hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                    if method == "MAX":
                        best = -FLT_MAX
                        for h in range(hs, he):
                            for w in range(ws, we):
                                if x[n, c, h, w] > best:
                                    best, mask[n, c, oy, ox] = x[n, c, h, w], h * W + w
                        top[n, c, oy, ox] = best
                    else:
                        top[n, c, oy, ox] = x[n, c, hs:he, ws:we].sum() / size
    return top, mask


def ref_sto_test(x, k, s):
    N, C, H, W = x.shape
    Ho, Wo = out_size(H, k, s, 0), out_size(W, k, s, 0)
    top = np.zeros((N, C, Ho, Wo))
    for n, c, oy, ox in np.ndindex(N, C, Ho, Wo):
        win = x[n, c, oy * s:min(oy * s + k, H), ox * s:min(ox * s + k, W)]
        top[n, c, oy, ox] = (win * win).sum() / (win.sum() + np.finfo(np.float32).tiny)
    return top


def ref_lrn_across(x, n, alpha, beta, k):
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    for c in range(C):
        lo, hi = max(0, c - (n - 1) // 2), min(C, c + (n - 1) // 2 + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, c] = x[:, c] * scale ** -beta
    return out


def ref_lrn_within(x, n, alpha, beta):
    N, C, H, W = x.shape
    r = (n - 1) // 2
    out = np.zeros_like(x)
    for h, w in np.ndindex(H, W):
        win = x[:, :, max(0, h - r):h + r + 1, max(0, w - r):w + r + 1]
        scale = 1 + alpha / (n * n) * (win ** 2).sum(axis=(2, 3))
        out[:, :, h, w] = x[:, :, h, w] * scale ** -beta
    return out


# ---- conv ------------------------------------------------------------
def conv_loops(x, w, b, kernel, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Caffe's convolution, one output value at a time."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    cg, kg = c // group, k // group
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((n, k, ho, wo))
    for i in range(n):
        for o in range(k):
            g = o // kg
            for r in range(ho):
                for q in range(wo):
                    total = 0.0 if b is None else b[o]
                    for ci in range(cg):
                        for a in range(kh):
                            for e in range(kw):
                                hh, ww = r * sh - ph + a * dh, q * sw - pw + e * dw
                                if 0 <= hh < h and 0 <= ww < wd:
                                    total += w[o, ci, a, e] * x[i, g * cg + ci, hh, ww]
                    y[i, o, r, q] = total
    return y


def deconv_loops(x, w, b, kernel, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Caffe's deconvolution: every input value scatters w[c, k] into the output."""
    n, c, h, wd = x.shape
    kg = w.shape[1]
    k = kg * group
    cg = c // group
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    ho = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    wo = sw * (wd - 1) + dw * (kw - 1) + 1 - 2 * pw
    y = np.zeros((n, k, ho, wo))
    for i in range(n):
        for ci in range(c):
            g = ci // cg
            for r in range(h):
                for q in range(wd):
                    for o in range(kg):
                        for a in range(kh):
                            for e in range(kw):
                                hh, ww = r * sh - ph + a * dh, q * sw - pw + e * dw
                                if 0 <= hh < ho and 0 <= ww < wo:
                                    y[i, g * kg + o, hh, ww] += w[ci, o, a, e] * x[i, ci, r, q]
    if b is not None:
        y += b[None, :, None, None]
    return y


def im2col_loops(x, kernel, stride=(1, 1), pad=(0, 0), dilation=(1, 1)):
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    cols = np.zeros((n, c * kh * kw, ho, wo))
    for i in range(n):
        for ci in range(c):
            for a in range(kh):
                for e in range(kw):
                    for r in range(ho):
                        for q in range(wo):
                            hh, ww = r * sh - ph + a * dh, q * sw - pw + e * dw
                            if 0 <= hh < h and 0 <= ww < wd:
                                cols[i, (ci * kh + a) * kw + e, r, q] = x[i, ci, hh, ww]
    return cols


# ---- common ------------------------------------------------------------
def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    out = np.empty_like(x)
    groups = [(n,) for n in range(x.shape[0])] if across_channels else \
        [(n, c) for n in range(x.shape[0]) for c in range(x.shape[1])]
    for g in groups:
        values = x[g].ravel().tolist()
        mean = sum(values) / len(values)
        centered = x[g] - mean
        if normalize_variance:
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            centered = centered / (std + eps)
        out[g] = centered
    return out


def argmax_reference(x, k, axis):
    moved = np.moveaxis(x, axis, -1)
    idx = np.empty(moved.shape[:-1] + (k,))
    for pos in np.ndindex(moved.shape[:-1]):
        pairs = sorted(((v, j) for j, v in enumerate(moved[pos])), reverse=True)
        idx[pos] = [j for _, j in pairs[:k]]
    return np.moveaxis(idx, -1, axis), np.moveaxis(np.take_along_axis(moved, idx.astype(int), -1), -1, axis)


def broadcast_reference(x, operand, axis, op):
    """x op operand with operand's axes lined up from `axis`, as a plain loop."""
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        out[idx] = op(x[idx], operand[idx[axis:axis + operand.ndim]])
    return out


# ---- loss ------------------------------------------------------------
def ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_softmax_loss(scores, labels, ignore, mode):
    """Loops over (n, spatial) with classes on axis 1."""
    N, C = scores.shape[:2]
    s = scores.reshape(N, C, -1)
    lab = labels.reshape(N, -1)
    total, valid = 0.0, 0
    for n in range(N):
        for j in range(s.shape[2]):
            if lab[n, j] == ignore:
                continue
            p = np.exp(s[n, :, j] - s[n, :, j].max())
            total -= np.log(max(p[int(lab[n, j])] / p.sum(), FLT_MIN))
            valid += 1
    norm = {"FULL": N * s.shape[2], "VALID": valid, "BATCH_SIZE": N, "NONE": 1}[mode]
    return total / max(norm, 1)


def ref_sigmoid_ce(x, t, ignore, mode):
    valid = np.ones(x.shape, bool) if ignore is None else t.astype(int) != ignore
    p = 1 / (1 + np.exp(-x))
    terms = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    norm = {"FULL": x.size, "VALID": valid.sum(), "BATCH_SIZE": x.shape[0], "NONE": 1}[mode]
    return (terms * valid).sum() / max(norm, 1)


def ref_infogain(scores, labels, H, ignore=None, mode="VALID"):
    N, C = scores.shape[:2]
    p = ref_softmax(scores, 1).reshape(N, C, -1)
    lab = labels.reshape(N, -1)
    total, valid = 0.0, 0
    for n in range(N):
        for j in range(p.shape[2]):
            if lab[n, j] == ignore:
                continue
            total -= (H[int(lab[n, j])] * np.log(np.maximum(p[n, :, j], 1e-20))).sum()
            valid += 1
    norm = {"FULL": N * p.shape[2], "VALID": valid, "BATCH_SIZE": N, "NONE": 1}[mode]
    return total / max(norm, 1)


def ref_contrastive(a, b, y, margin, legacy):
    total = 0.0
    for n in range(a.shape[0]):
        d2 = ((a[n] - b[n]) ** 2).sum()
        if y[n]:
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - np.sqrt(d2), 0.0) ** 2
    return total / a.shape[0] / 2


# ---- norm ------------------------------------------------------------
def channel_values(x, c):
    """All values of channel c (axis 1; a 1-D blob is one channel) as a flat list."""
    return list(x.ravel()) if x.ndim == 1 else list(x[:, c].ravel())


def batch_reference(x, eps=1e-5):
    """(y, mean, biased var) per channel, by plain sums."""
    channels = 1 if x.ndim == 1 else x.shape[1]
    y = np.empty_like(x)
    means, variances = [], []
    for c in range(channels):
        values = channel_values(x, c)
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        means.append(mean)
        variances.append(var)
        if x.ndim == 1:
            y[:] = (x - mean) / (var + eps) ** 0.5
        else:
            y[:, c] = (x[:, c] - mean) / (var + eps) ** 0.5
    return y, np.array(means), np.array(variances)


# ---- recurrent ------------------------------------------------------------
def sigm(v):
    return 1 / (1 + np.exp(-v))


def ref_lstm(x, cont, params, x_static=None, h0=None, c0=None):
    W_xc, b_c = params[0], params[1]
    W_hc = params[-1]
    (T, N), H = x.shape[:2], W_hc.shape[1]
    out = np.zeros((T, N, H))
    hT, cT = np.zeros((N, H)), np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0[0, n].copy()
        c = np.zeros(H) if c0 is None else c0[0, n].copy()
        for t in range(T):
            gate = W_hc @ (cont[t, n] * h) + W_xc @ x[t, n] + b_c
            if x_static is not None:
                gate += params[2] @ x_static[n]
            i, f, o, g = sigm(gate[:H]), sigm(gate[H:2 * H]), sigm(gate[2 * H:3 * H]), np.tanh(gate[3 * H:])
            c = cont[t, n] * f * c + i * g
            h = o * np.tanh(c)
            out[t, n] = h
        hT[n], cT[n] = h, c
    return out, hT, cT


def ref_rnn(x, cont, params, x_static=None, h0=None):
    W_xh, b_h = params[0], params[1]
    W_hh, W_ho, b_o = params[-3:]
    (T, N), H = x.shape[:2], W_hh.shape[0]
    out = np.zeros((T, N, H))
    hT = np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0[0, n].copy()
        for t in range(T):
            pre = W_hh @ (cont[t, n] * h) + W_xh @ x[t, n] + b_h
            if x_static is not None:
                pre += params[2] @ x_static[n]
            h = np.tanh(pre)
            out[t, n] = np.tanh(W_ho @ h + b_o)
        hT[n] = h
    return out, hT


# ---- ristretto -------------------------------------------------------------
def fixed_point(x, bit_width, fl):
    """Ristretto's dynamic fixed point <bit_width, fl>: saturate, then round to nearest (ties to
    even, as its GPU kernels' rint) on the grid 2^-fl."""
    step = 2.0 ** -fl
    return np.rint(np.clip(x, -2.0 ** (bit_width - 1) * step, (2.0 ** (bit_width - 1) - 1) * step) / step) * step
