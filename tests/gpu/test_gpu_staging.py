"""Host-to-device staging on a real device: right values, pinned buffers, and a copy that
really overlaps compute on the net's stream."""
import time

import numpy as np
import pytest

from gpu_helpers import cp  # noqa: F401  (fixture)
from pycaffe_lite.gpu import staging
from pycaffe_lite.gpu.device import EventTimer

pytestmark = pytest.mark.gpu


def test_staged_batch_values_and_pinned_memory(cp):
    stager = staging.DeviceStager(0)
    stager.thread_setup()
    host = stager.empty((8, 3, 5, 5), np.float32)
    host[...] = np.random.default_rng(0).standard_normal(host.shape)
    labels = np.arange(8, dtype=np.float32)
    batch = stager.to_device((host, labels, None))
    data, label, nothing = staging.wait_ready(batch)
    assert isinstance(data, cp.ndarray) and nothing is None
    np.testing.assert_array_equal(data.get(), host)
    np.testing.assert_array_equal(label.get(), labels)
    attrs = cp.cuda.runtime.pointerGetAttributes(host.ctypes.data)
    memory_type = getattr(attrs, "type", getattr(attrs, "memoryType", None))
    assert memory_type == 1                                   # cudaMemoryTypeHost: page-locked
    stager.close()


def test_prefetcher_with_device_stager_delivers_every_batch_in_order(cp):
    from pycaffe_lite.data.prefetch import Prefetcher
    stager = staging.DeviceStager(0)
    counter = iter(range(1000))

    def produce():
        data = stager.empty((16, 3, 32, 32), np.float32)
        data[...] = next(counter)
        label = stager.empty((16,), np.float32)
        label[...] = -1
        return data, label

    a = cp.random.random((1024, 1024), dtype=cp.float32)
    with Prefetcher(produce, depth=3, name="gpu-test", stager=stager) as prefetcher:
        for k in range(30):
            data, label = staging.wait_ready(prefetcher.get())
            a = a @ a / 1024.0                 # work on the same stream meanwhile
            assert float(data.mean()) == k and float(label.sum()) == -16
    stager.close()


def _gemms(cp, a, count):
    for _ in range(count):
        a = a @ a
        a *= 1.0 / a.shape[0]
    return a


def test_copy_overlaps_compute_on_the_consumer_stream(cp):
    """Copy alone C, compute alone K; both together (copy queued between two halves of compute)
    take about K + a little, not K + C."""
    stager = staging.DeviceStager(0)
    stager.thread_setup()
    count = 64 * 2 ** 20                                       # 256 MiB: tens of ms over PCIe
    a = cp.random.random((4096, 4096), dtype=cp.float32)

    def pinned():                                              # host buffers taken outside the timings
        stager.synchronize()
        cp.cuda.Device().synchronize()
        return stager.empty((count,), np.float32)

    stager.to_device((pinned(),)).wait()                       # warm-up: pools and the copy path
    host = pinned()
    started = time.perf_counter()
    staging.wait_ready(stager.to_device((host,)))
    cp.cuda.Device().synchronize()
    copy_s = time.perf_counter() - started
    # compute long enough to hide the copy: GEMMs for about 1.5 copies per half
    timer = EventTimer()
    timer.start()
    _gemms(cp, a, 4)
    timer.stop()
    half = max(4, int(np.ceil(1.5 * copy_s / (timer.seconds / 4))))
    timer.start()
    _gemms(cp, a, 2 * half)
    timer.stop()
    compute_s = timer.seconds
    # together: first half queued, then the copy (its fence sits behind the first half), then the
    # second half, which runs while the copy engine moves the batch
    host = pinned()
    started = time.perf_counter()
    _gemms(cp, a, half)
    batch = stager.to_device((host,))
    _gemms(cp, a, half)
    batch.wait()
    cp.cuda.Device().synchronize()
    both_s = time.perf_counter() - started
    hidden = (compute_s + copy_s - both_s) / copy_s
    assert hidden > 0.5, (f"copy {copy_s * 1e3:.1f} ms, compute {compute_s * 1e3:.1f} ms, together "
                          f"{both_s * 1e3:.1f} ms: only {hidden:.0%} of the copy was hidden")
    stager.close()
