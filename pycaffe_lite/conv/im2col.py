"""The im2col + GEMM engine (Caffe's algorithm, tuned for whole batches).

    forward:   cols = im2col(x)            (C*kh*kw, N, Ho*Wo), channel-major
               Y    = W @ cols             one GEMM per group (batched in C)
               y    = Y transposed to NCHW, bias added in the same pass
    backward:  dW  += dY @ cols^T          (cols recomputed, as Caffe does)
               dx   = col2im(W^T @ dY)     scatter-add back to NCHW

The columns live in the shared workspace (no reallocation per iteration);
when the whole batch would not fit under the workspace cap the batch is worked
through in chunks of images.  Two special cases skip the columns entirely:
a 1x1 kernel with stride 1 and no padding is a plain (batched) GEMM on the
input, and a depthwise layer (group == channels) is a direct sliding-window
sum, not a GEMM per channel.

`im2col` and `col2im` are the one dispatch point for the columns: on CuPy
arrays they launch the CUDA kernels of `pycaffe_lite.gpu.kernels`, on NumPy
arrays the Numba kernels (`pycaffe_lite.kernels.conv`) when there is enough
work.  The array versions here (`im2col_array`, `col2im_array`,
`depthwise_*_array`) are the references in the tests, and what runs otherwise
(CuPy runs the depthwise ones).
"""
from .. import kernels
from ..backend import get_array_module, reused
from ..gpu import kernels as gpu_kernels
from ..kernels import conv as conv_kernels
from .workspace import fingerprint, workspace

# A layer keeps its forward's columns for its backward (Caffe recomputes them)
# when they take at most this many bytes; larger layers recompute.
KEEP_COLS_BYTES = 32 << 20


def _use_numba(xp, work):
    """Numba for NumPy arrays when there is enough work to be worth its threads."""
    return kernels.HAVE_NUMBA and xp.__name__ == "numpy" and work >= kernels.MIN_WORK


def _as_strided(xp, a, shape, strides):
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


# ---------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------
def im2col_array(x, geom, out=None, ws=None):
    """Array version of im2col: pad channel-major, then one strided copy.

    Returns cols of shape (C*kh*kw, N, Ho*Wo) (written into `out` when given)."""
    xp = get_array_module(x)
    ws = ws or workspace()
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    ho, wo = geom.output_hw(h, w)
    hp, wp = h + 2 * ph, w + 2 * pw
    padded = ws.get("im2col_pad", (c, n, hp, wp), x.dtype, xp)
    if ph or pw:
        padded[:, :, :ph] = 0
        padded[:, :, hp - ph:] = 0
        padded[:, :, :, :pw] = 0
        padded[:, :, :, wp - pw:] = 0
    padded[:, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 2, 3)
    s_c, s_n, s_h, s_w = padded.strides
    windows = _as_strided(xp, padded, (c, kh, kw, n, ho, wo),
                          (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w))
    if out is None:
        out = xp.empty((c * kh * kw, n, ho * wo), x.dtype)
    out.reshape(c, kh, kw, n, ho, wo)[...] = windows
    return out


def im2col(x, geom, out=None):
    """cols (C*kh*kw, N, Ho*Wo) of x (N, C, H, W); `out` may be any strided view of that shape."""
    xp = get_array_module(x)
    if gpu_kernels.on_device(xp):
        return gpu_kernels.im2col(x, geom, out)
    n, c, h, w = x.shape
    ho, wo = geom.output_hw(h, w)
    shape = (c * geom.kernel[0] * geom.kernel[1], n, ho * wo)
    if not _use_numba(xp, shape[0] * n * ho * wo):
        return im2col_array(x, geom, out)
    target = out if out is not None and out.flags.c_contiguous else xp.empty(shape, x.dtype)
    conv_kernels.im2col(_contig(xp, x), target.reshape(shape[0], n * ho * wo),
                    *geom.kernel, *geom.stride, *geom.pad, *geom.dilation, ho, wo)
    if out is not None and target is not out:
        out[...] = target
    return target if out is None else out


