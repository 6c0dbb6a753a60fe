"""The Winograd engine: F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 layers.

Lavin & Gray's minimal filtering: an output tile of m x m pixels comes from an
a x a input tile (a = m + 2) as

    Y = A^T [ (G g G^T) . (B^T d B) ] A

so that the channel sums become one GEMM per tile position (xi, nu):

    U[xi,nu] = (G g G^T)[xi,nu]      (K, C)   the kernels, transformed
    V[xi,nu] = (B^T d B)[xi,nu]      (C, T)   every input tile, T = N*tiles
    M[xi,nu] = U[xi,nu] @ V[xi,nu]   (K, T)   a*a GEMMs, batched in one call

F(2x2,3x3) does 16 multiplies where the direct form does 36 (2.25x fewer),
F(4x4,3x3) 36 where it does 144 (4x fewer), at the price of transforms and of
some precision (F(4x4) loses about two more digits in float32).

The backward passes follow the same algebra (the chain rule through these
linear maps, so they are the exact gradients of the forward):

    dM = A dY A^T;   dU = dM @ V^T -> dg = G^T dU G;   dV = U^T @ dM -> dd = B dV B^T

and the dd tiles, which overlap by 2 pixels, are added back into dx.

The array version below (transforms as small matrix products, `xp`-generic)
is what CuPy runs and the reference in the tests; on NumPy arrays the
transforms run as fused Numba kernels (`pycaffe_lite.kernels.conv`), vectorised across tiles.
"""
import numpy as np

from .. import kernels
from ..backend import get_array_module, reused
from ..kernels import conv as conv_kernels
from .workspace import fingerprint, workspace

# Lavin & Gray (2015), "Fast Algorithms for Convolutional Neural Networks".
_MATRICES = {
    2: dict(
        BT=[[1, 0, -1, 0],
            [0, 1, 1, 0],
            [0, -1, 1, 0],
            [0, 1, 0, -1]],
        G=[[1, 0, 0],
           [0.5, 0.5, 0.5],
           [0.5, -0.5, 0.5],
           [0, 0, 1]],
        AT=[[1, 1, 1, 0],
            [0, 1, -1, -1]]),
    4: dict(
        BT=[[4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1]],
        G=[[1 / 4, 0, 0],
           [-1 / 6, -1 / 6, -1 / 6],
           [-1 / 6, 1 / 6, -1 / 6],
           [1 / 24, 1 / 12, 1 / 6],
           [1 / 24, -1 / 12, 1 / 6],
           [0, 0, 1]],
        AT=[[1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 0],
            [0, 1, 1, 4, 4, 0],
            [0, 1, -1, 8, -8, 1]]),
}


def matrices(m, dtype=np.float64, xp=np):
    """(BT, G, AT) of F(m x m, 3 x 3) as arrays of `dtype`."""
    mats = _MATRICES[m]
    return tuple(xp.asarray(np.array(mats[k], dtype=np.float64), dtype=dtype) for k in ("BT", "G", "AT"))


def supports(geom, x_shape=None, w_shape=None):
    """3x3 kernels, stride 1, dilation 1 (any pad and group)."""
    return geom.kernel == (3, 3) and geom.unit_stride and geom.dilation == (1, 1)


def _use_numba(xp, x_shape=None, k=0):
    """The Numba grid kernels for NumPy arrays with enough work to be worth their threads."""
    if not (kernels.HAVE_NUMBA and xp.__name__ == "numpy"):
        return False
    n, c, h, w = x_shape
    return n * max(c, k) * h * w * 4 >= kernels.MIN_WORK


