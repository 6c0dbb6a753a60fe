"""The array backend and the CPU side of GPU support, on a machine without CuPy or a device.

What runs here: mode handling and its error messages, host/device helpers on NumPy, the
kernel specifications (well-formed, templated on the dtype, each with a NumPy reference),
the device_query wording from a properties dict, and the stager's fallbacks.  The kernels'
code itself is run on the CPU in tests/gpu/test_kernel_emulation.py; everything that needs
a device is in tests/gpu/ (marked `gpu`)."""
import re
import sys
import time

import numpy as np
import pytest

from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.gpu import device, emulate, kernels, staging


@pytest.fixture
def no_cupy(monkeypatch):
    """Make `import cupy` fail as it does where CuPy is not installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setitem(sys.modules, "cupyx", None)
    yield
    backend.set_mode_cpu()


# ---------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------
def test_cpu_mode_by_default():
    assert backend.mode() == "cpu"
    assert backend.xp() is np
    assert isinstance(Blob((2, 3)).data, np.ndarray)


def test_set_mode_gpu_without_cupy_raises_the_install_hint(no_cupy):
    with pytest.raises(RuntimeError, match=r"GPU mode needs CuPy and a CUDA device \(pip install "
                                           r"'pycaffe-lite\[gpu\]'\); importing cupy failed"):
        backend.set_mode_gpu()
    assert backend.mode() == "cpu"          # a failed switch leaves the mode alone
    with pytest.raises(RuntimeError, match="pip install"):
        backend.use_gpu(0)


def test_device_count_and_availability_never_raise(no_cupy):
    assert backend.device_count() == 0
    assert backend.gpu_available() is False
    backend.synchronize()                   # CPU mode: nothing to wait for


def test_set_device_in_cpu_mode_only_records_the_id():
    try:
        backend.set_device(3)
        assert backend.device_id() == 3 and backend.mode() == "cpu"
    finally:
        backend.set_device(0)


# ---------------------------------------------------------------------------
# arrays at the edges
# ---------------------------------------------------------------------------
def test_get_array_module_on_numpy_arrays_and_scalars():
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.get_array_module(np.zeros(2), 3.0, None) is np
    assert backend.get_array_module() is np


def test_host_helpers_on_numpy():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert backend.to_numpy(a) is a
    assert backend.array_device(a) == "cpu"
    assert backend.asarray_like([1, 2], a).tolist() == [1, 2]
    out = backend.host_dict({"prob": a})
    assert out["prob"] is a
    dst = np.zeros((2, 3), np.float32)
    assert backend.copy_into(dst, a.astype(np.float64)) is dst
    np.testing.assert_array_equal(dst, a)
    backend.copy_into(dst, 7)               # broadcasts like dst[...] = 7
    assert (dst == 7).all()


def test_pinned_empty_in_cpu_mode_is_a_plain_array():
    a = backend.pinned_empty((4, 5), np.float64)
    assert type(a) is np.ndarray and a.shape == (4, 5) and a.dtype == np.float64
    assert backend.pinned_empty(3).shape == (3,)


def _tiny_net():
    from pycaffe_lite.net import Net
    from pycaffe_lite.proto import caffe_pb2
    from google.protobuf import text_format
    text = """
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
              inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
    """
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TEST)


def test_blob_devices_and_placement_check_on_a_cpu_net():
    net = _tiny_net()
    places = backend.blob_devices(net)
    assert set(places) == {"cpu"}
    assert {"data", "ip", "ip/0", "ip/1"} <= set(places["cpu"])
    backend.check_net_on(net, "cpu")
    with pytest.raises(ValueError, match=r"blobs expected on gpu:0 are elsewhere \(cpu: data"):
        backend.check_net_on(net, "gpu:0")


def test_random_seed_is_recorded_for_the_device_generator():
    backend.set_random_seed(5)
    first = backend.rng().random()
    backend.set_random_seed(5)
    assert backend.rng().random() == first
    assert backend._rng["seed"] == 5


# ---------------------------------------------------------------------------
# kernel specifications (compiled nowhere here; their code runs in test_kernel_emulation.py)
# ---------------------------------------------------------------------------
EXPECTED_KERNELS = {"pycaffe_im2col", "pycaffe_col2im", "pycaffe_max_pool_fwd", "pycaffe_max_pool_bwd",
                    "pycaffe_ave_pool_fwd", "pycaffe_ave_pool_bwd"}


def test_kernel_entry_names():
    assert set(kernels.KERNELS) == EXPECTED_KERNELS
    for name, spec in kernels.KERNELS.items():
        assert spec.name == name and re.fullmatch(r"[a-z_][a-z0-9_]*", name)


@pytest.mark.parametrize("name", sorted(EXPECTED_KERNELS))
def test_kernel_source_is_well_formed(name):
    spec = kernels.KERNELS[name]
    code = spec.operation
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    ins, outs = emulate.parse_params(spec.in_params), emulate.parse_params(spec.out_params)
    names = [p[2] for p in ins + outs]
    assert len(names) == len(set(names)), "parameter names repeat"
    for _raw, type_name, pname in ins + outs:
        assert type_name == "T" or type_name in ("int32", "int64"), f"{pname}: {type_name}"
        assert pname not in emulate.RESERVED and not pname.startswith("_")
        assert re.search(rf"\b{pname}\b", code), f"parameter {pname} is never used"
    # templated on the dtype: the data arrays are T, no float type is written out
    assert any(t == "T" for _, t, _ in ins) and any(t == "T" for _, t, _ in outs)
    assert not re.search(r"\b(float|double|half|__half|float16)\b", code)
    assert "atomicAdd" not in code                      # gathers, deterministic
    # every non-raw output is assigned; CuPy's reserved names are not redeclared
    for raw, _, pname in outs:
        assert raw or re.search(rf"\b{pname}\s*=", code)
    declared = emulate.declared_names(code)
    assert declared and not [d for d in declared if d in emulate.RESERVED or d.startswith("_")]
    assert len(declared) == len(set(declared)), declared
    assert not set(declared) & set(names), "a local variable shadows a parameter"


@pytest.mark.parametrize("name", sorted(EXPECTED_KERNELS))
def test_each_kernel_names_a_numpy_reference(name):
    assert callable(kernels.reference(name))


def test_kernel_entry_points_on_numpy_call_the_reference():
    from pycaffe_lite.conv.geometry import ConvGeometry
    from pycaffe_lite.conv.im2col import col2im_array, im2col_array
    from pycaffe_lite.layers.pooling import max_pool_forward
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(np.float32)
    geom = ConvGeometry(3, 1, 1)
    np.testing.assert_array_equal(kernels.im2col(x, geom), im2col_array(x, geom))
    cols = im2col_array(x, geom)
    np.testing.assert_array_equal(kernels.col2im(cols, x.shape, geom), col2im_array(cols, x.shape, geom))
    top, argk = kernels.max_pool_forward(x, (2, 2), (2, 2), (0, 0), (3, 3))
    ref_top, ref_argk = max_pool_forward(x, (2, 2), (2, 2), (0, 0), (3, 3))
    np.testing.assert_array_equal(top, ref_top)
    np.testing.assert_array_equal(argk, ref_argk)


def test_cupy_kernel_without_cupy_raises_the_install_hint(no_cupy):
    kernels._COMPILED.clear()
    with pytest.raises(RuntimeError, match="pip install"):
        kernels.cupy_kernel("pycaffe_im2col")


# ---------------------------------------------------------------------------
# device information and timers
# ---------------------------------------------------------------------------
FAKE_PROPS = {"name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 85_045_231_616, "major": 9, "minor": 0,
              "sharedMemPerBlock": 49152, "regsPerBlock": 65536, "warpSize": 32, "maxThreadsPerBlock": 1024,
              "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2147483647, 65535, 65535),
              "clockRate": 1980000, "totalConstMem": 65536, "textureAlignment": 512, "deviceOverlap": 1,
              "multiProcessorCount": 132, "kernelExecTimeoutEnabled": 0}


def test_device_query_lines_use_caffes_labels():
    lines = device.device_query_lines(FAKE_PROPS, 0)
    assert lines[0] == "Device id:                     0"
    assert "Name:                          NVIDIA H100 80GB HBM3" in lines
    assert "Total global memory:           85045231616" in lines
    assert "Maximum dimension of block:    1024, 1024, 64" in lines
    assert "Concurrent copy and execution: Yes" in lines
    assert "Kernel execution timeout:      No" in lines
    assert "Maximum memory pitch:          n/a" in lines      # not reported by CuPy on CUDA
    assert lines[-1] == "NVIDIA H100 80GB HBM3: 79.2 GiB, compute capability 9.0, 132 multiprocessors"
    assert all(len(line.split(":", 1)[0]) <= 29 for line in lines[:-1])


def test_device_functions_without_cupy_raise_the_install_hint(no_cupy):
    for call in (lambda: device.device_query(0), lambda: device.device_properties(0),
                 lambda: device.EventTimer(), lambda: device.memory_info(0)):
        with pytest.raises(RuntimeError, match="pip install"):
            call()


def test_cpu_timer_and_make_timer_in_cpu_mode():
    timer = device.make_timer()
    assert isinstance(timer, device.CpuTimer) and not isinstance(timer, device.EventTimer)
    with timer:
        time.sleep(0.02)
    assert 19 <= timer.ms < 5000 and timer.seconds == timer.ms / 1000
    assert 4 <= device.time_call(lambda: time.sleep(0.005), repeat=3, warmup=0) < 5000   # ms per call


# ---------------------------------------------------------------------------
# staging fallbacks
# ---------------------------------------------------------------------------
def test_wait_ready_passes_cpu_batches_through():
    batch = (np.zeros(3), None)
    assert staging.wait_ready(batch) is batch


def test_make_stager_is_none_for_host_blobs():
    assert staging.make_stager(np.zeros(3)) is None


def test_device_stager_without_cupy_raises_the_install_hint(no_cupy):
    with pytest.raises(RuntimeError, match="pip install"):
        staging.DeviceStager(0)


def test_importing_the_gpu_package_does_not_import_cupy():
    import subprocess
    code = ("import sys, pycaffe_lite, pycaffe_lite.gpu.kernels, pycaffe_lite.gpu.staging, "
            "pycaffe_lite.gpu.device, pycaffe_lite.gpu.emulate; print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



def test_reused_keeps_a_matching_buffer_and_replaces_any_other():
    from pycaffe_lite.backend import reused
    buf = np.zeros((2, 3), np.float32)
    assert reused(buf, (2, 3), np.float32, np) is buf
    for shape, dtype in (((3, 2), np.float32), ((2, 3), np.float64)):
        fresh = reused(buf, shape, dtype, np)
        assert fresh is not buf and fresh.shape == shape and fresh.dtype == dtype
    assert reused(None, [4], "int32", np).shape == (4,)
