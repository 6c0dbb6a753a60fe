"""Packed binary weights: BlobProto's sign bits (our packed_signs / packed_scale fields) round trip,
a packed .caffemodel is 32x smaller for the binary layers' weights, loads into our Net and gives the
float weights' outputs exactly, and `pycaffe-lite convert --binary` writes it."""
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.net import TEST, Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.blobs import blob_proto_to_array, signs_to_blob_proto
from pycaffe_lite.proto.files import read_weights

NET = """
name: "tiny_binary"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "BinaryConvolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "uniform" min: -1 max: 1 }
                            bias_filler { type: "uniform" } }
        binary_param { binarize_input: false scale: MEAN_ABS } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "fc2" type: "BinaryInnerProduct" bottom: "conv1" top: "fc2"
        inner_product_param { num_output: 384 weight_filler { type: "uniform" min: -1 max: 1 } }
        binary_param { scale: %s } }
"""


def make_net(scale="MEAN_ABS", seed=0):
    net = Net(text_format.Parse(NET % scale, caffe_pb2.NetParameter()), phase=TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.uniform(-1, 1, blob.shape)
    net.params["bn1"][2].data[...] = 1        # BatchNorm's scale factor
    net.params["bn1"][1].data[...] = np.abs(net.params["bn1"][1].data) + 0.5
    return net


def pixels(seed=1):
    return (np.random.default_rng(seed).integers(0, 256, (3, 3, 8, 8)) * 0.00390625).astype(np.float32)


@pytest.mark.parametrize("shape,scale,axis", [((5, 3), None, 0), ((4, 2, 3, 3), [0.5, 0.25, 2.0, 1.0], 0),
                                              ((7, 9), np.linspace(0.1, 0.9, 9), 1), ((13,), [0.75], 0)])
def test_signs_round_trip(shape, scale, axis):
    w = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    w.reshape(-1)[0] = 0.0                                # sign(0) = +1
    proto = signs_to_blob_proto(w >= 0, scale, axis)
    assert not proto.data and len(proto.packed_signs) == (w.size + 7) // 8
    expected = np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    if scale is not None:
        view = [1] * w.ndim
        view[axis] = -1
        expected = expected * np.asarray(scale, np.float32).reshape(view)
    np.testing.assert_array_equal(blob_proto_to_array(caffe_pb2.BlobProto.FromString(proto.SerializeToString())),
                                  expected)


def test_packed_blob_errors_quote_the_sizes():
    proto = signs_to_blob_proto(np.ones((4, 4), bool))
    proto.packed_signs = proto.packed_signs[:1]
    with pytest.raises(ValueError, match=r"packed_signs holds 1 bytes for shape \(4, 4\); expected 2"):
        blob_proto_to_array(proto)
    proto = signs_to_blob_proto(np.ones((4, 4), bool), [1.0, 2.0, 3.0], 1)
    with pytest.raises(ValueError, match=r"shape \(4, 4\) has 3 packed_scale values along axis 1"):
        blob_proto_to_array(proto)
    with pytest.raises(ValueError, match=r"holds packed signs, no diff"):
        blob_proto_to_array(signs_to_blob_proto(np.ones(3, bool)), want_diff=True)


@pytest.mark.parametrize("scale", ["NONE", "MEAN_ABS"])
def test_packed_caffemodel_is_32x_smaller_and_loads_to_the_same_outputs(tmp_path, scale):
    net = make_net(scale)
    floats, packed = tmp_path / "float.caffemodel", tmp_path / "packed.caffemodel"
    net.save(floats)
    net.save(packed, packed=True)
    expected = net.forward(data=pixels())["fc2"].copy()

    saved = {layer.name: layer for layer in read_weights(str(packed)).layer}
    for name in ("conv1", "fc2"):
        weights = saved[name].blobs[0]
        count = int(np.prod(weights.shape.dim))
        assert not weights.data and len(weights.packed_signs) * 32 == 4 * count      # the signs: 32x
        scaled = name == "conv1" or scale == "MEAN_ABS"   # conv1 always has XNOR-Net's scale
        assert len(weights.packed_scale) == (net.params[name][0].shape[0] if scaled else 0)
        assert saved[name].blobs[1].data                  # biases stay float
    assert saved["bn1"].blobs[0].data                     # so do other layers' parameters
    binary_floats = 4 * sum(net.params[n][0].data.size for n in ("conv1", "fc2"))
    assert os.path.getsize(floats) - os.path.getsize(packed) > binary_floats * (1 - 1 / 30)

    for engine in ("PACKED", "FLOAT"):
        text = (NET % scale).replace("binary_param {", f"binary_param {{ engine: {engine}")
        loaded = Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase=TEST)
        loaded.copy_from(str(packed))
        np.testing.assert_array_equal(loaded.forward(data=pixels())["fc2"], expected)


def test_convert_binary_cli(tmp_path):
    net = make_net()
    model = tmp_path / "deploy.prototxt"
    model.write_text(NET % "MEAN_ABS")
    weights, out = tmp_path / "w.caffemodel", tmp_path / "w_packed.caffemodel"
    net.save(weights)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cli = [sys.executable, "-m", "pycaffe_lite.cli", "convert", str(weights), str(out), "--binary"]
    done = subprocess.run(cli + ["--model", str(model)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "fc2: 786432 bytes as float32 -> 26112 bytes packed (30.1x)" in done.stdout
    loaded = Net(str(model), phase=TEST)
    loaded.copy_from(str(out))
    np.testing.assert_array_equal(loaded.forward(data=pixels())["fc2"], net.forward(data=pixels())["fc2"])
    refused = subprocess.run(cli, capture_output=True, text=True, env=env, check=False)
    assert refused.returncode != 0 and "convert --binary needs the net: --model deploy.prototxt" in refused.stderr
