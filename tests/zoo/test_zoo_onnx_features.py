"""ONNX export checked in onnxruntime against our forward; feature extraction."""
import importlib

import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.text import parse_text, to_text

from conftest import REPO, fixture_path


def _Net(*args, **kwargs):
    importlib.import_module("pycaffe_lite.layers")
    from pycaffe_lite.net import Net
    return Net(*args, **kwargs)


@pytest.fixture(scope="module")
def mnist():
    with np.load(fixture_path("weights", "mnist_t10k_first1000.npz"), allow_pickle=False) as f:
        return f["images"][:200].astype(np.float32) * 0.00390625, f["labels"][:200]


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_lenet_onnx_matches_our_forward(mnist, tmp_path):
    pytest.importorskip("onnx")
    from pycaffe_lite.zoo.onnx_export import to_onnx
    images, labels = mnist
    model = fixture_path("caffe", "examples", "mnist", "lenet.prototxt")
    net = _Net(str(model), str(fixture_path("weights", "lenet_iter_5000.caffemodel")), caffe_pb2.TEST)
    net.blobs["data"].reshape(100, 1, 28, 28)
    net.reshape()
    onnx_model = to_onnx(net)
    batch = images[100:200]
    ours = net.forward(data=batch)["prob"].copy()
    theirs, = _ort(onnx_model, {"data": batch})
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    assert (ours.argmax(1) == labels[100:200]).mean() > 0.95
    # The CLI writes the same graph.
    out = tmp_path / "lenet.onnx"
    assert main(["export_onnx", "--model", str(model), "--weights",
                 str(fixture_path("weights", "lenet_iter_5000.caffemodel")), "--out", str(out),
                 "--batch", "4"]) == 0
    import onnx
    loaded = onnx.load(str(out))
    assert [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim] == [4, 1, 28, 28]
    assert loaded.graph.output[0].name == "prob"


def test_cifar10_full_onnx_within_channel_lrn_and_average_pooling():
    pytest.importorskip("onnx")
    from pycaffe_lite.zoo.onnx_export import to_onnx
    param = parse_text((REPO / "models" / "cifar10_full" / "deploy.prototxt").read_text(), caffe_pb2.NetParameter())
    param.layer[0].input_param.shape[0].dim[0] = 4
    net = _Net(param, weights=str(fixture_path("weights", "cifar10_full_iter_70000.caffemodel")),
               phase=caffe_pb2.TEST)
    x = np.random.default_rng(0).normal(0, 40, (4, 3, 32, 32)).astype(np.float32)
    ours = net.forward(data=x)["prob"].copy()
    theirs, = _ort(to_onnx(net), {"data": x})
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


