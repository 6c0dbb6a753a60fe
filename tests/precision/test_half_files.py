"""Half precision, the file-format part (issue 18): NVCaffe's precision fields parse, a Net refuses the
types it cannot run yet, NVCaffe's raw FLOAT16 blobs load, and `convert --fp16` writes them."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.net import TEST, Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.blobs import _varint, array_to_blob_proto, blob_proto_to_array
from pycaffe_lite.proto.files import read_weights

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "models" / "lenet" / "deploy.prototxt"
LENET_WEIGHTS = ROOT.parent / "shared" / "fixtures" / "weights" / "lenet_iter_5000.caffemodel"


def _field(number, wire, payload):
    return _varint(number << 3 | wire) + (_varint(len(payload)) + payload if wire == 2 else payload)


def nvcaffe_blob_bytes(values, raw_type=2, layout="<f2"):
    """A BlobProto as NVCaffe's Blob::ToProto writes it, from its schema's numbers: shape (7, packed
    dims), raw_data_type (10, varint), raw_data (12, bytes)."""
    dims = b"".join(_varint(d) for d in values.shape)
    return (_field(7, 2, _field(1, 2, dims)) + _field(10, 0, _varint(raw_type))
            + _field(12, 2, values.astype(layout).tobytes()))


def test_nvcaffe_fp16_blob_loads_with_its_values():
    values = np.array([[0.5, -1.25, 3.0], [65504.0, 6e-8, -0.0]], np.float16)
    proto = caffe_pb2.BlobProto.FromString(nvcaffe_blob_bytes(values))
    assert proto.raw_data_type == caffe_pb2.FLOAT16 and len(proto.raw_data) == 12 and not proto.data
    array = blob_proto_to_array(proto)
    assert array.dtype == np.float16 and array.shape == (2, 3)
    np.testing.assert_array_equal(array, values)
    # FLOAT and DOUBLE raw bytes too, little-endian whatever the machine
    for raw_type, layout, dtype in ((caffe_pb2.FLOAT, "<f4", np.float32), (caffe_pb2.DOUBLE, "<f8", np.float64)):
        wide = np.arange(6, dtype=dtype).reshape(2, 3) / 7
        got = blob_proto_to_array(caffe_pb2.BlobProto.FromString(nvcaffe_blob_bytes(wide, raw_type, layout)))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, wide)


def test_raw_blob_errors_name_the_field_and_sizes():
    proto = caffe_pb2.BlobProto.FromString(nvcaffe_blob_bytes(np.zeros((2, 3), np.float16)))
    proto.shape.dim[1] = 4
    with pytest.raises(ValueError, match=r"raw_data holds 12 bytes of FLOAT16; its shape needs 8 values, 16 bytes"):
        blob_proto_to_array(proto)
    proto.ClearField("raw_data_type")
    with pytest.raises(ValueError, match="raw_data but no raw_data_type"):
        blob_proto_to_array(proto)
    proto.raw_data_type = caffe_pb2.INT
    with pytest.raises(ValueError, match="raw_data holds INT values"):
        blob_proto_to_array(proto)


def test_array_to_blob_proto_writes_raw_fp16_with_diff():
    data, diff = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4), np.full((3, 4), 0.25, np.float32)
    proto = array_to_blob_proto(data, diff, raw_type=caffe_pb2.FLOAT16)
    assert len(proto.raw_data) == 24 and proto.raw_diff_type == caffe_pb2.FLOAT16 and not proto.data
    np.testing.assert_array_equal(blob_proto_to_array(proto), data.astype(np.float16))
    np.testing.assert_array_equal(blob_proto_to_array(proto, want_diff=True), diff)


def test_bfloat16_raw_is_the_high_half_of_float32():
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    high = (values.view(np.uint32) >> 16).astype("<u2")
    proto = caffe_pb2.BlobProto(raw_data_type=caffe_pb2.BFLOAT16, raw_data=high.tobytes())
    proto.shape.dim.append(3)
    np.testing.assert_array_equal(blob_proto_to_array(proto), values)


NVCAFFE_NET = """
name: "mixed"
default_forward_type: FLOAT16
default_backward_type: FLOAT16
default_forward_math: FLOAT
default_backward_math: FLOAT
global_grad_scale: 1000
global_grad_scale_adaptive: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" forward_type: FLOAT backward_type: FLOAT16
        forward_math: FLOAT backward_math: FLOAT inner_product_param { num_output: 4 } }
