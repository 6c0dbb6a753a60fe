"""DeviceStager's stream protocol, checked on the CPU against a recording stand-in for CuPy.

The stand-in logs allocations, event records, waits and copies per stream, so the test can
check the order that makes the asynchronous copy safe: device arrays come from the consumer
stream's pool, the copy stream waits for an event recorded after that allocation, copies run
on the copy stream from pinned memory, the batch carries the copy's event, and a pinned buffer
is reused only after that event.  The real thing runs in test_gpu_staging.py."""
import sys
import threading
import types

import numpy as np
import pytest

from pycaffe_lite.gpu import staging

LOG = []


class FakeEvent:
    def __init__(self, stream):
        self.stream = stream
        self.done = False

    def synchronize(self):
        self.done = True


class FakeStream:
    _local = threading.local()

    def __init__(self, non_blocking=False, name=None):
        self.name = name or f"stream{id(self) % 1000}"
        self.non_blocking = non_blocking
        self.events = []

    def record(self, event=None):
        event = FakeEvent(self)
        self.events.append(event)
        LOG.append(("record", self.name, event))
        return event

    def wait_event(self, event):
        LOG.append(("wait", self.name, event))

    def synchronize(self):
        for event in self.events:
            event.done = True

    def __enter__(self):
        stack = FakeStream._local.__dict__.setdefault("stack", [])
        stack.append(self)
        return self

    def __exit__(self, *exc):
        FakeStream._local.stack.pop()


NULL = FakeStream(name="null")


def current_stream():
    stack = FakeStream._local.__dict__.get("stack") or []
    return stack[-1] if stack else NULL


class FakeDeviceArray:
    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.value = None
        LOG.append(("alloc", current_stream().name, self))

    def set(self, host, stream=None):
        assert host.shape == self.shape and host.dtype == self.dtype
        LOG.append(("copy", stream.name, id(host)))
        self.value = host.copy()


FakeDeviceArray.__module__ = "cupy._fake"


class FakeDevice:
    def __init__(self, device_id=0):
        self.id = device_id

    def use(self):
        LOG.append(("use", self.id))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


PINNED = set()


def empty_pinned(shape, dtype):
    a = np.empty(shape, dtype)
    PINNED.add(id(a))
    return a


@pytest.fixture
def fake_cupy(monkeypatch):
    cuda = types.SimpleNamespace(Device=FakeDevice, Stream=FakeStream, get_current_stream=current_stream)
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    cupy.empty = lambda shape, dtype: FakeDeviceArray(shape, dtype)
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = empty_pinned
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    LOG.clear()
    PINNED.clear()
    return cupy


def _events(kind, stream=None):
    return [entry for entry in LOG if entry[0] == kind and (stream is None or entry[1] == stream)]


def test_copy_is_ordered_after_the_allocation_and_marked_by_an_event(fake_cupy):
    stager = staging.DeviceStager(0)
    assert stager.consumer_stream is NULL
    stager.thread_setup()
    assert stager.copy_stream.non_blocking
    host = stager.empty((4, 3), np.float32)
    host[...] = np.arange(12).reshape(4, 3)
    labels = np.arange(4, dtype=np.float32)          # not from empty(): staged through pinned memory
    LOG.clear()
    batch = stager.to_device((host, labels, None))
    assert isinstance(batch, staging.StagedBatch) and len(batch) == 3 and batch[2] is None
    np.testing.assert_array_equal(batch[0].value, host)
    np.testing.assert_array_equal(batch[1].value, labels)
    kinds = [(e[0], e[1]) for e in LOG]
    copy = stager.copy_stream.name
    assert kinds == [("alloc", "null"), ("alloc", "null"), ("record", "null"), ("wait", copy),
                     ("copy", copy), ("copy", copy), ("record", copy)]
    fence, waited = LOG[2][2], LOG[3][2]
    assert fence is waited
    assert all(host_id in PINNED for _, _, host_id in _events("copy"))
    assert batch.event is LOG[-1][2]


def test_wait_orders_the_consumer_stream_behind_the_copy(fake_cupy):
    stager = staging.DeviceStager(0)
    batch = stager.to_device((stager.empty((2,), np.float32),))
    LOG.clear()
    assert staging.wait_ready(batch) is batch
    assert LOG == [("wait", "null", batch.event)]
    other = FakeStream(name="compute")
    LOG.clear()
    batch.wait(other)
    assert LOG == [("wait", "compute", batch.event)]


def test_pinned_buffers_are_reused_only_after_their_copy(fake_cupy):
    stager = staging.DeviceStager(0)
    first = stager.empty((8,), np.float32)
    batch = stager.to_device((first,))
    assert stager.empty((8,), np.float32) is not first        # copy still in flight
    stager.to_device(())                                      # (the second buffer goes unused)
    batch.event.done = True
    third = stager.empty((8,), np.float32)
    assert third is first                                     # recycled after its event
    assert len(stager._in_flight) >= 1


def test_device_arrays_stay_referenced_until_their_copy_completes(fake_cupy):
    stager = staging.DeviceStager(0)
    batch = stager.to_device((stager.empty((3,), np.float32),))
    device_array = batch[0]
    del batch
    assert any(device_array is a for _, _, arrays in stager._in_flight for a in arrays)
    stager.synchronize()
    assert not stager._in_flight


def test_close_waits_for_the_copies(fake_cupy):
    stager = staging.DeviceStager(0)
    batch = stager.to_device((stager.empty((3,), np.float32),))
    stager.close()
    assert batch.event.done and not stager._in_flight and not stager._free


def test_make_stager_for_device_arrays(fake_cupy):
    like = FakeDeviceArray((1,), np.float32)
    like.device = FakeDevice(0)
    assert isinstance(staging.make_stager(like), staging.DeviceStager)


def test_works_as_a_prefetcher_stager(fake_cupy):
    """The data engineer's Prefetcher drives it through empty / to_device / thread_setup."""
    from pycaffe_lite.data.prefetch import Prefetcher
    stager = staging.DeviceStager(0)
    counter = iter(range(100))

    def produce():
        data = stager.empty((2, 2), np.float32)
        data[...] = next(counter)
        return data, None

    with Prefetcher(produce, depth=2, name="fake", stager=stager) as prefetcher:
        for k in range(5):
            data, label = staging.wait_ready(prefetcher.get())
            assert label is None and (data.value == k).all()