class _Plan:
    def __init__(self, x_shape, k, geom, m, grid):
        n, c, h, w = x_shape
        self.m, self.a = m, m + 2
        self.n, self.c, self.h, self.w, self.k, self.g = n, c, h, w, k, geom.group
        self.ph, self.pw = geom.pad
        self.ho, self.wo = geom.output_hw(h, w)
        self.nth = -(-self.ho // m)
        self.ntw = -(-self.wo // m)
        self.t = n * self.nth * self.ntw
        # the Numba kernels work on a grid one tile larger each way (see kernels/conv.py)
        self.grid = grid
        self.n_h, self.n_w = self.nth + 1, self.ntw + 1
        self.q = n * self.n_h * self.n_w
        # columns of V, M, dM, dV: the tiles, plus one spare per tile row on the grid
        self.cols = n * self.nth * self.n_w if grid else self.t


# ---------------------------------------------------------------------------
# transforms, array versions (xp-generic)
# ---------------------------------------------------------------------------
def _sandwich(xp, left, a, right_t):
    """left @ a @ right_t^T over the first two axes of a (p, q, ...) -> (r, s, ...)."""
    p, q = a.shape[:2]
    rest = a.shape[2:]
    t = (left @ a.reshape(p, -1)).reshape(left.shape[0], q, -1)   # (r, q, R)
    t = xp.matmul(right_t, t)                                      # (r, s, R)
    return t.reshape((left.shape[0], right_t.shape[0]) + rest)


def input_transform_array(x, plan, bt, ws=None):
    """V (a*a, C, T) = B^T d B of every a x a input tile (tiles at stride m)."""
    xp = get_array_module(x)
    ws = ws or workspace()
    p = plan
    hx, wx = p.nth * p.m + 2, p.ntw * p.m + 2
    xpad = ws.get("wino_xpad", (p.n, p.c, hx, wx), x.dtype, xp)
    xpad.fill(0)
    hh, ww = min(p.h, hx - p.ph), min(p.w, wx - p.pw)
    xpad[:, :, p.ph:p.ph + hh, p.pw:p.pw + ww] = x[:, :, :hh, :ww]
    s = xpad.strides
    tiles = xp.lib.stride_tricks.as_strided(
        xpad, (p.a, p.a, p.c, p.n, p.nth, p.ntw), (s[2], s[3], s[1], s[0], p.m * s[2], p.m * s[3]))
    d = xp.ascontiguousarray(tiles)
    return _sandwich(xp, bt, d, bt).reshape(p.a * p.a, p.c, p.cols)


def output_transform_array(mm, plan, at, b, out):
    """out (N, K, Ho, Wo) = A^T M A of every tile, plus the bias."""
    xp = get_array_module(mm)
    p = plan
    y = _sandwich(xp, at, mm.reshape(p.a, p.a, p.k, p.n, p.nth, p.ntw), at)  # (m, m, K, N, nth, ntw)
    full = y.transpose(3, 2, 4, 0, 5, 1).reshape(p.n, p.k, p.nth * p.m, p.ntw * p.m)[:, :, :p.ho, :p.wo]
    if b is not None:
        xp.add(full, b.reshape(1, p.k, 1, 1), out=out)
    else:
        out[...] = full
    return out


def dy_transform_array(dy, plan, at, ws=None):
    """dM (a*a, K, T) = A dY A^T of every m x m tile of dy."""
    xp = get_array_module(dy)
    ws = ws or workspace()
    p = plan
    ext = ws.get("wino_dyext", (p.n, p.k, p.nth * p.m, p.ntw * p.m), dy.dtype, xp)
    if (p.nth * p.m, p.ntw * p.m) != (p.ho, p.wo):
        ext.fill(0)
    ext[:, :, :p.ho, :p.wo] = dy
    tiles = ext.reshape(p.n, p.k, p.nth, p.m, p.ntw, p.m).transpose(3, 5, 1, 0, 2, 4)
    a_mat = at.T
    return _sandwich(xp, a_mat, xp.ascontiguousarray(tiles), a_mat).reshape(p.a * p.a, p.k, p.cols)


def dx_transform_array(dv, plan, bt, out, ws=None):
    """dx (N, C, H, W): B dV B^T of every tile, overlap-added, padding cropped."""
    xp = get_array_module(dv)
    ws = ws or workspace()
    p = plan
    b_mat = bt.T
    dd = _sandwich(xp, b_mat, dv.reshape(p.a, p.a, p.c, p.n, p.nth, p.ntw), b_mat)  # (a, a, C, N, nth, ntw)
    hx, wx = (p.nth + 1) * p.m, (p.ntw + 1) * p.m
    acc = ws.zeros("wino_dxacc", (p.n, p.c, hx, wx), dv.dtype, xp)
    for i in range(2):
        rows = min(p.m, p.a - i * p.m)
        for j in range(2):
            cols = min(p.m, p.a - j * p.m)
            dst = acc[:, :, i * p.m:(i + p.nth) * p.m, j * p.m:(j + p.ntw) * p.m]
            dst = dst.reshape(p.n, p.c, p.nth, p.m, p.ntw, p.m)[:, :, :, :rows, :, :cols]
            dst += dd[i * p.m:i * p.m + rows, j * p.m:j * p.m + cols].transpose(3, 2, 4, 0, 5, 1)
    hh, ww = min(p.h, hx - p.ph), min(p.w, wx - p.pw)
    out[:, :, :hh, :ww] = acc[:, :, p.ph:p.ph + hh, p.pw:p.pw + ww]
    if (hh, ww) != (p.h, p.w):   # rows/cols of x that no output reads: zero gradient
        out[:, :, hh:] = 0
        out[:, :, :, ww:] = 0
    return out


# ---------------------------------------------------------------------------
# transforms: the Numba kernels on the tile grid (NumPy), else the array versions
# ---------------------------------------------------------------------------
def _input_transform(xp, x, p, bt, ws, out=None):
    if not p.grid:
        v = input_transform_array(x, p, bt, ws)
        if out is not None:
            out[...] = v
            return out
        return v
    v = out if out is not None else ws.get("wino_v", (p.a * p.a, p.c, p.cols), x.dtype, xp)
    conv_kernels.winograd_input(x, codelet_coefficients(f"bt{p.m}", x.dtype), v, p.m, p.ph, p.pw, p.n_h, p.n_w)
    return v


def _output_transform(xp, mm, p, at, b, out):
    if not p.grid:
        return output_transform_array(mm, p, at, b, out)
    bias = b if b is not None else xp.zeros(p.k, mm.dtype)
    conv_kernels.winograd_output(mm, codelet_coefficients(f"at{p.m}", mm.dtype), bias.astype(mm.dtype, copy=False),
                             out, p.m, p.nth, p.n_w)
    return out


def _dy_transform(xp, dy, p, at, ws):
    if not p.grid:
        return dy_transform_array(dy, p, at, ws)
    dm = ws.get("wino_dm", (p.a * p.a, p.k, p.cols), dy.dtype, xp)
    conv_kernels.winograd_dy(dy, codelet_coefficients(f"a{p.m}", dy.dtype), dm, p.m, p.nth, p.n_w)
    return dm


def _dx_transform(xp, dv, p, bt, out, ws):
    if not p.grid:
        return dx_transform_array(dv, p, bt, out, ws)
    conv_kernels.winograd_dx(dv, codelet_coefficients(f"b{p.m}", dv.dtype), out, p.m, p.ph, p.pw, p.n_h, p.n_w)
    return out


def kernel_transform(w, g_mat, group):
    """U (a*a, G, K/G, C/G) = G w G^T for every (k, c): one GEMM with G (x) G."""
    xp = get_array_module(w)
    k, cg, kh, kw = w.shape
    a = g_mat.shape[0]
    gg = xp.einsum("xi,yj->xyij", g_mat, g_mat).reshape(a * a, kh * kw)   # Kronecker product
    u = gg @ w.reshape(k * cg, kh * kw).T                                  # (a*a, K*Cg)
    return u.reshape(a * a, group, k // group, cg)


def _kernel_adjoint(du, g_mat, w_shape):
    """dw (K, C/G, 3, 3) = G^T dU G for every (k, c), dU given as (a*a, G, K/G, C/G)."""
    xp = get_array_module(du)
    a = g_mat.shape[0]
    kh, kw = w_shape[2:]
    gg = xp.einsum("xi,yj->xyij", g_mat, g_mat).reshape(a * a, kh * kw)
    dw = du.reshape(a * a, -1).T @ gg                                      # (K*Cg, 9)
    return dw.reshape(w_shape)


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------
def _contig(xp, a):
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def _check(geom):
    if not supports(geom):
        raise ValueError(f"the Winograd engine needs a 3x3 kernel with stride 1 and dilation 1, "
                         f"got kernel {geom.kernel} stride {geom.stride} dilation {geom.dilation}")


def forward(x, w, b, geom, m=2, out=None, ws=None, ctx=None):
    """y = conv(x, w) + b with F(m x m, 3x3), m = 2 or 4."""
    xp = get_array_module(x)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w.shape)
    _check(geom)
    x, w = _contig(xp, x), _contig(xp, w)
    bt, g_mat, at = matrices(m, x.dtype, xp)
    p = _Plan(x.shape, w.shape[0], geom, m, _use_numba(xp, x.shape, w.shape[0]))
    if out is None:
        out = xp.empty((p.n, p.k, p.ho, p.wo), x.dtype)
    keep = None
    if ctx is not None:
        # V is kept for backward in a buffer of the layer's own (reused across iterations)
        keep = reused(ctx.get("v_buf"), (p.a * p.a, p.c, p.cols), x.dtype, xp)
    v = _input_transform(xp, x, p, bt, ws, out=keep)
    # U depends on the weights only: kept in ctx while they are unchanged (inference)
    w_key = (m,) + fingerprint(w)
    u = ctx.get("u") if ctx is not None and ctx.get("u_key") == w_key else None
    if u is None:
        u = kernel_transform(w, g_mat, p.g)
    mm = ws.get("wino_m", (p.a * p.a, p.k, p.cols), x.dtype, xp)
    xp.matmul(u, v.reshape(p.a * p.a, p.g, p.c // p.g, p.cols), out=mm.reshape(p.a * p.a, p.g, p.k // p.g, p.cols))
    _output_transform(xp, mm, p, at, b, out)
    if ctx is not None:
        ctx.update(key=(m, p.grid) + fingerprint(x, w), u=u, u_key=w_key, v=v, v_buf=v)
    return out


def backward(x, w, dy, geom, m=2, need_dx=True, need_dw=True, dx_out=None, ws=None, ctx=None):
    """(dx, dw) with F(m x m, 3x3); reuses U, V of a matching forward kept in `ctx`."""
    xp = get_array_module(dy)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w.shape)
    _check(geom)
    x, w, dy = _contig(xp, x), _contig(xp, w), _contig(xp, dy)
    bt, g_mat, at = matrices(m, dy.dtype, xp)
    p = _Plan(x.shape, w.shape[0], geom, m, _use_numba(xp, x.shape, w.shape[0]))
    u = v = None
    if ctx and ctx.get("key") == (m, p.grid) + fingerprint(x, w):
        u, v = ctx["u"], ctx["v"]
    if ctx is not None:
        ctx.pop("key", None)     # V is used once; its buffer stays for the next forward
    dm = _dy_transform(xp, dy, p, at, ws)                 # (a*a, K, T)
    dmg = dm.reshape(p.a * p.a, p.g, p.k // p.g, p.cols)
    dx = dw = None
    if need_dw:
        if v is None:
            v = _input_transform(xp, x, p, bt, ws)
        du = xp.matmul(dmg, v.reshape(p.a * p.a, p.g, p.c // p.g, p.cols).transpose(0, 1, 3, 2))
        dw = _kernel_adjoint(du, g_mat, w.shape)                          # G^T dU G
    if need_dx:
        if u is None:
            u = kernel_transform(w, g_mat, p.g)
        dv = ws.get("wino_dv", (p.a * p.a, p.c, p.cols), dy.dtype, xp)
        xp.matmul(u.transpose(0, 1, 3, 2), dmg, out=dv.reshape(p.a * p.a, p.g, p.c // p.g, p.cols))
        if dx_out is None:
            dx_out = xp.empty(x.shape, dy.dtype)
        dx = _dx_transform(xp, dv, p, bt, dx_out, ws)
    return dx, dw


def backward_data(dy, w, geom, x_shape, m=2, out=None, ws=None):
    """dx alone (the forward of a 3x3 stride-1 Deconvolution)."""
    xp = get_array_module(dy)
    ws = ws or workspace()
    geom.check_shapes(x_shape, w.shape)
    _check(geom)
    w, dy = _contig(xp, w), _contig(xp, dy)
    bt, g_mat, at = matrices(m, dy.dtype, xp)
    p = _Plan(x_shape, w.shape[0], geom, m, _use_numba(xp, x_shape, w.shape[0]))
    dm = _dy_transform(xp, dy, p, at, ws)
    u = kernel_transform(w, g_mat, p.g)
    dv = ws.get("wino_dv", (p.a * p.a, p.c, p.cols), dy.dtype, xp)
    xp.matmul(u.transpose(0, 1, 3, 2), dm.reshape(p.a * p.a, p.g, p.k // p.g, p.cols),
              out=dv.reshape(p.a * p.a, p.g, p.c // p.g, p.cols))
    if out is None:
        out = xp.empty(x_shape, dy.dtype)
    return _dx_transform(xp, dv, p, bt, out, ws)


def backward_weights(x, dy, geom, w_shape, m=2, ws=None):
    """dw alone (a 3x3 stride-1 Deconvolution's weight gradient)."""
    xp = get_array_module(x)
    ws = ws or workspace()
    geom.check_shapes(x.shape, w_shape)
    _check(geom)
    x, dy = _contig(xp, x), _contig(xp, dy)
    bt, g_mat, at = matrices(m, x.dtype, xp)
    p = _Plan(x.shape, w_shape[0], geom, m, _use_numba(xp, x.shape, w_shape[0]))
    dm = _dy_transform(xp, dy, p, at, ws)
    v = _input_transform(xp, x, p, bt, ws)
    du = xp.matmul(dm.reshape(p.a * p.a, p.g, p.k // p.g, p.cols),
                   v.reshape(p.a * p.a, p.g, p.c // p.g, p.cols).transpose(0, 1, 3, 2))
    return _kernel_adjoint(du, g_mat, w_shape)


# ---------------------------------------------------------------------------
# codelets: the transforms as straight-line Numba loops, generated from the matrices
# ---------------------------------------------------------------------------
CODELET_FILE = "winograd_codelets.py"   # in pycaffe_lite/kernels/


def _codelet(name, mat, bias=False):
    """Source of `name(s, sr, sc, d, dr, dc, n, cf[, bias])`.

    For j < n:  d[dr[r], dc[r] + j] = sum_c mat[r, c] * s[sr[c], sc[c] + j]  (+ bias):
    inputs and outputs are rows of the 2-D C-contiguous arrays s and d at their own
    column offsets (uint64, so that Numba drops its wrap-around checks and the loop over
    j vectorises).  The distinct coefficients come from `cf` (the arrays' dtype, so that
    float32 stays float32); +-1 become additions and subtractions."""
    mat = np.asarray(mat, dtype=np.float64)
    title = {"bt": "B^T", "at": "A^T", "a": "A", "b": "B"}[name.rstrip("0123456789b") or "b"]
    values = sorted({float(abs(v)) for v in mat.ravel() if v and abs(v) != 1})
    args = "s, sr, sc, d, dr, dc, n, cf" + (", bias" if bias else "")
    lines = ["@njit(cache=True)", f"def {name}({args}):",
             f'    """d rows = {title} @ s rows{" + bias" if bias else ""} ({mat.shape[0]}x{mat.shape[1]})."""']
    for i in range(len(values)):
        lines.append(f"    k{i} = cf[{i}]")
    used = [c for c in range(mat.shape[1]) if np.any(mat[:, c])]
    for c in used:
        lines.append(f"    r{c}, c{c} = sr[{c}], sc[{c}]")
    for r in range(mat.shape[0]):
        lines.append(f"    R{r}, C{r} = dr[{r}], dc[{r}]")
    lines.append("    for j in range(n):")
    for c in used:
        lines.append(f"        x{c} = s[r{c}, c{c} + j]")
    for r in range(mat.shape[0]):
        terms = []
        for c in range(mat.shape[1]):
            v = mat[r, c]
            if v:
                mag = "" if abs(v) == 1 else f"k{values.index(abs(v))} * "
                terms.append(("- " if v < 0 else "+ ") + f"{mag}x{c}")
        expr = " ".join(terms) if terms else "+ 0"
        expr = expr[2:] if expr.startswith("+ ") else "-" + expr[2:]
        if bias:
            expr = f"bias + {expr}"
        lines.append(f"        d[R{r}, C{r} + j] = {expr}")
    return "\n".join(lines) + "\n", values


def codelet_source():
    """The text of kernels/winograd_codelets.py (tests check that the file matches it)."""
    out = ['"""Winograd transform codelets, generated by pycaffe_lite.conv.winograd.codelet_source():',
           "do not edit; regenerate with",
           '    python -c "from pycaffe_lite.conv import winograd; winograd.write_codelets()"', "",
           "Each applies one of B^T, A^T, A = (A^T)^T, B = (B^T)^T of F(m x m, 3x3) to a set of rows",
           "(see winograd._codelet); COEFFICIENTS lists each one's distinct coefficients.",
           '"""', "from numba import njit", "", ""]
    coefs = {}
    for m in (2, 4):
        bt, _, at = (np.array(_MATRICES[m][k], dtype=np.float64) for k in ("BT", "G", "AT"))
        for name, mat, bias in ((f"bt{m}", bt, False), (f"at{m}", at, False), (f"at{m}b", at, True),
                                (f"a{m}", at.T, False), (f"b{m}", bt.T, False)):
            src, values = _codelet(name, mat, bias)
            out += [src, ""]
            coefs[name] = values
    out.append(f"COEFFICIENTS = {coefs!r}")
    return "\n".join(out) + "\n"


def codelet_coefficients(name, dtype):
    from ..kernels import winograd_codelets
    return np.array(winograd_codelets.COEFFICIENTS[name] or [0.0], dtype=dtype)


def write_codelets():
    """Regenerate kernels/winograd_codelets.py from the matrices."""
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(kernels.__file__)), CODELET_FILE)
    with open(path, "w") as f:
        f.write(codelet_source())
    return path
