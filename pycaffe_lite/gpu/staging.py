"""Host-to-device staging for the data prefetch thread: pinned buffers, a copy stream, events.

The prefetch thread builds each batch in page-locked host memory, starts
its copy to the device on a stream of its own, and hands on the device
arrays with a CUDA event; the net's stream waits on that event (on the
device, not in Python) before the data layer's tops are used, so the copy of
batch i+1 overlaps the forward/backward of batch i (Caffe's prefetch with
async_gpu_push).

    stager = DeviceStager(device_id=0)           # on the thread that runs the net
    # prefetch thread:
    stager.thread_setup()
    host = stager.empty((256, 3, 227, 227), np.float32)     # pinned
    ... fill host ...
    batch = stager.to_device((host, labels))     # a StagedBatch (a tuple of device arrays)
    # net thread:
    data, label = wait_ready(batch)              # the current stream waits for the copy

`DeviceStager` has the interface of `pycaffe_lite.data.prefetch.Stager`
(`empty`, `to_device`, `thread_setup`), so a `Prefetcher` takes it as it is.
`wait_ready` is a no-op on a plain tuple, so CPU batches pass through it.

Memory safety, which CuPy's per-stream memory pool does not give for free:
  * device arrays are allocated from the *consumer* stream's pool arena, and
    the copy stream first waits for an event recorded on the consumer stream
    after the allocation, so a block freed by the net (whose last kernels may
    still be queued) is never overwritten early;
  * the stager keeps every batch alive until its copy has completed, so a
    batch dropped before use (a queue drained at close) cannot hand its block
    back while the copy still writes it;
  * a pinned buffer is reused only after the event of the copy that read it.
"""
import collections

import numpy as np

from ..backend import cupy_module


class StagedBatch(tuple):
    """A tuple of device arrays (None passes through) plus the event that marks them complete."""

    def __new__(cls, arrays, event=None):
        obj = super().__new__(cls, arrays)
        obj.event = event
        return obj

    def wait(self, stream=None):
        """Make `stream` (default: the calling thread's current stream) wait for the copy."""
        if self.event is not None:
            cupy = cupy_module()
            (stream or cupy.cuda.get_current_stream()).wait_event(self.event)
        return self


def wait_ready(batch, stream=None):
    """The batch, after ordering `stream` behind its copy; plain tuples pass through unchanged."""
    wait = getattr(batch, "wait", None)
    return wait(stream) if wait is not None else batch


class DeviceStager:
    """Pinned host buffers and asynchronous copies on a dedicated stream, for one device.

    Build it on the thread that will consume the batches (it remembers that
    thread's current stream, normally the default stream); call
    `thread_setup()` first on the producing thread.
    """

    def __init__(self, device_id=0, consumer_stream=None, max_free_per_shape=4):
        self.cupy = cupy_module()
        self.device_id = int(device_id)
        with self.cupy.cuda.Device(self.device_id):
            self.consumer_stream = consumer_stream or self.cupy.cuda.get_current_stream()
        self.max_free_per_shape = int(max_free_per_shape)
        self.copy_stream = None
        self._free = {}                      # (shape, dtype) -> [pinned buffers free to reuse]
        self._handed_out = []                # (key, buffer) given by empty() since the last copy
        self._in_flight = collections.deque()  # (event, pinned [(key, buffer)], device arrays)
        self.batches = 0
        self.bytes_copied = 0

    # ---- the producer side --------------------------------------------------
    def thread_setup(self):
        """Bind the calling (prefetch) thread to the device and create the copy stream."""
        self.cupy.cuda.Device(self.device_id).use()
        if self.copy_stream is None:
            self.copy_stream = self.cupy.cuda.Stream(non_blocking=True)

    def empty(self, shape, dtype):
        """A pinned host array to build a batch in; reused once its previous copy has completed."""
        import cupyx
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        self._retire()
        free = self._free.get(key)
        buf = free.pop() if free else cupyx.empty_pinned(key[0], np.dtype(dtype))
        self._handed_out.append((key, buf))
        return buf

    def to_device(self, arrays):
        """Start copying the host arrays to the device; returns a StagedBatch at once.

        Arrays that are not this stager's pinned buffers are first copied into one
        (a copy from pageable memory would block the thread).  None entries pass through."""
        cupy = self.cupy
        if self.copy_stream is None:
            self.thread_setup()
        self._retire()
        pinned = list(self._handed_out)
        self._handed_out.clear()
        mine = {id(buf) for _, buf in pinned}
        out = []
        with cupy.cuda.Device(self.device_id):
            with self.consumer_stream:
                for host in arrays:
                    out.append(None if host is None else cupy.empty(np.shape(host), np.asarray(host).dtype))
            fence = self.consumer_stream.record()
            self.copy_stream.wait_event(fence)
            for host, dev in zip(arrays, out):
                if host is None:
                    continue
                if id(host) not in mine:
                    staged = self.empty(np.shape(host), np.asarray(host).dtype)
                    staged[...] = host
                    pinned.append(self._handed_out.pop())
                    host = staged
                dev.set(host, stream=self.copy_stream)
                self.bytes_copied += host.nbytes
            done = self.copy_stream.record()
        self._in_flight.append((done, pinned, out))
        self.batches += 1
        return StagedBatch(out, done)

    def _retire(self):
        """Recycle the pinned buffers (and release the device arrays) of completed copies."""
        while self._in_flight and self._in_flight[0][0].done:
            _, pinned, _ = self._in_flight.popleft()
            for key, buf in pinned:
                free = self._free.setdefault(key, [])
                if len(free) < self.max_free_per_shape:
                    free.append(buf)
        if len(self._free) > 8:    # batch shapes keep changing: do not hoard pinned memory
            self._free.clear()

    # ---- either side ----------------------------------------------------------
    def synchronize(self):
        """Wait for every copy started so far."""
        if self.copy_stream is not None:
            self.copy_stream.synchronize()
        self._retire()

    def close(self):
        self.synchronize()
        self._free.clear()
        self._in_flight.clear()


def make_stager(like):
    """DeviceStager for blobs whose data is `like` (a CuPy array), None for NumPy data."""
    if type(like).__module__.startswith("cupy"):
        return DeviceStager(like.device.id)
    return None
