"""A pycaffe-style script, using only `import pycaffe_lite as caffe`: the drop-in surface."""
import textwrap
import time

import numpy as np
import pytest

import pycaffe_lite as caffe

TINY = """
name: "tiny"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 2 dim: 3 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: -0.2 } } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""

WITH_LOSS = """
name: "tiny_loss"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return str(path)


def reference_forward(net, x):
    w1, b1 = (p.data for p in net.params["ip1"])
    w2, b2 = (p.data for p in net.params["ip2"])
    h = np.maximum(x.reshape(len(x), -1) @ w1.T + b1, 0)
    z = h @ w2.T + b2
    e = np.exp(z - z.max(1, keepdims=True))
    return h, e / e.sum(1, keepdims=True)


def reference_backward(net, x, g):
    w1 = net.params["ip1"][0].data
    w2 = net.params["ip2"][0].data
    h, p = reference_forward(net, x)
    dz = p * (g - (g * p).sum(1, keepdims=True))
    dh = (dz @ w2) * (h > 0)
    return (dh @ w1).reshape(x.shape)


def test_module_surface_matches_pycaffe():
    assert caffe.TRAIN == 0 and caffe.TEST == 1
    assert caffe.__version__
    assert "InnerProduct" in caffe.layer_type_list() and "Python" in caffe.layer_type_list()
    from pycaffe_lite.proto import caffe_pb2
    assert caffe.proto.caffe_pb2 is caffe_pb2
    assert caffe.io.Transformer and caffe.Classifier and caffe.Detector and caffe.NetSpec
    assert caffe.params.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    from pycaffe_lite.layer import Layer
    assert caffe.Layer is Layer           # the base a Python layer must subclass (PythonLayer checks it)
    caffe.set_mode_cpu()
    caffe.set_device(0)
    timer = caffe.Timer()
    timer.start()
    time.sleep(0.02)
    timer.stop()
    assert 19 <= timer.ms < 5000          # milliseconds, as pycaffe's Timer.ms
    for name in ("SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "get_solver"):
        assert callable(getattr(caffe, name))


def test_net_constructor_forms(tiny_file, tmp_path):
    caffe.set_random_seed(3)
    net = caffe.Net(tiny_file, caffe.TEST)
    weights = str(tmp_path / "tiny.caffemodel")
    net.save(weights)
    for other in (caffe.Net(tiny_file, weights, caffe.TEST),
                  caffe.Net(tiny_file, caffe.TEST, weights=weights),
                  caffe.Net(tiny_file, weights=weights, phase=caffe.TEST),
                  caffe.Net(tiny_file, caffe.TEST, level=0, stages=[], weights=weights)):
        for name in net.params:
            for a, b in zip(net.params[name], other.params[name]):
                np.testing.assert_array_equal(a.data, b.data)
    # fillers follow set_random_seed
    caffe.set_random_seed(3)
    again = caffe.Net(tiny_file, caffe.TEST)
    np.testing.assert_array_equal(again.params["ip1"][0].data, net.params["ip1"][0].data)


def test_net_views_and_names(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net.blobs) == ["data", "ip1", "ip2", "prob"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    assert list(net.layer_dict) == ["data", "ip1", "relu1", "ip2", "prob"]
    assert net.layer_dict["ip1"] is net.layers[1]
    assert net.top_names["relu1"] == ["ip1"] and net.bottom_names["ip2"] == ["ip1"]
    assert dict(net.blob_loss_weights) == {"data": 0, "ip1": 0, "ip2": 0, "prob": 0}
    assert net._layer_names == ["data", "ip1", "relu1", "ip2", "prob"]
    assert [net._blob_names[i] for i in net._top_ids(1)] == ["ip1"]
    blob = net.blobs["data"]
    assert blob.shape == (4, 2, 3, 3) and blob.count == 72
    assert (blob.num, blob.channels, blob.height, blob.width) == (4, 2, 3, 3)
    assert net.params["ip1"][0].data.shape == (5, 18) and net.params["ip1"][1].data.shape == (5,)


def test_forward_with_keyword_inputs_and_start_end(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    out = net.forward(data=x)
    assert set(out) == {"prob"}
    h, p = reference_forward(net, x)
    np.testing.assert_allclose(out["prob"], p, rtol=1e-5, atol=1e-6)
    out = net.forward(blobs=["ip1"], data=x)
    assert set(out) == {"prob", "ip1"}
    np.testing.assert_allclose(out["ip1"], h, rtol=1e-5, atol=1e-6)
    out = net.forward(end="ip2")
    assert set(out) == {"ip2"}
    out = net.forward(end="relu1")          # ending early returns the end layer's tops, not its name
    assert set(out) == {"ip1"}
    net.blobs["ip2"].data[...] = 0
    out = net.forward(start="prob")
    np.testing.assert_allclose(out["prob"], np.full((4, 3), 1 / 3), rtol=1e-6)
    with pytest.raises(ValueError, match="do not match net inputs"):
        net.forward(nodata=x)


def test_backward_with_keyword_diffs(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32)
    net.forward(data=x)
    diffs = net.backward(prob=g)
    assert set(diffs) == {"data"}
    np.testing.assert_allclose(diffs["data"], reference_backward(net, x, g), rtol=1e-4, atol=1e-5)
    diffs = net.backward(diffs=["ip1"], prob=g)
    assert set(diffs) == {"data", "ip1"}
    diffs = net.backward(end="ip2", prob=g)    # stopping early returns the end layer's bottoms
    assert set(diffs) == {"ip1"}


def test_blob_views_write_through(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    x = np.ones((4, 2, 3, 3), np.float32)
    net.blobs["data"].data[...] = x                  # pycaffe's way of feeding an input
    weights = net.params["ip2"][0].data
    weights[...] = 0                                 # a view: the net sees it
    net.params["ip2"][1].data[...] = [0, 0, np.log(2)]
    out = net.forward()
    np.testing.assert_allclose(out["prob"][0], [0.25, 0.25, 0.5], rtol=1e-5)
    assert net.params["ip2"][0].data is weights or np.shares_memory(net.params["ip2"][0].data, weights)
    # reshaping an input and the net (pycaffe: blob.reshape(...); net.reshape())
    net.blobs["data"].reshape(7, 2, 3, 3)
    net.reshape()
    assert net.blobs["prob"].data.shape == (7, 3)
    assert net.forward(data=np.zeros((7, 2, 3, 3), np.float32))["prob"].shape == (7, 3)


def test_forward_all_pads_and_trims(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    x = np.random.default_rng(2).standard_normal((10, 2, 3, 3)).astype(np.float32)  # 2.5 batches
    out = net.forward_all(data=x)
    assert out["prob"].shape == (10, 3)
    np.testing.assert_allclose(out["prob"], reference_forward(net, x)[1], rtol=1e-5, atol=1e-6)
    out = net.forward_all(blobs=["ip1"], data=x)
    assert out["ip1"].shape == (10, 5)
    with pytest.raises(ValueError, match="forward_all needs input arrays"):
        net.forward_all()


def test_forward_backward_all(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((6, 3)).astype(np.float32)
    blobs, diffs = net.forward_backward_all(data=x, prob=g)
    assert blobs["prob"].shape == (6, 3) and diffs["data"].shape == (6, 2, 3, 3)
    np.testing.assert_allclose(diffs["data"], reference_backward(net, x, g), rtol=1e-4, atol=1e-5)


def test_loss_net_forward_backward_and_param_diffs(tmp_path):
    path = tmp_path / "loss.prototxt"
    path.write_text(WITH_LOSS)
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2], np.float32)
    out = net.forward(data=x, label=y)
    w = net.params["ip"][0].data
    z = x @ w.T + net.params["ip"][1].data
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(4), y.astype(int)]).mean()
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0
    net.clear_param_diffs()
    net.backward()
    onehot = np.eye(3)[y.astype(int)]
    np.testing.assert_allclose(net.params["ip"][0].diff, (p - onehot).T @ x / 4, rtol=1e-4, atol=1e-6)


def test_copy_from_and_save_round_trip(tiny_file, tmp_path):
    net = caffe.Net(tiny_file, caffe.TEST)
    x = np.random.default_rng(5).standard_normal((4, 2, 3, 3)).astype(np.float32)
    want = net.forward(data=x)["prob"].copy()
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    fresh = caffe.Net(tiny_file, caffe.TEST)
    assert not np.allclose(fresh.forward(data=x)["prob"], want)
    fresh.copy_from(str(path))
    np.testing.assert_allclose(fresh.forward(data=x)["prob"], want, rtol=1e-6)
    # HDF5 round trip, Caffe's layout
    h5 = tmp_path / "w.h5"
    net.save_hdf5(str(h5))
    other = caffe.Net(tiny_file, caffe.TEST)
    other.load_hdf5(str(h5))
    np.testing.assert_allclose(other.forward(data=x)["prob"], want, rtol=1e-6)
    import h5py
    with h5py.File(h5, "r") as f:
        assert sorted(f["data"]) == sorted(net.layer_names)
        assert f["data/ip1/0"].shape == (5, 18) and "diff" not in f


def test_load_hdf5_refuses_a_wrong_shape(tiny_file, tmp_path):
    import h5py
    net = caffe.Net(tiny_file, caffe.TEST)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("data/ip1/0", data=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="ip1.*shape"):
        net.load_hdf5(str(tmp_path / "bad.h5"))


def test_set_input_arrays_feeds_a_memory_data_layer(tmp_path):
    path = tmp_path / "mem.prototxt"
    path.write_text("""
        layer { name: "data" type: "MemoryData" top: "data" top: "label"
                memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }
        layer { name: "out" type: "Flatten" bottom: "data" top: "flat" }
        layer { name: "silence" type: "Silence" bottom: "label" }
    """)
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    labels = np.array([0, 1, 2, 3], np.float32)
    net.set_input_arrays(data, labels)
    np.testing.assert_array_equal(net.forward()["flat"], data[:2].reshape(2, 4))
    np.testing.assert_array_equal(net.blobs["label"].data, labels[:2])
    np.testing.assert_array_equal(net.forward()["flat"], data[2:].reshape(2, 4))
    with pytest.raises(ValueError, match="multiple of batch size"):
        net.set_input_arrays(data[:3], labels[:3])
    with pytest.raises(ValueError, match="float32"):
        net.set_input_arrays(data.astype(np.float64), labels)


def python_layer_net(tmp_path, monkeypatch, module, source, net_text):
    """The path of a net whose Python layer lives in module `module` (written from `source`)."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{module}.prototxt"
    path.write_text(net_text)
    return str(path)


def test_python_layer(tmp_path, monkeypatch):
    path = python_layer_net(tmp_path, monkeypatch, "pyc_lite_test_double", """
        import pycaffe_lite as caffe

        class DoubleLayer(caffe.Layer):
            def setup(self, bottom, top):
                self.factor = float(self.param_str or 2)

            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)

            def forward(self, bottom, top):
                top[0].data[...] = self.factor * bottom[0].data

            def backward(self, top, propagate_down, bottom):
                if propagate_down[0]:
                    bottom[0].diff[...] = self.factor * top[0].diff
    """, """
        force_backward: true
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "triple" type: "Python" bottom: "data" top: "out"
                python_param { module: "pyc_lite_test_double" layer: "DoubleLayer" param_str: "3" } }
    """)
    with pytest.raises(PermissionError, match="allow_python=True"):
        caffe.Net(path, caffe.TEST, allow_python=False)
    net = caffe.Net(path, caffe.TEST, allow_python=True)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(net.forward(data=x)["out"], 3 * x)
    np.testing.assert_array_equal(net.backward(out=np.ones((2, 3), np.float32))["data"], np.full((2, 3), 3))
    assert net.layers[1].type == "Python" and net.layers[1].param_str == "3"


SOLVER = """
base_lr: 0.1
momentum: 0.9
weight_decay: 0.001
lr_policy: "step"
gamma: 0.5
stepsize: 2
max_iter: 10
display: 0
snapshot_after_train: false
solver_mode: CPU
random_seed: 7
snapshot_prefix: "{prefix}"
net_param {{
  name: "toy"
  layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 8 dim: 4 }} }} }}
  layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 8 }} }} }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
}}
"""


def _feed(solver):
    rng = np.random.default_rng(11)
    solver.net.blobs["data"].data[...] = rng.standard_normal((8, 4))
    solver.net.blobs["label"].data[...] = rng.integers(0, 3, 8)


def test_solver_steps_snapshots_and_restores(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER.format(prefix=(tmp_path / "toy").as_posix()))
    solver = caffe.SGDSolver(str(path))
    _feed(solver)
    solver.net.forward()
    first_loss = float(solver.net.blobs["loss"].data)
    solver.step(3)
    assert solver.iter == 3
    solver.snapshot()
    state = tmp_path / "toy_iter_3.solverstate"
    assert state.exists() and (tmp_path / "toy_iter_3.caffemodel").exists()
    solver.step(3)
    assert float(solver.net.blobs["loss"].data) < first_loss
    continued = [p.data.copy() for p in solver.net.params["ip"]]

    resumed = caffe.get_solver(str(path))
    _feed(resumed)
    resumed.restore(str(state))
    assert resumed.iter == 3
    resumed.step(3)
    for a, b in zip(continued, resumed.net.params["ip"]):
        np.testing.assert_allclose(b.data, a, rtol=1e-6, atol=1e-7)
    # the snapshot's weights load into a Net of the same layers through copy_from
    net = caffe.Net(resumed.param.net_param, caffe.TEST)
    net.copy_from(str(tmp_path / "toy_iter_3.caffemodel"))
    assert net.params["ip"][0].data.shape == (3, 4)


@pytest.mark.gpu
def test_forward_all_on_gpu_returns_numpy(tiny_file):
    try:
        import cupy  # noqa: F401
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy or no device
        pytest.skip(f"no GPU: {exc}")
    caffe.set_mode_gpu()
    try:
        net = caffe.Net(tiny_file, caffe.TEST)
        x = np.random.default_rng(6).standard_normal((5, 2, 3, 3)).astype(np.float32)
        out = net.forward_all(data=x)
        assert isinstance(out["prob"], np.ndarray) and out["prob"].shape == (5, 3)
        np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-5)
    finally:
        caffe.set_mode_cpu()


# ---- pycaffe semantics that the core provides: views stay live, .h5 weights load by suffix
def test_blob_data_view_stays_live_across_forward(tiny_file):
    net = caffe.Net(tiny_file, caffe.TEST)
    view = net.blobs["ip2"].data          # pycaffe scripts keep such views across forwards
    net.forward(data=np.ones((4, 2, 3, 3), np.float32))
    assert np.shares_memory(view, net.blobs["ip2"].data)
    first = view.copy()
    net.forward(data=np.zeros((4, 2, 3, 3), np.float32))
    assert not np.array_equal(view, first)


def test_net_takes_hdf5_weights_like_caffe(tiny_file, tmp_path):
    net = caffe.Net(tiny_file, caffe.TEST)
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    other = caffe.Net(tiny_file, str(tmp_path / "w.caffemodel.h5"), caffe.TEST)
    np.testing.assert_array_equal(other.params["ip1"][0].data, net.params["ip1"][0].data)


def test_python_layer_with_a_parameter_blob(tmp_path, monkeypatch):
    path = python_layer_net(tmp_path, monkeypatch, "pyc_lite_test_param", """
        import pycaffe_lite as caffe

        class ParameterLayer(caffe.Layer):
            def setup(self, bottom, top):
                self.blobs.add_blob(2, 1)          # pycaffe's BlobVec.add_blob(*shape)
                self.blobs[0].data[...] = 5

            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)

            def forward(self, bottom, top):
                top[0].data[...] = bottom[0].data + self.blobs[0].data.sum()

            def backward(self, top, propagate_down, bottom):
                self.blobs[0].diff[...] = 1
    """, """
        force_backward: true
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "layer" type: "Python" bottom: "data" top: "out"
                python_param { module: "pyc_lite_test_param" layer: "ParameterLayer" } }
    """)
    net = caffe.Net(path, caffe.TRAIN, allow_python=True)
    assert net.params["layer"][0].data.shape == (2, 1) and net.params["layer"][0].data.dtype == np.float32
    assert net.forward(data=np.zeros((1, 2), np.float32))["out"].tolist() == [[10.0, 10.0]]
    net.backward(out=np.ones((1, 2), np.float32))
    net.update()
    assert net.params["layer"][0].data.tolist() == [[4.0], [4.0]]


def test_python_layers_written_for_pycaffe_import_caffe(tmp_path, monkeypatch):
    import sys
    for name in [m for m in sys.modules if m == "caffe" or m.startswith("caffe.")]:
        monkeypatch.delitem(sys.modules, name)
    path = python_layer_net(tmp_path, monkeypatch, "pyc_lite_test_pyloss", """
        import caffe                                   # as Caffe's examples/pycaffe/layers/pyloss.py
        from caffe.proto import caffe_pb2
        import numpy as np

        class EuclideanLossLayer(caffe.Layer):
            def setup(self, bottom, top):
                assert caffe_pb2.TRAIN == caffe.TRAIN

            def reshape(self, bottom, top):
                top[0].reshape(1)

            def forward(self, bottom, top):
                top[0].data[...] = np.sum((bottom[0].data - bottom[1].data) ** 2) / bottom[0].num / 2.

            def backward(self, top, propagate_down, bottom):
                pass
    """, """
        layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "loss" type: "Python" bottom: "a" bottom: "b" top: "loss" loss_weight: 1
                python_param { module: "pyc_lite_test_pyloss" layer: "EuclideanLossLayer" } }
    """)
    try:
        net = caffe.Net(path, caffe.TRAIN, allow_python=True)
        out = net.forward(a=np.ones((2, 3), np.float32), b=np.zeros((2, 3), np.float32))
        assert out["loss"].tolist() == [1.5]
        assert sys.modules["caffe"] is caffe and sys.modules["caffe.proto.caffe_pb2"] is caffe.caffe_pb2
    finally:
        for name in [m for m in sys.modules if m == "caffe" or m.startswith("caffe.")]:
            del sys.modules[name]
        sys.modules.pop("pyc_lite_test_pyloss", None)


def test_caffe_layers_is_netspec_and_the_implementations_stay_a_package():
    """As BVLC's caffe/__init__.py, `caffe.layers` is NetSpec's L; the built-in layer implementations
    remain the package pycaffe_lite.layers, reached by module path."""
    import importlib
    import sys
    from pycaffe_lite.pycaffe import net_spec
    assert caffe.layers is net_spec.layers and caffe.params is net_spec.params
    top = caffe.layers.Convolution(caffe.layers.Input(shape=dict(dim=[1, 1, 4, 4])), kernel_size=3, num_output=2)
    assert [layer.type for layer in top.to_proto().layer] == ["Input", "Convolution"]
    package = importlib.import_module("pycaffe_lite.layers")
    assert package is sys.modules["pycaffe_lite.layers"] and package.__path__
    assert importlib.import_module("pycaffe_lite.layers.conv").ConvolutionLayer.type == "Convolution"
    # pycaffe's submodule names import as modules (`from caffe.classifier import Classifier`)
    for name in ("io", "draw", "classifier", "detector", "net_spec", "coord_map"):
        assert importlib.import_module(f"pycaffe_lite.{name}") is getattr(caffe, name)
    assert importlib.import_module("pycaffe_lite.classifier").Classifier is caffe.Classifier
