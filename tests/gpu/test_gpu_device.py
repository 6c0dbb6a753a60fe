"""GPU mode end to end on one device: device_query, event timers, and a Net whose blobs all live
on the device with host copies only at the edges."""
import numpy as np
import pytest
from google.protobuf import text_format

from gpu_helpers import cp, gpu_mode, rel_err  # noqa: F401  (fixtures)
from pycaffe_lite import backend
from pycaffe_lite.gpu import device

pytestmark = pytest.mark.gpu

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _net():
    from pycaffe_lite.net import Net
    from pycaffe_lite.proto import caffe_pb2
    return Net(text_format.Parse(NET, caffe_pb2.NetParameter()), phase=caffe_pb2.TEST)


def test_device_query_reports_name_memory_and_capability(cp):
    lines = device.device_query(0)
    props = device.device_properties(0)
    assert props["name"] and props["name"] in lines[-1]
    assert f"compute capability {props['major']}.{props['minor']}" in lines[-1]
    assert any(line.startswith("Total global memory:") and line.split()[-1].isdigit() for line in lines)
    free, total = device.memory_info(0)
    assert 0 < free <= total == props["totalGlobalMem"]


def test_asking_for_a_missing_device_names_the_visible_ones(cp):
    count = cp.cuda.runtime.getDeviceCount()
    try:
        with pytest.raises(RuntimeError, match=f"GPU {count} was asked for, but {count} CUDA device"):
            backend.use_gpu(count)
    finally:
        backend.set_device(0)
        backend.set_mode_cpu()


def test_event_timer_measures_device_work(cp):
    a = cp.random.random((2048, 2048), dtype=cp.float32)
    timer = device.make_timer(gpu=True)
    assert isinstance(timer, device.EventTimer)
    timer.start()
    for _ in range(20):
        a = a @ a / 2048.0
    timer.stop()
    # 20 GEMMs of 2 * 2048**3 flops: far above a launch's few microseconds, far below minutes
    assert 0.05 < timer.ms < 60_000
    assert device.time_call(lambda: a @ a, repeat=3, timer=timer) > 0


def test_gpu_mode_net_lives_on_the_device(gpu_mode):
    net = _net()
    backend.check_net_on(net, "gpu:0")
    x = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype(np.float32)
    backend.copy_into(net.blobs["data"].data, x)        # the edge: data in
    out = backend.host_dict(net.forward())               # the edge: reported outputs
    assert isinstance(out["prob"], np.ndarray)
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1, rtol=1e-5)
    backend.check_net_on(net, "gpu:0")                   # nothing fell back to the host
    # the same net on the CPU with the same weights
    weights = {name: [backend.to_numpy(b.data) for b in blobs] for name, blobs in net.params.items()}
    backend.set_mode_cpu()
    cpu_net = _net()
    for name, blobs in cpu_net.params.items():
        for blob, value in zip(blobs, weights[name]):
            blob.data[...] = value
    cpu_net.blobs["data"].data[...] = x
    assert rel_err(out["prob"], cpu_net.forward()["prob"]) <= 1e-5


def test_gpu_mode_snapshot_round_trip(gpu_mode, tmp_path):
    net = _net()
    net.save(str(tmp_path / "w.caffemodel"))             # the edge: snapshots go through the host
    other = _net()
    other.copy_from(str(tmp_path / "w.caffemodel"))
    backend.check_net_on(other, "gpu:0")
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            assert rel_err(b.data, a.data) == 0


def test_pinned_empty_in_gpu_mode_is_page_locked(gpu_mode):
    cupy = gpu_mode
    host = backend.pinned_empty((1024,), np.float32)
    attrs = cupy.cuda.runtime.pointerGetAttributes(host.ctypes.data)
    assert getattr(attrs, "type", getattr(attrs, "memoryType", None)) == 1


def test_random_seed_seeds_the_device_generator(gpu_mode):
    cupy = gpu_mode
    backend.set_random_seed(11)
    first = cupy.random.random(4).get()
    backend.set_random_seed(11)
    np.testing.assert_array_equal(cupy.random.random(4).get(), first)