SMALL = """
name: "exporter_coverage"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true
        filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "dw" type: "Convolution" bottom: "conv" top: "dw"
        convolution_param { num_output: 6 kernel_h: 1 kernel_w: 3 pad_h: 0 pad_w: 1 group: 6
                            weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "dw" top: "sum" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "pool_a" type: "Pooling" bottom: "sum" top: "pool_a"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool_b" type: "Pooling" bottom: "sum" top: "pool_b"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_c" type: "Pooling" bottom: "sum" top: "pool_c"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "cat" type: "Concat" bottom: "pool_a" bottom: "pool_c" top: "cat" }
layer { name: "lrn" type: "LRN" bottom: "cat" top: "lrn" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }
layer { name: "prelu" type: "PReLU" bottom: "lrn" top: "lrn" }
layer { name: "gap" type: "Pooling" bottom: "lrn" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sig" type: "Sigmoid" bottom: "fc" top: "sig" }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_exporter_covers_zoo_layer_types():
    pytest.importorskip("onnx")
    from pycaffe_lite.zoo.onnx_export import to_onnx
    param = parse_text(SMALL, caffe_pb2.NetParameter())
    net = _Net(param, phase=caffe_pb2.TEST)
    rng = np.random.default_rng(1)
    mean, var = net.params["bn"][0], net.params["bn"][1]
    mean.data[...] = rng.normal(0, 0.2, mean.shape)
    var.data[...] = rng.uniform(0.5, 2.0, var.shape)
    net.params["bn"][2].data[...] = 2.0          # Caffe's moving-average scale factor
    x = rng.normal(0, 1, (2, 4, 10, 10)).astype(np.float32)
    out = net.forward(data=x)
    ours = {k: np.array(v) for k, v in out.items()}
    model = to_onnx(net)
    results = _ort(model, {"data": x})
    names = [o.name for o in model.graph.output]
    for name, value in zip(names, results):
        np.testing.assert_allclose(value, ours[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_export_refuses_training_nets():
    pytest.importorskip("onnx")
    from pycaffe_lite.zoo.onnx_export import to_onnx
    param = parse_text(SMALL.replace('layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }',
                                     'layer { name: "label" type: "Input" top: "label" '
                                     'input_param { shape { dim: 2 } } }\n'
                                     'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
                                     'top: "loss" }'),
                       caffe_pb2.NetParameter())
    with pytest.raises(ValueError, match="SoftmaxWithLoss has no ONNX export; export a deploy net"):
        to_onnx(_Net(param, phase=caffe_pb2.TEST))


def test_extract_features_npz_and_lmdb(mnist, tmp_path):
    from pycaffe_lite.zoo.features import extract_features, save_features
    images, _ = mnist
    net = _Net(str(fixture_path("caffe", "examples", "mnist", "lenet.prototxt")),
               str(fixture_path("weights", "lenet_iter_5000.caffemodel")), caffe_pb2.TEST)
    net.blobs["data"].reshape(32, 1, 28, 28)
    net.reshape()
    feats = extract_features(net, ["ip1", "prob"], iterations=3, inputs={"data": images})
    assert feats["ip1"].shape == (96, 500) and feats["prob"].shape == (96, 10)
    reference = net.forward(data=images[64:96])
    np.testing.assert_allclose(feats["prob"][64:], reference["prob"], rtol=1e-6)
    written = save_features(feats, tmp_path / "f.npz")
    with np.load(written[0], allow_pickle=False) as f:
        assert sorted(f.files) == ["ip1", "prob"]
    paths = [tmp_path / "ip1_lmdb", tmp_path / "prob_lmdb"]
    save_features(feats, paths)
    from pycaffe_lite.data.lmdb_io import iter_datums
    records = list(iter_datums(paths[1]))
    assert len(records) == 96 and records[5][0] == b"%010d" % 5
    datum = records[5][1]
    assert (datum.channels, datum.height, datum.width) == (10, 1, 1)
    np.testing.assert_allclose(datum.float_data, feats["prob"][5], rtol=1e-6)
    with pytest.raises(ValueError, match="no blob 'fc7'"):
        extract_features(net, ["fc7"])


def test_extract_features_cli_reads_the_nets_own_data(tmp_path):
    """Caffe's usage: a TEST net with a Data layer (the fixture's digits LMDB, written by Caffe)."""
    lmdb = fixture_path("caffe_e2e", "test_lmdb")
    param = parse_text(fixture_path("caffe", "examples", "mnist", "lenet_train_test.prototxt").read_text(),
                       caffe_pb2.NetParameter())
    for layer in param.layer:
        if layer.type == "Data":
            layer.data_param.source = str(lmdb)
            layer.data_param.batch_size = 10
    model = tmp_path / "net.prototxt"
    model.write_text(to_text(param))
    out = tmp_path / "features.npz"
    assert main(["extract_features", "--model", str(model), "--weights",
                 str(fixture_path("weights", "lenet_iter_5000.caffemodel")), "--blobs", "ip2,label",
                 "--out", str(out), "--iterations", "2"]) == 0
    with np.load(out, allow_pickle=False) as f:
        assert f["ip2"].shape == (20, 10) and f["label"].shape == (20,)
