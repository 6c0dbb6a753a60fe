"""Background prefetching: a thread fills a bounded queue while the net computes.

    prefetcher = Prefetcher(loader.next_batch, depth=4, name="data")
    prefetcher.start()
    data, label = prefetcher.get()      # a ready batch (waits only when the reader is behind)
    prefetcher.close()                  # stop and join; idempotent

At most `depth` finished batches wait in the queue, so memory stays bounded
and the reader never runs more than `depth` batches ahead (Caffe's
PREFETCH_COUNT / data_param.prefetch).  The thread is a daemon and polls a
stop flag, so `close()` returns promptly, Ctrl-C in the main thread is never
blocked by it, and interpreter exit stops any prefetcher left open.  An
exception in the reader is handed to the consumer: the next `get()` raises
it (a DataError names the database and record) and the thread is gone.

Device staging is a hook, `Stager`: the loader allocates each batch with
`stager.empty(shape, dtype)`, the prefetch thread calls
`stager.to_device(arrays)` before queuing, and `get()` calls the batch's
`wait()` when it has one.  On the CPU all three are trivial; on the GPU,
pycaffe_lite.gpu.staging.DeviceStager builds batches in pinned memory and
copies them on its own stream, and `wait()` makes the net's stream wait for
that copy's event (Caffe's async_gpu_push, without blocking Python).
"""
import atexit
import logging
import queue
import threading
import time
import weakref

import numpy as np

log = logging.getLogger(__name__)

_LIVE = weakref.WeakSet()
_POLL = 0.05  # seconds between checks of the stop flag while blocked


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class Stager:
    """CPU staging: plain NumPy buffers, nothing to copy."""

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def to_device(self, arrays):
        return arrays

    def thread_setup(self):
        pass


def stager_for(array):
    """The Stager for blobs whose data is `array`: NumPy -> Stager(); CuPy -> the GPU backend's
    DeviceStager (pycaffe_lite.gpu.staging: pinned buffers, a copy stream, an event the net's
    stream waits on).  Call it on the thread that will consume the batches."""
    if type(array).__module__.startswith("cupy"):
        from ..gpu.staging import make_stager
        return make_stager(array)
    return Stager()


class Prefetcher:
    """Runs `produce()` on a daemon thread, keeping up to `depth` results queued."""

    def __init__(self, produce, depth=4, name="prefetch", stager=None, cleanup=None):
        self._produce = produce
        self.depth = max(1, int(depth))
        self.name = name
        self._stager = stager or Stager()
        self._cleanup = cleanup
        self._queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = None
        self._closed = False
        self._failure = None
        # Statistics: seconds the consumer waited, seconds the thread spent producing.
        self.batches = 0
        self.wait_seconds = 0.0
        self.produce_seconds = 0.0
        _LIVE.add(self)

    # ---- thread -----------------------------------------------------------
    def start(self):
        if self._closed:
            raise RuntimeError(f"prefetcher '{self.name}' is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"prefetch:{self.name}", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            self._stager.thread_setup()
            while not self._stop.is_set():
                started = time.perf_counter()
                batch = self._stager.to_device(self._produce())
                self.produce_seconds += time.perf_counter() - started
                if not self._put(batch):
                    break
        except BaseException as exc:  # noqa: B902 - handed to the consumer, re-raised there
            self._put(_Failure(exc))
        finally:
            self._run_cleanup()

    def _run_cleanup(self):
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            try:
                cleanup()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.exception("prefetcher '%s': cleanup failed", self.name)

    # ---- consumer -----------------------------------------------------------
    def get(self):
        """The next batch; waits for the thread, re-raises its error."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError(f"prefetcher '{self.name}' is closed")
        if self._thread is None:
            self.start()
        started = time.perf_counter()
        while True:
            try:
                item = self._queue.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError(f"prefetch thread '{self.name}' ended without a batch") from None
        self.wait_seconds += time.perf_counter() - started
        if isinstance(item, _Failure):
            self._failure = item.exc
            self.close()
            raise item.exc
        self.batches += 1
        wait = getattr(item, "wait", None)       # a device batch: order this thread's stream after its copy
        return wait() if wait is not None else item

    def close(self, timeout=10.0):
        """Stop the thread and join it; safe to call twice, from any thread."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            deadline = time.monotonic() + timeout
            while thread.is_alive() and time.monotonic() < deadline:
                self._drain()
                thread.join(_POLL)
            if thread.is_alive():
                log.warning("prefetch thread '%s' did not stop within %.0f s", self.name, timeout)
        elif thread is None:
            self._run_cleanup()
        self._drain()
        closer = getattr(self._stager, "close", None)
        if closer is not None and not (thread is not None and thread.is_alive()):
            try:
                closer()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.exception("prefetcher '%s': closing the stager failed", self.name)
        _LIVE.discard(self)

    def _drain(self):
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def close_all():
    """Stop every prefetcher still running (called at interpreter exit)."""
    for prefetcher in list(_LIVE):
        prefetcher.close(timeout=2.0)


atexit.register(close_all)


def live_prefetch_threads():
    """Names of prefetch threads still alive (for tests and diagnostics)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("prefetch:") and t.is_alive()]
