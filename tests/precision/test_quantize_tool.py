"""`pycaffe-lite quantize`, Ristretto's tool, on BVLC's LeNet and its trained weights, scored
on the first MNIST test images (few batches, to stay quick)."""
import os

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.cli import main
from pycaffe_lite.data.convert import mnist_datum
from pycaffe_lite.data.lmdb_io import LMDBWriter
from pycaffe_lite.net import TEST, Net
from pycaffe_lite.precision.ristretto import Quantization
from pycaffe_lite.proto import caffe_pb2

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures")
TRAIN_TEST = os.path.join(FIXTURES, "caffe", "examples", "mnist", "lenet_train_test.prototxt")
WEIGHTS = os.path.join(FIXTURES, "weights", "lenet_iter_5000.caffemodel")
IMAGES = os.path.join(FIXTURES, "weights", "mnist_t10k_first1000.npz")
pytestmark = pytest.mark.skipif(not os.path.exists(WEIGHTS), reason="../shared/fixtures not present")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """BVLC's lenet_train_test.prototxt reading an LMDB of the first 200 MNIST test images."""
    root = tmp_path_factory.mktemp("quantize")
    data = np.load(IMAGES)
    db = str(root / "mnist_lmdb")
    with LMDBWriter(db) as writer:
        for i in range(200):
            writer.put(b"%08d" % i, mnist_datum(data["images"][i], 28, 28, data["labels"][i]).SerializeToString())
    with open(TRAIN_TEST) as handle:
        text = handle.read()
    text = text.replace("examples/mnist/mnist_train_lmdb", db).replace("examples/mnist/mnist_test_lmdb", db)
    model = root / "lenet_train_test.prototxt"
    model.write_text(text)
    return str(model), root


def _accuracy(model, iterations):
    net = Net(model, WEIGHTS, TEST)
    accuracy = np.mean([float(net.forward()["accuracy"]) for _ in range(iterations)])
    net.close()
    return accuracy


def test_dynamic_fixed_point_finds_widths_writes_a_runnable_prototxt_and_prints_the_table(lenet, capsys):
    model, root = lenet
    out = root / "lenet_quantized.prototxt"
    code = main(["quantize", "--model", model, "--weights", WEIGHTS, "--model_quantized", str(out),
                 "--trimming_mode", "dynamic_fixed_point", "--error_margin", "1", "--iterations", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Baseline 32bit float:" in printed and "Dynamic fixed point CONV weights:" in printed
    assert "16bit: \t" in printed and "Please fine-tune." in printed
    quantized = text_format.Parse(out.read_text(), caffe_pb2.NetParameter())
    assert not quantized.HasField("state")
    types = {layer.name: layer.type for layer in quantized.layer}
    assert types["conv1"] == types["conv2"] == "ConvolutionRistretto"
    assert types["ip1"] == types["ip2"] == "FcRistretto"
    assert types["pool1"] == "Pooling" and types["loss"] == "SoftmaxWithLoss"
    q = {layer.name: layer.quantization_param for layer in quantized.layer if layer.type.endswith("Ristretto")}
    # Ristretto's integer lengths from the float net's ranges: the data is in [0, 1) so il_in(conv1) = 0
    assert q["conv1"].fl_layer_in == q["conv1"].bw_layer_in
    for layer_q in q.values():
        assert layer_q.bw_layer_in == layer_q.bw_layer_out <= 16
        assert layer_q.bw_params in (1, 2, 4, 8, 16, 32)
    # the chosen widths keep the margin on the scored batches, and the summary says so
    baseline, accuracy = _accuracy(model, 2), _accuracy(str(out), 2)
    assert f"Baseline 32bit float: {baseline:g}" in printed
    assert f"Accuracy: {accuracy:g}" in printed
    assert accuracy >= baseline - 0.03     # each part kept 1 %; together they may lose a little more


def test_the_stopping_rule_and_the_choice_of_widths(lenet):
    model, root = lenet
    tool = Quantization(model, WEIGHTS, str(root / "unused.prototxt"), 1, "dynamic_fixed_point", 1)
    tool.baseline = 0.98
    assert tool.chosen([(16, 0.98), (8, 0.975), (4, 0.90)]) == 8
    assert tool.chosen([(16, 0.5)]) == 32
    assert tool.chosen([(16, 0.98), (8, 0.96), (4, 0.98)]) == 16       # a later pass does not count
    seen = []

    def edit(param, width):
        seen.append(width)
    tool.score = lambda param, iterations: {16: 0.98, 8: 0.95}.get(seen[-1], 0.98)
    assert tool.trials((16, 8, 4, 2, 1), edit) == [(16, 0.98), (8, 0.95)]   # stops after the first failure


def test_minifloat_and_power_of_2_modes_write_their_precision(lenet):
    model, root = lenet
    for mode, precision in (("minifloat", caffe_pb2.QuantizationParameter.MINIFLOAT),
                            ("integer_power_of_2_weights", caffe_pb2.QuantizationParameter.INTEGER_POWER_OF_2_WEIGHTS)):
        out = root / f"{mode}.prototxt"
        summary = Quantization(model, WEIGHTS, str(out), 2, mode, 1).quantize_net()
        assert summary[-1] == "Please fine-tune."
        layers = text_format.Parse(out.read_text(), caffe_pb2.NetParameter()).layer
        quantized = [layer for layer in layers if layer.HasField("quantization_param")]
        assert [layer.name for layer in quantized] == ["conv1", "conv2", "ip1", "ip2"]
        assert all(layer.quantization_param.precision == precision for layer in quantized)
        Net(str(out), WEIGHTS, TEST).forward()        # runs


def test_errors_name_the_problem(lenet, tmp_path):
    model, _ = lenet
    with pytest.raises(ValueError, match="Unknown trimming mode: 'eight_bit'"):
        Quantization(model, WEIGHTS, str(tmp_path / "q.prototxt"), 2, "eight_bit")
    with pytest.raises(ValueError, match="Missing write permissions"):
        Quantization(model, WEIGHTS, "/nonexistent-dir/q.prototxt", 2).quantize_net()
    assert main(["quantize", "--model", model, "--weights", WEIGHTS, "--trimming_mode", "minifloat"]) == 2
