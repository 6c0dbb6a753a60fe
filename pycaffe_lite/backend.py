"""Array backend: NumPy on the CPU, CuPy on the GPU, one code path for both.

Layer code never asks for a global mode: it takes its array module from the
arrays it is given (`get_array_module(x)`), as Chainer does.  The mode set
here only decides where a Net allocates its blobs.  CuPy is imported lazily,
so a machine without a GPU runs everything else.

GPU mode in one paragraph: `set_device(n); set_mode_gpu()` before a Net is
built puts every blob on device n as a CuPy array; layers run the same xp
code on them.  Host copies happen only at the edges: data coming in
(`copy_into`, the data layers' stager), outputs a user or a log asks for
(`to_numpy`, `host_dict`) and snapshots (`to_numpy` in the weights writer).
"""
import os
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


def _is_cupy(a):
    return type(a).__module__.startswith("cupy")


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays (numpy if none is a CuPy array)."""
    for a in arrays:
        if _is_cupy(a):
            return cupy_module()
    return np


# ---------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------
def device_count():
    """Number of visible CUDA devices; 0 without CuPy, a driver or a device (never raises)."""
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def gpu_available():
    return device_count() > 0


def _check_device(device_id):
    """Raise a RuntimeError that says what is visible when device_id cannot be used."""
    cupy = cupy_module()
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise RuntimeError(f"GPU mode needs a CUDA device; CuPy {cupy.__version__} found none: {exc}") from exc
    if not 0 <= device_id < count:
        raise RuntimeError(f"GPU {device_id} was asked for, but {count} CUDA device(s) are visible "
                           f"(ids 0 to {count - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
    return cupy


def set_mode_cpu():
    _state["mode"] = "cpu"


def set_mode_gpu():
    cupy = _check_device(_state["device"])
    cupy.cuda.Device(_state["device"]).use()
    _state["mode"] = "gpu"
    _seed_device_rng()


def set_device(device_id):
    _state["device"] = int(device_id)
    if _state["mode"] == "gpu":
        _check_device(_state["device"]).cuda.Device(_state["device"]).use()


def device_id():
    """The device GPU mode uses (set_device's argument, 0 by default)."""
    return _state["device"]


def use_gpu(device_id):
    """The CLI's --gpu N: select device N and switch to GPU mode (clear errors otherwise)."""
    set_device(device_id)
    set_mode_gpu()


def mode():
    return _state["mode"]


def xp():
    """The array module new blobs are allocated with."""
    return cupy_module() if _state["mode"] == "gpu" else np


def synchronize():
    """Wait for the current device's queued work (a no-op in CPU mode or without CuPy)."""
    if _state["mode"] == "gpu":
        cupy_module().cuda.Device(_state["device"]).synchronize()


# ---------------------------------------------------------------------------
# host <-> device at the edges
# ---------------------------------------------------------------------------
def to_numpy(a):
    """A host copy (or the array itself when it already lives on the host)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def host_dict(arrays):
    """{name: host array} from {name: array} (net.forward's outputs for a log or a user)."""
    return {name: to_numpy(a) for name, a in arrays.items()}


def array_device(a):
    """'cpu' for a host array, 'gpu:N' for a CuPy array on device N."""
    return f"gpu:{a.device.id}" if _is_cupy(a) else "cpu"


def asarray_like(a, like):
    """`a` in the array module (and on the device) of `like`; no copy when it is already there."""
    if _is_cupy(like):
        cupy = cupy_module()
        with cupy.cuda.Device(like.device.id):
            return cupy.asarray(a)
    return to_numpy(a)


def copy_into(dst, src):
    """dst[...] = src across host and device (CuPy refuses `gpu_array[...] = numpy_array`).

    src may be a NumPy or CuPy array (or anything np.asarray takes) that broadcasts to dst;
    it is cast to dst's dtype.  Returns dst."""
    if _is_cupy(dst):
        if not _is_cupy(src):
            host = np.asarray(src, dtype=dst.dtype)
            if host.shape == dst.shape and dst.flags.c_contiguous:
                dst.set(np.ascontiguousarray(host))      # one host-to-device copy, no temporary
                return dst
            src = asarray_like(host, dst)
        dst[...] = src
    else:
        dst[...] = to_numpy(src)
    return dst


def reused(buf, shape, dtype, xp):
    """`buf` if it is an array of this shape, dtype and module, else a new empty one: for
    scratch a caller keeps across passes (a fresh multi-megabyte array page-faults on
    every first touch)."""
    shape, dtype = _shape_tuple(shape), np.dtype(dtype)
    if buf is None or buf.shape != shape or buf.dtype != dtype or get_array_module(buf) is not xp:
        return xp.empty(shape, dtype)
    return buf


def into(out, value):
    """`value` written into the caller's buffer `out` (returned), or `value` itself when out is None."""
    if out is None:
        return value
    out[...] = value
    return out


def _shape_tuple(shape):
    return (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)


def pinned_empty(shape, dtype=np.float32):
    """An uninitialised host array, in page-locked memory in GPU mode (so that its copy to
    the device can run asynchronously on a stream); a plain np.empty in CPU mode."""
    if _state["mode"] == "gpu":
        cupy_module()
        import cupyx
        return cupyx.empty_pinned(_shape_tuple(shape), np.dtype(dtype))
    return np.empty(_shape_tuple(shape), dtype)


# ---------------------------------------------------------------------------
# Net placement helpers
# ---------------------------------------------------------------------------
def blob_devices(net):
    """{device: [names]} over a Net's blobs and parameters: a GPU-mode net shows only 'gpu:N'.

    Parameters appear as '<layer>/<index>'; diffs that were never allocated are not checked."""
    places = {}

    def note(name, array):
        if array is not None:
            places.setdefault(array_device(array), []).append(name)

    for name, blob in net.blobs.items():
        note(name, blob.data)
        note(name + ".diff", blob._diff)
    for layer_name, params in net.params.items():
        for i, blob in enumerate(params):
            note(f"{layer_name}/{i}", blob.data)
            note(f"{layer_name}/{i}.diff", blob._diff)
    return places


def check_net_on(net, device):
    """Raise ValueError naming the blobs of `net` that are not on `device` ('cpu' or 'gpu:N')."""
    stray = {d: names for d, names in blob_devices(net).items() if d != device}
    if stray:
        listed = "; ".join(f"{d}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                           for d, names in stray.items())
        raise ValueError(f"blobs expected on {device} are elsewhere ({listed})")


# ---------------------------------------------------------------------------
# random numbers
# ---------------------------------------------------------------------------
# One random generator for fillers, dropout masks and data shuffling, so
# that set_random_seed makes a run repeatable.  On the GPU, layers draw with
# the device's generator (cupy.random), seeded from the same seed.
_rng = {"gen": np.random.default_rng(), "seed": None}


def set_random_seed(seed):
    _rng["gen"] = np.random.default_rng(int(seed))
    _rng["seed"] = int(seed)
    _seed_device_rng()


def _seed_device_rng():
    import sys
    if _rng["seed"] is not None and _state["mode"] == "gpu" and "cupy" in sys.modules:
        sys.modules["cupy"].random.seed(_rng["seed"])


def rng():
    return _rng["gen"]


# ---------------------------------------------------------------------------
# memory: how much a net may ask for before its blobs are allocated
# ---------------------------------------------------------------------------
_memory = {"limit": None}


def set_memory_limit(nbytes):
    """Refuse nets whose blobs and parameters would take more than `nbytes` (None: the machine's
    available memory, the default; PYCAFFE_LITE_MEMORY_LIMIT sets it for a process)."""
    _memory["limit"] = None if nbytes is None else int(nbytes)


def _parse_bytes(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text[: len(text) - len(unit)]) * units[unit])


def available_memory():
    """Bytes of memory available to this process now (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit():
    """(bytes, where the figure comes from) the blobs of a net may take; (None, ...) when unknown."""
    if _memory["limit"] is not None:
        return _memory["limit"], "set by pycaffe_lite.set_memory_limit"
    setting = os.environ.get("PYCAFFE_LITE_MEMORY_LIMIT")
    if setting:
        return _parse_bytes(setting), f"PYCAFFE_LITE_MEMORY_LIMIT={setting}"
    return available_memory(), "the memory available now"