def col2im_array(cols, x_shape, geom, out=None, ws=None):
    """Array version of col2im: kh*kw strided adds into a padded channel-major buffer."""
    xp = get_array_module(cols)
    ws = ws or workspace()
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom.kernel, geom.stride, geom.pad, geom.dilation
    ho, wo = geom.output_hw(h, w)
    padded = ws.zeros("col2im_pad", (c, n, h + 2 * ph, w + 2 * pw), cols.dtype, xp)
    cols6 = cols.reshape(c, kh, kw, n, ho, wo)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                   j * dw:j * dw + sw * (wo - 1) + 1:sw] += cols6[:, i, j]
    if out is None:
        out = xp.empty(x_shape, cols.dtype)
    out[...] = padded[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)
    return out


def col2im(cols, x_shape, geom, out=None):
    """dx (N, C, H, W): the adjoint of im2col (overlapping windows add up)."""
    xp = get_array_module(cols)
    if gpu_kernels.on_device(xp):
        return gpu_kernels.col2im(cols, x_shape, geom, out)
    if not _use_numba(xp, cols.size):
        return col2im_array(cols, x_shape, geom, out)
    n, c, h, w = x_shape
    ho, wo = geom.output_hw(h, w)
    target = out if out is not None and out.flags.c_contiguous else xp.empty(x_shape, cols.dtype)
    cols = _contig(xp, cols)
    conv_kernels.col2im(cols.reshape(cols.shape[0], -1), target, *geom.kernel, *geom.stride, *geom.pad,
                    *geom.dilation, ho, wo)
    if out is not None and target is not out:
        out[...] = target
    return target if out is None else out


# ---------------------------------------------------------------------------
# depthwise (group == channels): direct sliding-window sums
# ---------------------------------------------------------------------------
def _padded_nchw(x, geom, name, ws):
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ph, pw = geom.pad
    padded = ws.get(name, (n, c, h + 2 * ph, w + 2 * pw), x.dtype, xp)
    if ph or pw:
        padded.fill(0)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def _window(padded, geom, i, j, ho, wo):
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    return padded[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]


def depthwise_forward_array(x, w, geom, out, ws=None):
    ws = ws or workspace()
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    m = k // c
    ho, wo = geom.output_hw(h, wd)
    padded = _padded_nchw(x, geom, "dw_pad", ws)
    y5 = out.reshape(n, c, m, ho, wo)
    w4 = w.reshape(c, m, kh, kw)
    y5.fill(0)
    for i in range(kh):
        for j in range(kw):
            y5 += w4[None, :, :, i, j, None, None] * _window(padded, geom, i, j, ho, wo)[:, :, None]
    return out


def depthwise_backward_data_array(dy, w, geom, x_shape, out, ws=None):
    ws = ws or workspace()
    xp = get_array_module(dy)
    n, c, h, wd = x_shape
    k, _, kh, kw = w.shape
    m = k // c
    ho, wo = dy.shape[2:]
    ph, pw = geom.pad
    padded = ws.zeros("dw_dpad", (n, c, h + 2 * ph, wd + 2 * pw), dy.dtype, xp)
    dy5 = dy.reshape(n, c, m, ho, wo)
    w4 = w.reshape(c, m, kh, kw)
    for i in range(kh):
        for j in range(kw):
            _window(padded, geom, i, j, ho, wo)[...] += (w4[None, :, :, i, j, None, None] * dy5).sum(2)
    out[...] = padded[:, :, ph:ph + h, pw:pw + wd]
    return out