"""


def test_nvcaffe_precision_fields_parse():
    net = text_format.Parse(NVCAFFE_NET, caffe_pb2.NetParameter())
    assert (net.default_forward_type, net.default_backward_type) == (caffe_pb2.FLOAT16, caffe_pb2.FLOAT16)
    assert (net.default_forward_math, net.default_backward_math) == (caffe_pb2.FLOAT, caffe_pb2.FLOAT)
    assert net.global_grad_scale == 1000 and net.global_grad_scale_adaptive
    ip = net.layer[1]
    assert (ip.forward_type, ip.backward_type, ip.forward_math, ip.backward_math) == (
        caffe_pb2.FLOAT, caffe_pb2.FLOAT16, caffe_pb2.FLOAT, caffe_pb2.FLOAT)
    solver = text_format.Parse('base_lr: 0.01 solver_data_type: FLOAT16', caffe_pb2.SolverParameter())
    assert solver.solver_data_type == caffe_pb2.FLOAT16
    # NVCaffe's defaults when unset
    assert caffe_pb2.NetParameter().default_forward_type == caffe_pb2.FLOAT
    assert caffe_pb2.NetParameter().global_grad_scale == 1.0
    assert caffe_pb2.LayerParameter().backward_math == caffe_pb2.FLOAT
    assert caffe_pb2.SolverParameter().solver_data_type == caffe_pb2.FLOAT


def _net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


PLAIN = NVCAFFE_NET.split("layer", 1)[1]


@pytest.mark.parametrize("head, message", [
    ("global_grad_scale: 1000", r"global_grad_scale 1000 \(adaptive: false\) is parsed but loss scaling"),
    ("default_forward_type: FLOAT16",
     r"layer 'data' \(type Input\): FLOAT16 default_forward_type is parsed but not yet supported"),
    ("default_backward_math: BFLOAT16", r"layer 'data' \(type Input\): BFLOAT16 default_backward_math is parsed"),
    ("default_forward_type: DOUBLE", r"DOUBLE default_forward_type asks for float64 but this Net runs float32"),
])
def test_net_refuses_the_types_it_cannot_run(head, message):
    with pytest.raises(NotImplementedError, match=message):
        Net(_net(head + "\nlayer" + PLAIN), phase=TEST)


def test_layer_type_overrides_the_default_and_derives_its_math():
    # every layer sets FLOAT: the net's FLOAT16 default applies nowhere
    text = PLAIN.replace("backward_type: FLOAT16", "backward_type: FLOAT")
    text = text.replace('top: "data"', 'top: "data" forward_type: FLOAT backward_type: FLOAT', 1)
    net = Net(_net("default_forward_type: FLOAT16 default_backward_type: FLOAT16\nlayer" + text), phase=TEST)
    assert net.forward(data=np.ones((2, 3), np.float32))["ip"].shape == (2, 4)
    # the layer's own FLOAT16 storage is named, with its field
    with pytest.raises(NotImplementedError, match=r"layer 'ip' \(type InnerProduct\): FLOAT16 backward_type is"):
        Net(_net("layer" + PLAIN), phase=TEST)


def test_float_and_double_run_where_the_net_dtype_matches():
    plain = "layer" + PLAIN.replace("FLOAT16", "FLOAT")
    Net(_net("default_forward_type: FLOAT\n" + plain), phase=TEST)
    double = plain.replace("FLOAT", "DOUBLE")
    net = Net(_net("default_forward_type: DOUBLE default_backward_type: DOUBLE\n" + double), phase=TEST,
              dtype=np.float64)
    assert net.blobs["ip"].data.dtype == np.float64
    with pytest.raises(NotImplementedError, match="FLOAT forward_type asks for float32 but this Net runs float64"):
        Net(_net(plain), phase=TEST, dtype=np.float64)


def test_solver_refuses_fp16_master_weights(tmp_path):
    from pycaffe_lite.solvers import SGDSolver
    net = tmp_path / "net.prototxt"
    net.write_text("layer" + PLAIN.replace("FLOAT16", "FLOAT"))
    solver = caffe_pb2.SolverParameter(net=str(net), base_lr=0.1, lr_policy="fixed",
                                       solver_data_type=caffe_pb2.FLOAT16)
    with pytest.raises(NotImplementedError, match="solver_data_type FLOAT16 is parsed but not yet supported"):
        SGDSolver(solver)


def _digits():
    data = np.load(LENET_WEIGHTS.parent / "mnist_t10k_first1000.npz")
    images = data["images"][:64].astype(np.float32).reshape(64, 1, 28, 28)
    return images * np.float32(0.00390625) if images.max() > 1 else images


@pytest.mark.skipif(not LENET_WEIGHTS.exists(), reason="LeNet weights fixture missing")
def test_convert_fp16_lenet_half_the_size_same_outputs(tmp_path):
    out = tmp_path / "lenet_fp16.caffemodel"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "convert", str(LENET_WEIGHTS), str(out),
                           "--fp16"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "8 blobs" in done.stdout and "as FLOAT16 raw_data" in done.stdout
    ratio = out.stat().st_size / LENET_WEIGHTS.stat().st_size
    assert 0.49 < ratio < 0.52, ratio
    written = read_weights(out)
    blobs = [b for layer in written.layer for b in layer.blobs]
    assert blobs and all(b.raw_data_type == caffe_pb2.FLOAT16 and not b.data for b in blobs)
    images = _digits()
    full = Net(str(LENET), str(LENET_WEIGHTS), phase=TEST).forward(data=images)["prob"].copy()
    half = Net(str(LENET), str(out), phase=TEST).forward(data=images)["prob"].copy()
    assert np.abs(full - half).max() < 1e-2
    assert (full.argmax(1) == half.argmax(1)).mean() >= 0.98
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromCaffe (removed in OpenCV 5)")
    for weights in (LENET_WEIGHTS, out):
        cv_net = cv2.dnn.readNetFromCaffe(str(LENET), str(weights))
        cv_net.setInput(images)
        got = cv_net.forward("prob").reshape(full.shape)
        assert np.abs(got - full).max() < 1e-2, weights
