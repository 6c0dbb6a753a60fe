"""`pycaffe-lite summarize`: parameters, multiply-adds, receptive fields and memory, checked
against figures worked out here from the prototxt alone."""
import json
import math
from pathlib import Path

from google.protobuf import text_format

from pycaffe_lite.analysis import format_summary, summarize
from pycaffe_lite.cli import main as cli_main
from pycaffe_lite.proto import caffe_pb2
from conftest import fixture_path


# ---------------------------------------------------------------------------
# An independent reference: shapes, parameters and multiply-adds from the prototxt
# (square kernels and Caffe's rounding), for the layer types of CaffeNet and GoogLeNet.
# ---------------------------------------------------------------------------
def reference_figures(path):
    net = text_format.Parse(Path(path).read_text(), caffe_pb2.NetParameter())
    shapes, figures = {}, {}
    for layer in net.layer:
        kind, params, madds = layer.type, 0, 0
        if kind == "Input":
            out = tuple(layer.input_param.shape[0].dim)
            out = (1,) + out[1:]
        else:
            n, c, *hw = shapes[layer.bottom[0]]
        if kind == "Convolution":
            p = layer.convolution_param
            k, s, pad = p.kernel_size[0], (p.stride or [1])[0], (p.pad or [0])[0]
            ho, wo = ((x + 2 * pad - k) // s + 1 for x in hw)
            out = (n, p.num_output, ho, wo)
            params = p.num_output * (c // p.group) * k * k + (p.num_output if p.bias_term else 0)
            madds = p.num_output * ho * wo * (c // p.group) * k * k
        elif kind == "Pooling":
            p = layer.pooling_param
            k, s, pad = p.kernel_size, p.stride, p.pad
            size = []
            for x in hw:
                o = math.ceil((x + 2 * pad - k) / s) + 1
                if pad and (o - 1) * s >= x + pad:
                    o -= 1
                size.append(o)
            out = (n, c, *size)
        elif kind == "InnerProduct":
            K = c * math.prod(hw)
            out = (n, layer.inner_product_param.num_output)
            params = out[1] * K + out[1]
            madds = out[1] * K
        elif kind == "Concat":
            parts = [shapes[b] for b in layer.bottom]
            out = (n, sum(p[1] for p in parts), *hw)
        elif kind != "Input":
            out = shapes[layer.bottom[0]]                 # ReLU, LRN, Dropout, Softmax
        for top in layer.top:
            shapes[top] = out
        figures[layer.name] = (out, params, madds)
    return figures


def check_against_reference(path):
    summary = summarize(str(path), batch=1)
    reference = reference_figures(path)
    assert [row.name for row in summary.layers] == list(reference)
    for row in summary.layers:
        shape, params, madds = reference[row.name]
        assert row.top_shapes[0] == shape, row.name
        assert row.params == params, row.name
        assert row.madds_per_image == madds, row.name
    assert summary.total_params == sum(p for _, p, _ in reference.values())
    assert summary.total_madds_per_image == sum(m for _, _, m in reference.values())
    return summary


def test_caffenet_summary():
    summary = check_against_reference(fixture_path("caffe", "models", "bvlc_reference_caffenet", "deploy.prototxt"))
    assert summary.total_params == 60_965_224                 # "61M parameters"
    assert 0.70e9 < summary.total_madds_per_image < 0.75e9     # about 0.7 G multiply-adds per image
    conv1, pool5 = summary.layer("conv1"), summary.layer("pool5")
    assert conv1.receptive_field == (11, 11) and conv1.stride == (4, 4)
    assert summary.layer("conv2").receptive_field == (51, 51)
    assert pool5.receptive_field == (195, 195) and pool5.stride == (32, 32)
    assert summary.layer("fc6").receptive_field == "global"
    assert summary.layer("conv1").activation_bytes == 96 * 55 * 55 * 4
    assert summary.layer("relu1").activation_bytes == 0        # in place
    text = format_summary(summary)
    assert "60,965,224" in text and "195x195" in text


def test_googlenet_summary():
    summary = check_against_reference(fixture_path("caffe", "models", "bvlc_googlenet", "deploy.prototxt"))
    assert 6.9e6 < summary.total_params < 7.1e6                # "7M parameters"
    assert 1.5e9 < summary.total_madds_per_image < 1.65e9     # about 1.6 G multiply-adds
    # the concat takes its widest branch: 3a's 5x5 path over pool2 (27, stride 8)
    assert summary.layer("inception_3a/5x5").receptive_field == (59, 59)
    assert summary.layer("inception_3a/output").receptive_field == (59, 59)
    assert summary.layer("inception_3a/output").stride == (8, 8)


STACK = """
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c} dim: 16 dim: 16 }} }} }}
{convs}
"""
CONV = ('layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        'convolution_param {{ num_output: {c} kernel_size: {k} pad: {pad} bias_term: false }} }}')


def stack(tmp_path, kernels, c=8):
    convs, bottom = [], "data"
    for i, k in enumerate(kernels):
        name = f"conv{i + 1}"
        convs.append(CONV.format(name=name, bottom=bottom, c=c, k=k, pad=k // 2))
        bottom = name
    path = tmp_path / f"stack{len(kernels)}x{kernels[0]}.prototxt"
    path.write_text(STACK.format(c=c, convs="\n".join(convs)))
    return summarize(str(path))


def test_stacked_3x3_see_5x5_and_7x7_with_fewer_weights_than_one_7x7(tmp_path):
    c = 8
    three = stack(tmp_path, [3, 3, 3], c)
    assert [row.receptive_field for row in three.layers[1:]] == [(3, 3), (5, 5), (7, 7)]
    assert all(row.stride == (1, 1) for row in three.layers)
    one = stack(tmp_path, [7], c)
    assert one.layers[-1].receptive_field == (7, 7)
    assert one.total_params == 49 * c * c and three.total_params == 27 * c * c
    assert one.total_madds_per_image == 49 * c * c * 16 * 16
    assert three.total_madds_per_image == 27 * c * c * 16 * 16
    assert three.batch == 2 and three.total_madds == 2 * three.total_madds_per_image


POOLS = """
name: "pools"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 17 dim: 17 } } }
layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "pool2" top: "pool2" }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_summary_of_pooling_and_inner_product(tmp_path):
    path = tmp_path / "pools.prototxt"
    path.write_text(POOLS)
    summary = summarize(str(path))
    pool1, pool2, relu, fc = (summary.layer(n) for n in ("pool1", "pool2", "relu", "fc"))
    assert pool1.top_shapes == [(4, 3, 8, 8)] and pool2.top_shapes == [(4, 3, 4, 4)]
    assert pool1.receptive_field == (3, 3) and pool1.stride == (2, 2)
    assert pool2.receptive_field == (5, 5) and pool2.stride == (4, 4)
    assert relu.receptive_field == (5, 5) and relu.activation_bytes == 0
    assert fc.receptive_field == "global" and fc.params == 10 * 48 + 10
    assert fc.madds_per_image == 10 * 48
    assert summary.total_activation_bytes == 4 * 4 * (3 * 17 * 17 + 3 * 64 + 3 * 16 + 10 + 10)
    bigger = summarize(str(path), batch=16)
    assert bigger.batch == 16 and bigger.layer("fc").top_shapes == [(16, 10)]
    assert bigger.total_activation_bytes == 4 * summary.total_activation_bytes


def test_summarize_command(tmp_path, capsys):
    path = tmp_path / "pools.prototxt"
    path.write_text(POOLS)
    assert cli_main(["summarize", "--model", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Total parameters:      490" in text and "per image" in text and "pool2" in text
    assert cli_main(["summarize", "--model", str(path), "--batch", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch"] == 2 and report["total_params"] == 490
    assert report["layers"][1]["receptive_field"] == [3, 3]
    assert cli_main(["summarize", "--model", str(tmp_path / "missing.prototxt")]) == 2
    assert f"{tmp_path / 'missing.prototxt'} does not exist" in capsys.readouterr().err   # MissingFileError


def test_summarize_says_why_a_net_with_data_layers_does_not_build(tmp_path, capsys):
    path = tmp_path / "train.prototxt"
    path.write_text(POOLS.replace(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 17 dim: 17 } } }',
        'layer { name: "mnist" type: "Data" top: "data" top: "label" '
        'data_param { source: "no_such_lmdb" batch_size: 4 backend: LMDB } }'))
    assert cli_main(["summarize", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no_such_lmdb" in err and "deploy prototxt" in err