def depthwise_backward_weights_array(x, dy, geom, ws=None):
    ws = ws or workspace()
    xp = get_array_module(x)
    n, c, h, wd = x.shape
    k = dy.shape[1]
    m = k // c
    kh, kw = geom.kernel
    ho, wo = dy.shape[2:]
    padded = _padded_nchw(x, geom, "dw_pad", ws)
    dy5 = dy.reshape(n, c, m, ho, wo)
    dw = xp.empty((c, m, kh, kw), dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dw[:, :, i, j] = xp.einsum("ncmhw,nchw->cm", dy5, _window(padded, geom, i, j, ho, wo))
    return dw.reshape(k, 1, kh, kw)


# ---------------------------------------------------------------------------
# the engine: forward, backward_data, backward_weights, backward
# ---------------------------------------------------------------------------
def supports(geom, x_shape=None, w_shape=None):
    """im2col handles every 2-D convolution."""
    return True


def _per_image_bytes(ckk, k, p, c, h, w, geom, dtype):
    """Workspace bytes per image: columns, GEMM output, and the padded copy of the array path."""
    return ((ckk + k) * p + c * (h + 2 * geom.pad[0]) * (w + 2 * geom.pad[1])) * dtype.itemsize


def _contig(xp, a):
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def forward(x, w, b, geom, out=None, ws=None, ctx=None):
    """y (N, K, Ho, Wo) = conv(x, w) + b; `out` receives it when given.

    With a layer's `ctx`, columns small enough are kept there for its backward."""
    xp = get_array_module(x)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w.shape)
    x, w = _contig(xp, x), _contig(xp, w)
    n, c, h, wd = x.shape
    k = w.shape[0]
    g = geom.group
    ho, wo = geom.output_hw(h, wd)
    p = ho * wo
    if out is None:
        out = xp.empty((n, k, ho, wo), x.dtype)
    if geom.is_depthwise(c) and w.shape[1] == 1:
        if _use_numba(xp, out.size * geom.kernel[0] * geom.kernel[1]):
            conv_kernels.depthwise_forward(x, w, out, *geom.stride, *geom.pad, *geom.dilation)
        else:
            depthwise_forward_array(x, w, geom, out, ws)
        if b is not None:
            out += b.reshape(1, k, 1, 1)
        return out
    kg, cg = k // g, c // g
    if geom.is_1x1:
        xp.matmul(w.reshape(g, kg, cg), x.reshape(n, g, cg, p), out=out.reshape(n, g, kg, p))
        if b is not None:
            out += b.reshape(1, k, 1, 1)
        return out
    ckk = w[0].size * g
    nb = ws.chunk(_per_image_bytes(ckk, k, p, c, h, wd, geom, x.dtype), n)
    keep = ctx is not None and nb == n and ckk * n * p * x.dtype.itemsize <= KEEP_COLS_BYTES
    if ctx is not None:
        ctx.pop("cols_key", None)
    wg = w.reshape(g, kg, ckk // g)
    out3 = out.reshape(n, k, p)
    for n0 in range(0, n, nb):
        nn = min(nb, n - n0)
        if keep:                                 # the layer's own buffer, reused across passes
            buf = ctx["cols"] = reused(ctx.get("cols"), (ckk, n, p), x.dtype, xp)
        else:
            buf = ws.get("cols", (ckk, nn, p), x.dtype, xp)
        cols = im2col(x[n0:n0 + nn], geom, out=buf)
        yk = ws.get("gemm_out", (k, nn, p), x.dtype, xp)
        xp.matmul(wg, cols.reshape(g, ckk // g, nn * p), out=yk.reshape(g, kg, nn * p))
        _batch_major(xp, yk, b, out3[n0:n0 + nn])
    if keep:
        ctx["cols_key"] = (geom,) + fingerprint(x)
    return out


def _batch_major(xp, yk, b, out):
    """out (N, K, P) = yk (K, N, P) transposed, plus the bias when there is one."""
    if _use_numba(xp, yk.size) and out.flags.c_contiguous and (b is None or b.dtype == yk.dtype):
        conv_kernels.batch_major(yk, yk[:0, 0, 0] if b is None else b.reshape(-1), out)
    else:
        batch_major_array(yk, b, out)


def batch_major_array(yk, b, out):
    """_batch_major by array operations (the reference, and the CuPy path)."""
    if b is not None:
        get_array_module(yk).add(yk.transpose(1, 0, 2), b.reshape(1, -1, 1), out=out)
    else:
        out[...] = yk.transpose(1, 0, 2)


def _channel_major(xp, y, out):
    """out (K, N, P) = y (N, K, P) transposed."""
    if _use_numba(xp, y.size) and y.flags.c_contiguous:
        conv_kernels.channel_major(y, out)
    else:
        channel_major_array(y, out)


def channel_major_array(y, out):
    """_channel_major by a transposed copy (the reference, and the CuPy path)."""
    out[...] = y.transpose(1, 0, 2)


def backward(x, w, dy, geom, need_dx=True, need_dw=True, dx_out=None, ws=None, ctx=None):
    """(dx, dw) of a convolution given the top diff dy; either is None when not needed.

    dx is written into `dx_out` when given.  The bias gradient, dy.sum((0, 2, 3)),
    is left to the caller.  Columns the forward kept in `ctx` are reused while x
    is unchanged."""
    geom.check_shapes(x.shape, w.shape)
    kept = None
    if need_dw and ctx and ctx.get("cols_key") == (geom,) + fingerprint(x):
        kept = ctx["cols"]
    return _backward(x, x.shape, w, w.shape, dy, geom, need_dx, need_dw, dx_out, ws, kept)


def backward_data(dy, w, geom, x_shape, out=None, ws=None):
    """dx alone, W^T @ dY then col2im (also the forward of a Deconvolution)."""
    geom.check_shapes(x_shape, w.shape)
    return _backward(None, tuple(x_shape), w, w.shape, dy, geom, True, False, out, ws, None)[0]


def backward_weights(x, dy, geom, w_shape, ws=None):
    """dw alone (also a Deconvolution's weight gradient, with the roles swapped)."""
    geom.check_shapes(x.shape, w_shape)
    return _backward(x, x.shape, None, tuple(w_shape), dy, geom, False, True, None, ws, None)[1]


def _backward(x, x_shape, w, w_shape, dy, geom, need_dx, need_dw, dx_out, ws, kept_cols):
    # x is None when only dx is wanted, w is None when only dw is wanted; kept_cols are
    # the whole batch's columns of x from the forward, or None.
    xp = get_array_module(dy)
    ws = ws or workspace()
    dy = _contig(xp, dy)
    x = None if x is None else _contig(xp, x)
    w = None if w is None else _contig(xp, w)
    n, c, h, wd = x_shape
    k = w_shape[0]
    g = geom.group
    kg, cg = k // g, c // g
    ho, wo = dy.shape[2:]
    p = ho * wo
    dw = None
    if need_dx and dx_out is None:
        dx_out = xp.empty(x_shape, dy.dtype)
    if geom.is_depthwise(c) and w_shape[1] == 1:
        numba = _use_numba(xp, dy.size * geom.kernel[0] * geom.kernel[1])
        if need_dx:
            if numba:
                conv_kernels.depthwise_backward_data(dy, w, dx_out, *geom.stride, *geom.pad, *geom.dilation)
            else:
                depthwise_backward_data_array(dy, w, geom, x_shape, dx_out, ws)
        if need_dw:
            if numba:
                dw = xp.empty(w_shape, dy.dtype)
                conv_kernels.depthwise_backward_weights(x, dy, dw, *geom.stride, *geom.pad, *geom.dilation)
            else:
                dw = depthwise_backward_weights_array(x, dy, geom, ws)
        return (dx_out if need_dx else None), dw
    if geom.is_1x1:
        dy4 = dy.reshape(n, g, kg, p)
        if need_dw:
            # one GEMM per image and group, then a sum: no transposed copies of x or dy
            dw = xp.matmul(dy4, x.reshape(n, g, cg, p).transpose(0, 1, 3, 2)).sum(0).reshape(w_shape)
        if need_dx:
            xp.matmul(w.reshape(g, kg, cg).transpose(0, 2, 1), dy4, out=dx_out.reshape(n, g, cg, p))
        return (dx_out if need_dx else None), dw
    ckk = cg * geom.kernel[0] * geom.kernel[1] * g
    nb = ws.chunk(_per_image_bytes(ckk, k, p, c, h, wd, geom, dy.dtype), n)
    if need_dw:
        dw = xp.zeros((g, kg, ckk // g), dy.dtype)
    for n0 in range(0, n, nb):
        nn = min(nb, n - n0)
        dyk = ws.get("gemm_out", (k, nn, p), dy.dtype, xp)
        _channel_major(xp, dy[n0:n0 + nn].reshape(nn, k, p), dyk)
        dyg = dyk.reshape(g, kg, nn * p)
        cols = ws.get("cols", (ckk, nn, p), dy.dtype, xp)
        if need_dw:
            if kept_cols is not None and nn == n:
                cols_x = kept_cols
            else:
                cols_x = im2col(x[n0:n0 + nn], geom, out=cols)
            # dW^T = cols @ dY^T: BLAS runs this orientation 10-25 % faster than dY @ cols^T
            dw += xp.matmul(cols_x.reshape(g, ckk // g, nn * p), dyg.transpose(0, 2, 1)).transpose(0, 2, 1)
        if need_dx:
            xp.matmul(w.reshape(g, kg, ckk // g).transpose(0, 2, 1), dyg,
                      out=cols.reshape(g, ckk // g, nn * p))
            col2im(cols, (nn, c, h, wd), geom, out=dx_out[n0:n0 + nn])
    if need_dw:
        dw = dw.reshape(w_shape)
    return (dx_out if need_dx else None), dw
