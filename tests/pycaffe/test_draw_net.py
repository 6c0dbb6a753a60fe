"""caffe.draw and the draw_net tool: LeNet as DOT, PNG and SVG (when Graphviz is installed)."""
import shutil
import subprocess
import sys

import pytest

from pycaffe_lite import draw
from pycaffe_lite.cli import main as cli_main
from pycaffe_lite.proto.files import read_net_param
from pycaffe_lite.proto import caffe_pb2
from conftest import REPO, fixture_path

LENET = """
name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "data" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" include { phase: TRAIN } }
"""


@pytest.fixture
def lenet_file(tmp_path):
    path = tmp_path / "lenet.prototxt"
    path.write_text(LENET)
    return str(path)


def test_dot_source_has_pycaffes_nodes_labels_and_colours(lenet_file):
    net = read_net_param(lenet_file)
    source = draw.get_dot_source(net, "LR")
    assert source.startswith('digraph "LeNet" {') and "rankdir=LR;" in source
    assert r'"conv1\n(Convolution)\nkernel size: 5\nstride: 1\npad: 0"' in source
    assert r'"pool1\n(Pooling MAX)\nkernel size: 2\nstride: 2\npad: 0"' in source
    assert '"conv1_Convolution" -> "conv1_blob" [label="20"]' in source
    assert '"mnist_Data" -> "data_blob" [label="Batch 64"]' in source
    assert 'fillcolor="#FF5050"' in source and 'fillcolor="#90EE90"' in source   # conv, in-place ReLU
    assert "lr mult" not in source
    assert "lr mult: 1.0, 2.0" in draw.get_dot_source(net, "TB", display_lrm=True)
    test_only = draw.get_dot_source(net, "LR", phase=caffe_pb2.TEST)
    assert "mnist_Data" not in test_only and "loss_SoftmaxWithLoss" not in test_only
    assert "data_Input" in test_only
    assert draw.get_layer_lr_mult(net.layer[2]) == (1.0, 2.0)
    # a blob is drawn as a top (plain) after its last reader, as pycaffe redraws each top
    deploy = read_net_param(lenet_file)
    del deploy.layer[-2:]                          # ends on the in-place ReLU
    nodes, _ = draw._graph(deploy, "LR")
    assert "shape" not in nodes["ip1_blob"] and nodes["pool1_blob"]["shape"] == "octagon"


def test_dot_output_needs_no_graphviz(lenet_file, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "lenet.dot"
    assert cli_main(["draw_net", lenet_file, str(out)]) == 0
    assert out.read_text().startswith("digraph")


def test_missing_graphviz_says_how_to_install_it(lenet_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli_main(["draw_net", lenet_file, str(tmp_path / "lenet.png")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install graphviz" in err
    assert not (tmp_path / "lenet.png").exists()
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        draw.draw_net(read_net_param(lenet_file), "LR", ext="png")


def test_pydot_graph(lenet_file):
    pytest.importorskip("pydot")
    graph = draw.get_pydot_graph(read_net_param(lenet_file), "BT")
    names = {node.get_name().strip('"') for node in graph.get_nodes()}
    assert {"conv1_Convolution", "conv1_blob", "relu1_ReLU"} <= names
    assert len(graph.get_edges()) == 16   # one per bottom and per top


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_draw_net_writes_png_and_svg_of_lenet(tmp_path):
    lenet = fixture_path("caffe", "examples", "mnist", "lenet_train_test.prototxt")
    png = tmp_path / "lenet.png"
    assert cli_main(["draw_net", str(lenet), str(png), "--rankdir", "TB", "--phase", "TRAIN"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    svg = tmp_path / "lenet.svg"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "draw_net.py"), str(lenet), str(svg),
                             "--display_lrm"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = svg.read_text()
    assert "<svg" in text and "conv1" in text and "ip2" in text
