"""NetSpec (caffe.layers as L, caffe.params as P) writes prototxt as pycaffe does, and coord_map's crop."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P
from pycaffe_lite.coord_map import coord_map_from_to, crop
from pycaffe_lite.proto import caffe_pb2


def lenet(batch_size):
    """pycaffe's examples/01-learning-lenet.ipynb net, with Input layers instead of LMDBs."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch_size, 1, 28, 28]))
    n.label = L.Input(shape=dict(dim=[batch_size]))
    n.pool1 = L.Pooling(n.data, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=50, weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


HANDWRITTEN = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 1 dim: 28 dim: 28 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 50 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_net_spec_writes_the_handwritten_prototxt():
    proto = lenet(4)
    assert proto == text_format.Parse(HANDWRITTEN, caffe_pb2.NetParameter())


def test_net_spec_text_parses_back_to_the_same_net(tmp_path):
    proto = lenet(4)
    path = tmp_path / "lenet.prototxt"
    path.write_text(str(proto))
    assert text_format.Parse(path.read_text(), caffe_pb2.NetParameter()) == proto
    net = caffe.Net(str(path), caffe.TRAIN)
    same = caffe.Net(proto, caffe.TRAIN)
    assert net.layer_names == same.layer_names == ["data", "label", "pool1", "fc1", "relu1", "score", "loss"]
    assert {k: v.shape for k, v in net.blobs.items()} == {k: v.shape for k, v in same.blobs.items()}
    assert net.blobs["fc1"].shape == (4, 50) and net.params["fc1"][0].shape == (50, 196)
    assert net.layers[3].layer_param.param[1].lr_mult == 2


def test_automatic_names_ntop_and_top_to_proto():
    data = L.Input(shape=dict(dim=[2, 3]))
    a, b = L.Slice(data, slice_param=dict(axis=1, slice_point=[1]), ntop=2)
    out = L.Eltwise(L.InnerProduct(a, num_output=2), L.InnerProduct(b, num_output=2))
    proto = out.to_proto()
    assert [layer.name for layer in proto.layer] == ["Input1", "Slice1", "InnerProduct1", "InnerProduct2",
                                                     "Eltwise1"]
    assert list(proto.layer[1].top) == ["Slice1", "Slice2"]
    assert list(proto.layer[4].bottom) == ["InnerProduct1", "InnerProduct2"]
    assert list(proto.layer[1].slice_param.slice_point) == [1]      # repeated field from a list
    assert caffe.to_proto(out) == proto
    net = caffe.Net(proto, caffe.TEST)
    assert net.blobs["Eltwise1"].shape == (2, 2)


def test_named_params_in_place_silence_and_generic_fields():
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=[dict(dim=[2, 4])], data_filler=dict(type="constant", value=1))
    n.ip = L.InnerProduct(n.data, num_output=3, bias_term=False, loss_weight=0.5,
                          include=dict(phase=caffe.TRAIN), param=dict(name="shared", lr_mult=0.5),
                          propagate_down=[False])
    n.relu = L.ReLU(n.ip, in_place=True, relu_param=dict(negative_slope=0.1))
    n.silence = L.Silence(n.ip, ntop=0)
    proto = n.to_proto()
    ip = proto.layer[1]
    assert list(ip.loss_weight) == [0.5] and ip.include[0].phase == caffe.TRAIN
    assert ip.param[0].name == "shared" and ip.param[0].lr_mult == 0.5
    assert list(ip.propagate_down) == [False] and ip.inner_product_param.bias_term is False
    relu = proto.layer[2]
    assert list(relu.bottom) == list(relu.top) == ["ip"] and relu.relu_param.negative_slope == pytest.approx(0.1)
    assert proto.layer[3].name == "silence" and not proto.layer[3].top
    assert proto.layer[0].dummy_data_param.shape[0].dim == [2, 4]
    # a filler given as a message is copied in
    x = L.InnerProduct(n.data, num_output=1, weight_filler=caffe_pb2.FillerParameter(type="gaussian", std=2))
    assert x.to_proto().layer[-1].inner_product_param.weight_filler.std == 2


