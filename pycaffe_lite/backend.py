"""Array backend: NumPy on the CPU, CuPy on the GPU, one code path for both.

Layer code never asks for a global mode: it takes its array module from the
arrays it is given (`get_array_module(x)`), as Chainer does.  The mode set
here only decides where a Net allocates its blobs.  CuPy is imported lazily,
so a machine without a GPU runs everything else.
"""
import numpy as np

_state = {"mode": "cpu", "device": 0}


def cupy_module():
    """Import CuPy on demand; raise a clear error that quotes why it failed."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or CUDA libraries missing
        raise RuntimeError(
            "GPU mode needs CuPy and a CUDA device (pip install 'pycaffe-lite[gpu]'); "
            f"importing cupy failed: {exc}") from exc
    return cupy


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays (numpy if none is a CuPy array)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return cupy_module()
    return np


def set_mode_cpu():
    _state["mode"] = "cpu"


def set_mode_gpu():
    cupy_module().cuda.Device(_state["device"]).use()
    _state["mode"] = "gpu"


def set_device(device_id):
    _state["device"] = int(device_id)
    if _state["mode"] == "gpu":
        cupy_module().cuda.Device(_state["device"]).use()


def mode():
    return _state["mode"]


def xp():
    """The array module new blobs are allocated with."""
    return cupy_module() if _state["mode"] == "gpu" else np


def to_numpy(a):
    """A host copy (or the array itself when it already lives on the host)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


# One random generator for fillers, dropout masks and data shuffling, so
# that set_random_seed makes a run repeatable.
_rng = {"gen": np.random.default_rng()}


def set_random_seed(seed):
    _rng["gen"] = np.random.default_rng(int(seed))


def rng():
    return _rng["gen"]
