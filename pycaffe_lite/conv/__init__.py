"""Convolution engines: plain array functions behind the Convolution layers.

    from pycaffe_lite.conv import ConvGeometry, forward, backward
    geom = ConvGeometry(kernel=3, pad=1)                       # stride 1, dilation 1, group 1
    y = forward(x, w, b, geom, engine="winograd4")             # x (N,C,H,W), w (K,C/g,3,3)
    dx, dw, db = backward(x, w, dy, geom, engine="winograd4")

Engines (all share the weight layout (K, C/group, kh, kw) and agree within
floating-point tolerance):
    im2col     whole-batch im2col + one GEMM per group; 1x1 as a plain GEMM,
               depthwise as a direct sum; any geometry (the default)
    fft        real FFTs of tiles, stride 1
    winograd   F(2x2, 3x3); winograd4: F(4x4, 3x3) (3x3, stride 1, dilation 1)
    auto       time the applicable ones once per shape (`choice.choose`)

Arrays may be NumPy or CuPy: the module comes from the arrays; Numba kernels
serve the NumPy hot loops.  Scratch memory comes from one shared workspace:
`workspace_bytes()`, `set_workspace_limit(bytes)`.
"""
from .choice import chosen_engines, engine_timings, is_auto, reset_choices, resolve
from .engines import ENGINES, Engine, get_engine
from .geometry import ConvGeometry, shape_key
from .workspace import (release_workspace, set_workspace_limit, workspace_bytes,
                        workspace_limit)

__all__ = ["ConvGeometry", "forward", "backward", "ENGINES", "Engine", "get_engine",
           "chosen_engines", "engine_timings", "reset_choices", "resolve", "shape_key",
           "workspace_bytes", "set_workspace_limit", "workspace_limit", "release_workspace",
           "warm_up"]


def _engine_for(engine, x, w, geom, kind="conv"):
    if is_auto(engine):
        from .choice import choose
        from ..backend import get_array_module
        return get_engine(choose(kind, x.shape, w.shape, geom, x.dtype, get_array_module(x)))
    eng = get_engine(engine)
    if not eng.supports(geom):
        raise ValueError(f"engine '{engine}' cannot run a convolution with {geom}")
    return eng


def forward(x, w, b, geom, engine="im2col", out=None, ctx=None):
    """y (N, K, Ho, Wo) = conv(x, w) + b (b may be None)."""
    return _engine_for(engine, x, w, geom).forward(x, w, b, geom, out=out, ctx=ctx)


def backward(x, w, dy, geom, engine="im2col", need_dx=True, need_dw=True, need_db=True,
             dx_out=None, ctx=None):
    """(dx, dw, db) of a convolution for the top diff dy; unneeded ones are None."""
    dx = dw = None
    if need_dx or need_dw:
        dx, dw = _engine_for(engine, x, w, geom).backward(
            x, w, dy, geom, need_dx=need_dx, need_dw=need_dw, dx_out=dx_out, ctx=ctx)
    db = dy.sum(axis=(0, 2, 3)) if need_db else None
    return dx, dw, db


def warm_up(dtype="float32"):
    """Compile (or load from Numba's cache) every CPU kernel for `dtype` now.

    The first run on a fresh install otherwise pays one to two minutes of Numba
    compilation spread over the first iterations; afterwards the compiled
    kernels load from __pycache__ in about a second."""
    import numpy as np
    from .. import kernels
    if not kernels.HAVE_NUMBA:
        return
    saved = kernels.MIN_WORK
    kernels.MIN_WORK = 0
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 4, 8, 8)).astype(dtype)
        for geom, k in ((ConvGeometry(3, 1, 1), 4), (ConvGeometry(3, 2, 1), 4), (ConvGeometry(3, 1, 1, 1, 4), 4),
                        (ConvGeometry(3, 2, 1, 1, 4), 4)):
            w = rng.standard_normal((k, 4 // geom.group, 3, 3)).astype(dtype)
            for name in ("im2col", "winograd", "winograd4"):
                engine = ENGINES[name]
                if engine.supports(geom) and not (name != "im2col" and geom.group > 1):
                    y = engine.forward(x, w, None, geom)
                    engine.backward(x, w, y, geom)
    finally:
        kernels.MIN_WORK = saved