def test_bad_inputs_are_refused():
    # pycaffe's wording, which BVLC's test_net_spec.py checks: the type as Python prints it
    with pytest.raises(TypeError, match=r"^InnerProduct input 0 is not a Top \(type is <class 'str'>\)$"):
        L.InnerProduct("data", num_output=2)
    n = caffe.NetSpec()
    with pytest.raises(AttributeError, match="no top named 'missing'"):
        n.missing  # noqa: B018  (the attribute lookup is what raises)
    with pytest.raises(AttributeError):
        L.InnerProduct(L.Input(shape=dict(dim=[1, 2])), no_such_field=1).to_proto()


def test_deconvolution_keywords_go_to_convolution_param():
    x = L.Deconvolution(L.Input(shape=dict(dim=[1, 2, 4, 4])), num_output=3, kernel_size=4, stride=2)
    p = x.to_proto().layer[-1].convolution_param
    assert (p.num_output, list(p.kernel_size), list(p.stride)) == (3, [4], [2])


def fcn32s():
    """FCN-32s (VGG16 body): the net whose crop offset is the well-known 19."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    bottom, pad = n.data, 100
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):    # VGG16's blocks (narrow: widths 4)
        for i in range(1, convs + 1):
            bottom = L.Convolution(bottom, kernel_size=3, pad=pad, num_output=4)
            n[f"conv{block}_{i}"] = bottom
            pad = 1
            n[f"relu{block}_{i}"] = bottom = L.ReLU(bottom, in_place=True)
        n[f"pool{block}"] = bottom = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc6 = L.Convolution(bottom, kernel_size=7, num_output=8)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = L.Convolution(n.relu6, kernel_size=1, num_output=8)
    n.score_fr = L.Convolution(n.fc7, kernel_size=1, num_output=21)
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(num_output=21, kernel_size=64, stride=32,
                                                                    bias_term=False))
    n.score = crop(n.upscore, n.data)
    return n


def test_coord_map_gives_fcn32s_its_crop_offset_of_19():
    n = fcn32s()
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["upscore", "data"]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [19]
    ax, a, b = coord_map_from_to(n.upscore, n.data)
    assert ax == 1 and np.all(a == 1) and np.all(b == -19)


def test_coord_map_through_pooling_and_crop_refusals():
    data = L.Input(shape=dict(dim=[1, 1, 16, 16]))
    conv = L.Convolution(data, kernel_size=3, pad=0, num_output=1)     # shrinks by 1 on each side
    ax, a, b = coord_map_from_to(conv, data)
    assert ax == 1 and a == 1 and b == 1          # conv's pixel x sits over data's x + 1
    cropped = crop(data, conv).to_proto().layer[-1]
    assert cropped.crop_param.axis == 2 and list(cropped.crop_param.offset) == [1]
    with pytest.raises(ValueError, match="negative offset"):
        crop(conv, data)
    pooled = L.Pooling(conv, kernel_size=2, stride=2)
    with pytest.raises(ValueError, match="scale mismatch"):
        crop(pooled, data)
    legacy = L.Convolution(data, kernel_h=3, kernel_w=3, num_output=1)
    with pytest.raises(ValueError, match="legacy _h/_w"):
        crop(legacy, data)


def test_fcn32s_builds_and_the_crop_matches_the_input():
    net = caffe.Net(fcn32s().to_proto(), caffe.TEST)
    assert net.blobs["score"].shape == (1, 21, 64, 64)
    assert net.blobs["upscore"].shape[2] - 19 >= 64


def test_update_and_delete_tops_by_name():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.r = L.ReLU(n.data)
    n.update("r", dict(negative_slope=0.1))          # pycaffe's NetSpec.update(name, params)
    assert n.to_proto().layer[-1].relu_param.negative_slope == pytest.approx(0.1)
    del n["r"]
    assert "r" not in n and n.keys() == ["data"]
