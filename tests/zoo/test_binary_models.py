"""The shipped binary models' deploy nets run on packed bits in TEST (engine DEFAULT) and give the float
path's scores exactly, from their random initial weights, on 8-bit pixels scaled by 1/256."""
import numpy as np
import pytest

from pycaffe_lite.kernels import HAVE_NUMBA
from pycaffe_lite.net import TEST, Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.files import read_net_param
from pycaffe_lite.zoo.manifest import default_root


@pytest.mark.skipif(not HAVE_NUMBA, reason="DEFAULT runs packed only with the Numba kernels")
@pytest.mark.parametrize("name,output", [("binary_mlp", "ip3"), ("binary_lenet", "ip2")])
def test_deploy_runs_packed_equal_to_float(name, output):
    param = read_net_param(str(default_root() / name / "deploy.prototxt"))
    packed = Net(param, phase=TEST)
    assert all(layer.runs_packed(np.zeros(1, np.float32)) for layer in packed.layers if hasattr(layer, "runs_packed"))
    float_param = caffe_pb2.NetParameter()
    float_param.CopyFrom(param)
    for layer in float_param.layer:
        if layer.type.startswith("Binary"):
            layer.binary_param.engine = caffe_pb2.BinaryParameter.FLOAT
    floats = Net(float_param, phase=TEST)
    rng = np.random.default_rng(0)
    for name_, blobs in packed.params.items():
        for mine, theirs in zip(blobs, floats.params[name_]):
            mine.data[...] = rng.uniform(-1, 1, mine.shape)
            theirs.data[...] = mine.data
    pixels = (rng.integers(0, 256, (64, 1, 28, 28)) * 0.00390625).astype(np.float32)
    for net in (packed, floats):
        for bn in (n for n in net.params if n.endswith("_bn")):
            net.params[bn][1].data[...] = np.abs(net.params[bn][1].data) + 0.5     # positive variances
            net.params[bn][2].data[...] = 1
    np.testing.assert_array_equal(packed.forward(data=pixels)[output], floats.forward(data=pixels)[output])
