"""Run a benchmark with the BLAS a user's machine has, and say which one it is.

This machine's environment may pin NumPy's OpenBLAS to its AVX2 kernels
(`OPENBLAS_CORETYPE=Haswell`, with `OPENBLAS_L2_SIZE`): about half the SGEMM
rate of the AVX-512 kernels OpenBLAS picks by itself on this CPU.  A user's
machine carries no such pin, and the peers (oneDNN, onnxruntime, OpenCV)
ignore it, so a benchmark measured under it would understate us.  The library
never touches these variables; a benchmark calls `user_blas()` first thing,
before NumPy is imported, and prints `blas_header()` in its header.

    import _user_blas; _user_blas.user_blas()      # re-executes once without the pin
"""
import os
import sys

PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "PYCAFFE_LITE_BENCH_UNPINNED"


def user_blas():
    """Re-execute this process once with the OpenBLAS pins removed (no-op if none is set)."""
    if os.environ.get(_MARK) or not any(p in os.environ for p in PINS):
        return
    if "numpy" in sys.modules:
        raise RuntimeError("user_blas() must run before NumPy is imported")
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    env[_MARK] = ",".join(f"{p}={os.environ[p]}" for p in PINS if p in os.environ)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def blas_header():
    """One line: the BLAS NumPy loaded, its kernel set and threads, and what was unset."""
    import numpy as np  # noqa: F401  (loads the BLAS threadpoolctl inspects)
    try:
        from threadpoolctl import threadpool_info
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        blas = "; ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
                         f"{p.get('num_threads')} threads" for p in pools) or "no BLAS pool found"
    except ImportError:
        blas = "threadpoolctl not installed: kernel set unknown"
    unset = os.environ.get(_MARK)
    return f"BLAS: {blas} ({'unset ' + unset if unset else 'no OpenBLAS pin in the environment'})"
