"""What the device is (device_query) and how long GPU work takes (CUDA-event timers).

    lines = device_query_lines(device_properties(0), 0)    # Caffe's DeviceQuery wording
    timer = EventTimer(); timer.start(); ...; timer.stop(); timer.ms

`make_timer(gpu)` gives an EventTimer in GPU mode and a host-clock timer
otherwise, with the same start/stop/ms interface as pycaffe's Timer, so
`pycaffe-lite time` measures both the same way.  Host timers around GPU work
measure only the launches: the CUDA events are recorded on the stream and
read once the stream has reached them.
"""
import statistics
import time

from ..backend import cupy_module


# ---------------------------------------------------------------------------
# device_query
# ---------------------------------------------------------------------------
def device_properties(device_id=0):
    """cudaGetDeviceProperties as a dict with str keys (`name` decoded)."""
    cupy = cupy_module()
    props = dict(cupy.cuda.runtime.getDeviceProperties(int(device_id)))
    name = props.get("name", b"")
    props["name"] = name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
    return props


def _yes(value):
    return "Yes" if value else "No"


def _triple(value):
    return ", ".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def device_query_lines(props, device_id=0):
    """Caffe's DeviceQuery lines (same labels, so its log readers work), then a summary line.

    Fields CUDA or CuPy no longer report (clockRate in CUDA 13, memPitch outside HIP)
    print as 'n/a'."""
    def get(key, fmt=str):
        return fmt(props[key]) if key in props else "n/a"

    lines = [
        f"Device id:                     {device_id}",
        f"Major revision number:         {get('major')}",
        f"Minor revision number:         {get('minor')}",
        f"Name:                          {get('name')}",
        f"Total global memory:           {get('totalGlobalMem')}",
        f"Total shared memory per block: {get('sharedMemPerBlock')}",
        f"Total registers per block:     {get('regsPerBlock')}",
        f"Warp size:                     {get('warpSize')}",
        f"Maximum memory pitch:          {get('memPitch')}",
        f"Maximum threads per block:     {get('maxThreadsPerBlock')}",
        f"Maximum dimension of block:    {get('maxThreadsDim', _triple)}",
        f"Maximum dimension of grid:     {get('maxGridSize', _triple)}",
        f"Clock rate:                    {get('clockRate')}",
        f"Total constant memory:         {get('totalConstMem')}",
        f"Texture alignment:             {get('textureAlignment')}",
        f"Concurrent copy and execution: {get('deviceOverlap', _yes)}",
        f"Number of multiprocessors:     {get('multiProcessorCount')}",
        f"Kernel execution timeout:      {get('kernelExecTimeoutEnabled', _yes)}",
    ]
    return lines + [describe(props)]


def compute_capability(props):
    return f"{props.get('major', '?')}.{props.get('minor', '?')}"


def describe(props):
    """One line: name, memory in GiB, compute capability, multiprocessors."""
    memory = props.get("totalGlobalMem")
    gib = f"{memory / 2 ** 30:.1f} GiB" if memory else "? GiB"
    return (f"{props.get('name', '?')}: {gib}, compute capability {compute_capability(props)}, "
            f"{props.get('multiProcessorCount', '?')} multiprocessors")


def device_query(device_id=0):
    """The device_query lines for a visible device (raises a clear RuntimeError otherwise)."""
    from ..backend import _check_device
    _check_device(int(device_id))
    return device_query_lines(device_properties(device_id), device_id)


def memory_info(device_id=0):
    """(free bytes, total bytes) on the device."""
    cupy = cupy_module()
    with cupy.cuda.Device(int(device_id)):
        free, total = cupy.cuda.runtime.memGetInfo()
    return int(free), int(total)


# ---------------------------------------------------------------------------
# timers
# ---------------------------------------------------------------------------
class CpuTimer:
    """pycaffe's Timer on the host clock: start(), stop(), ms."""

    def __init__(self):
        self._start = None
        self._ms = 0.0

    def start(self):
        self._start = time.perf_counter()

    def stop(self):
        if self._start is not None:
            self._ms = (time.perf_counter() - self._start) * 1000.0
            self._start = None

    @property
    def ms(self):
        return self._ms

    @property
    def seconds(self):
        return self._ms / 1000.0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class EventTimer(CpuTimer):
    """Times the work queued on a stream between start() and stop() with two CUDA events.

    stop() waits for the stop event, so `ms` is ready when it returns."""

    def __init__(self, stream=None):
        super().__init__()
        self.cupy = cupy_module()
        self.stream = stream
        self._begin = self.cupy.cuda.Event()
        self._end = self.cupy.cuda.Event()
        self._running = False

    def _stream(self):
        return self.stream or self.cupy.cuda.get_current_stream()

    def start(self):
        self._begin.record(self._stream())
        self._running = True

    def stop(self):
        if self._running:
            self._end.record(self._stream())
            self._end.synchronize()
            self._ms = float(self.cupy.cuda.get_elapsed_time(self._begin, self._end))
            self._running = False


def make_timer(gpu=None):
    """EventTimer in GPU mode (or when gpu=True), CpuTimer otherwise."""
    if gpu is None:
        from ..backend import mode
        gpu = mode() == "gpu"
    return EventTimer() if gpu else CpuTimer()


def time_call(fn, repeat=5, warmup=1, timer=None):
    """Median milliseconds of fn() over `repeat` runs after `warmup` (an EventTimer on GPU)."""
    timer = timer or make_timer()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        timer.start()
        fn()
        timer.stop()
        times.append(timer.ms)
    return statistics.median(times)
