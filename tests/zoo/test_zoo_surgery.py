"""Weight surgery on BVLC-trained weights: copy / rename / freeze / fc->conv / input channels."""
import importlib
import json

import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.zoo import surgery
from pycaffe_lite.zoo.convert import weights_to_arrays
from pycaffe_lite.proto.text import parse_text, to_text

from conftest import REPO, fixture_path


def _Net(*args, **kwargs):
    importlib.import_module("pycaffe_lite.layers")
    from pycaffe_lite.net import Net
    return Net(*args, **kwargs)


def _lenet_deploy(classifier="ip2", outputs=10, shape=(1, 1, 28, 28)):
    param = parse_text(fixture_path("caffe", "examples", "mnist", "lenet.prototxt").read_text(),
                       caffe_pb2.NetParameter())
    param.layer[0].input_param.shape[0].ClearField("dim")
    param.layer[0].input_param.shape[0].dim.extend(shape)
    for layer in param.layer:
        if layer.name == "ip2":
            layer.name = classifier
            layer.top[0] = classifier
            layer.inner_product_param.num_output = outputs
            layer.inner_product_param.weight_filler.type = "xavier"
        if layer.name == "prob":
            layer.bottom[0] = classifier
    return param


@pytest.fixture(scope="module")
def lenet_weights():
    return str(fixture_path("weights", "lenet_iter_5000.caffemodel"))


@pytest.fixture(scope="module")
def mnist():
    with np.load(fixture_path("weights", "mnist_t10k_first1000.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _images(mnist, n):
    key = next(k for k in mnist if mnist[k].dtype == np.uint8 and mnist[k].ndim >= 3)
    images = mnist[key][:n].astype(np.float32) * 0.00390625
    return images.reshape(n, 1, 28, 28)


def test_transplant_copies_renames_and_ignores(lenet_weights):
    net = _Net(_lenet_deploy("ip2_new", 5))
    before = net.params["ip2_new"][0].data.copy()
    report = surgery.transplant(net, [lenet_weights])
    assert list(report.copied) == ["conv1", "conv2", "ip1"]
    assert report.reinitialised == {"ip2_new": "renamed from 'ip2'"}
    assert list(report.ignored) == ["ip2"]
    source = weights_to_arrays(lenet_weights)
    assert np.array_equal(net.params["conv2"][0].data, source["conv2"][0])
    assert np.array_equal(net.params["ip2_new"][0].data, before)       # left as the filler made it
    text = str(report)
    assert "re-initialised (1)" in text and "renamed from 'ip2'" in text


def test_transplant_from_two_caffemodels_later_wins(lenet_weights):
    cifar = str(fixture_path("weights", "cifar10_full_iter_70000.caffemodel"))
    # LeNet with a 3-channel input: CIFAR's conv1 (32x3x5x5) cannot fill LeNet's (20x3x5x5).
    net = _Net(_lenet_deploy(shape=(1, 3, 28, 28)))
    report = surgery.transplant(net, [lenet_weights, cifar])
    assert report.copied["ip2"] == (lenet_weights, "ip2")
    assert "shape mismatch" in report.reinitialised["conv1"]
    assert {"conv3", "ip1"} & set(report.ignored) == {"conv3"}     # cifar's ip1 mismatches LeNet's
    with pytest.raises(ValueError, match="Rename the layer"):
        surgery.transplant(_Net(_lenet_deploy(shape=(1, 3, 28, 28))), [lenet_weights], strict=True)
    # --map: copy a layer under another name.
    net = _Net(_lenet_deploy("ip2_new", 10))
    report = surgery.transplant(net, [lenet_weights], rename={"ip2_new": "ip2"})
    assert report.copied["ip2_new"] == (lenet_weights, "ip2") and not report.reinitialised


def test_freeze_and_lr_presets():
    param = parse_text((REPO / "models" / "bvlc_reference_caffenet" / "train_val.prototxt").read_text(),
                       caffe_pb2.NetParameter())
    assert surgery.freeze_below(param, "fc6") == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert surgery.frozen_layers(param) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    conv1 = next(l for l in param.layer if l.name == "conv1")
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(0, 0), (0, 0)]
    factors = surgery.apply_lr_mult(param, "top=10,mid=1,bottom=1/10", new_layers=["fc8"])
    assert factors == {"fc8": 10.0, "fc6": 1.0, "fc7": 1.0}   # conv1-3 (bottom) and conv4-5 stay frozen
    param2 = parse_text((REPO / "models" / "bvlc_reference_caffenet" / "train_val.prototxt").read_text(),
                        caffe_pb2.NetParameter())
    groups = surgery.lr_groups(param2, new_layers=["fc8"])
    assert groups == {"top": ["fc8"], "mid": ["conv4", "conv5", "fc6", "fc7"],
                      "bottom": ["conv1", "conv2", "conv3"]}
    surgery.apply_lr_mult(param2, "top=1,mid=1/10,bottom=1/100,conv1=0", new_layers=["fc8"])
    lr = {l.name: [p.lr_mult for p in l.param] for l in param2.layer if l.param}
    assert lr["fc8"] == [1, 2] and lr["conv1"] == [0, 0]
    assert lr["conv2"] == pytest.approx([0.01, 0.02]) and lr["fc6"] == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        surgery.apply_lr_mult(param2, "nope=2")
    with pytest.raises(ValueError, match="not a number or a fraction"):
        surgery.apply_lr_mult(param2, "top=ten")
    # BatchNorm: frozen statistics too; params added where the prototxt had none.
    resnet = parse_text((REPO / "models" / "resnet50" / "deploy.prototxt").read_text(), caffe_pb2.NetParameter())
    surgery.freeze(resnet, ["conv1", "bn_conv1", "scale_conv1"])
    bn = next(l for l in resnet.layer if l.name == "bn_conv1")
    assert bn.batch_norm_param.use_global_stats and len(bn.param) == 3
    assert [p.lr_mult for p in next(l for l in resnet.layer if l.name == "scale_conv1").param] == [0, 0]


def test_frozen_layers_stay_bit_identical_while_training(lenet_weights):
    solvers = pytest.importorskip("pycaffe_lite.solvers")
    train = parse_text(fixture_path("caffe", "examples", "mnist", "lenet_train_test.prototxt").read_text(),
                       caffe_pb2.NetParameter())
    net = caffe_pb2.NetParameter(name=train.name)
    net.layer.add().CopyFrom(caffe_pb2.LayerParameter(
        name="data", type="DummyData", top=["data", "label"], dummy_data_param=dict(
            shape=[dict(dim=[16, 1, 28, 28]), dict(dim=[16])],
            data_filler=[dict(type="uniform", min=0, max=1), dict(type="constant", value=3)])))
    for layer in train.layer:
        if layer.type not in ("Data", "Accuracy"):
            net.layer.add().CopyFrom(layer)
    surgery.freeze_below(net, "ip1")                        # conv1, conv2 frozen
    surgery.freeze(net, ["ip2"])
    solver_param = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, weight_decay=0.0005,
                                             lr_policy="fixed", max_iter=10, display=0,
                                             snapshot_after_train=False, random_seed=3)
    solver_param.net_param.CopyFrom(net)
    solver = solvers.SGDSolver(solver_param)
    solver.net.copy_from(lenet_weights)
    before = {name: [np.array(b.data, copy=True) for b in blobs] for name, blobs in solver.net.params.items()}
    solver.step(3)
    after = solver.net.params
    for name in ("conv1", "conv2", "ip2"):
        for a, b in zip(before[name], after[name]):
            assert a.tobytes() == np.asarray(b.data).tobytes(), name
    assert not np.array_equal(before["ip1"][0], after["ip1"][0].data)


def test_fc_to_conv_agrees_at_the_original_size_and_slides(lenet_weights, mnist):
    deploy = _lenet_deploy(shape=(2, 1, 28, 28))
    original = _Net(deploy, weights=lenet_weights, phase=caffe_pb2.TEST)
    full_param, arrays = surgery.fc_to_conv(deploy, lenet_weights, input_shape=(2, 1, 36, 36))
    assert [l.name for l in full_param.layer if l.type == "Convolution"] == ["conv1", "conv2", "ip1-conv", "ip2-conv"]
    ip1 = next(l for l in full_param.layer if l.name == "ip1-conv")
    assert list(ip1.convolution_param.kernel_size) == [4] and list(ip1.top) == ["ip1-conv"]
    assert next(l for l in full_param.layer if l.name == "relu1").bottom[0] == "ip1-conv"
    from pycaffe_lite.zoo.convert import arrays_to_weights
    weights = arrays_to_weights(arrays, model=full_param)
    images = _images(mnist, 2)
    expected = original.forward(data=images)["prob"]
    # At 28x28 the convolutional net gives the same scores, as a 1x1 map.
    same_size = caffe_pb2.NetParameter()
    same_size.CopyFrom(full_param)
    surgery._set_input_shape(same_size, (2, 1, 28, 28))
    conv_net = _Net(same_size, weights=weights, phase=caffe_pb2.TEST)
    got = conv_net.forward(data=images)["prob"]
    assert got.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0], expected, rtol=1e-5, atol=1e-6)
    # At 36x36 it slides with LeNet's stride of 4: a 3x3 map, each cell one 28x28 window.
    big = np.zeros((2, 1, 36, 36), np.float32)
    big[:, :, 4:32, 8:36] = images
    slid = _Net(full_param, weights=weights, phase=caffe_pb2.TEST).forward(data=big)["prob"]
    assert slid.shape == (2, 10, 3, 3)
    np.testing.assert_allclose(slid[:, :, 1, 2], expected, rtol=1e-5, atol=1e-6)


def test_fc_to_conv_cifar10_full_and_freeze():
    weights = str(fixture_path("weights", "cifar10_full_iter_70000.caffemodel"))
    deploy = parse_text((REPO / "models" / "cifar10_full" / "deploy.prototxt").read_text(), caffe_pb2.NetParameter())
    deploy.layer[0].input_param.shape[0].dim[0] = 3
    x = np.random.default_rng(2).normal(0, 40, (3, 3, 32, 32)).astype(np.float32)
    expected = _Net(deploy, weights=weights, phase=caffe_pb2.TEST).forward(data=x)["prob"].copy()
    full, arrays = surgery.fc_to_conv(deploy, weights)
    assert arrays["ip1-conv"][0].shape == (10, 64, 4, 4)
    from pycaffe_lite.zoo.convert import arrays_to_weights
    got = _Net(full, weights=arrays_to_weights(arrays, model=full), phase=caffe_pb2.TEST).forward(data=x)["prob"]
    np.testing.assert_allclose(got[:, :, 0, 0], expected, rtol=1e-5, atol=1e-6)
    train_val = parse_text((REPO / "models" / "cifar10_full" / "train_val.prototxt").read_text(),
                           caffe_pb2.NetParameter())
    assert surgery.freeze_below(train_val, "ip1") == ["conv1", "conv2", "conv3"]
    conv3 = next(l for l in train_val.layer if l.name == "conv3")     # had no ParamSpecs: added
    assert [(p.lr_mult, p.decay_mult) for p in conv3.param] == [(0, 0), (0, 0)]
    ip1 = next(l for l in train_val.layer if l.name == "ip1")
    assert [(p.lr_mult, p.decay_mult) for p in ip1.param] == [(1, 250), (2, 0)]


def test_fc_to_conv_caffenet_matches_caffes_net_surgery_prototxt():
    """CaffeNet to fully convolutional, as examples/net_surgery's bvlc_caffenet_full_conv.prototxt."""
    deploy = parse_text((REPO / "models" / "bvlc_reference_caffenet" / "deploy.prototxt").read_text(),
                        caffe_pb2.NetParameter())
    shapes = {"pool5": (10, 256, 6, 6), "fc6": (10, 4096), "fc7": (10, 4096)}   # CaffeNet at 227x227
    zeros = {"fc6": [np.zeros((4096, 9216), np.float32), np.zeros(4096, np.float32)],
             "fc7": [np.zeros((4096, 4096), np.float32), np.zeros(4096, np.float32)],
             "fc8": [np.zeros((1000, 4096), np.float32), np.zeros(1000, np.float32)]}
    full, arrays = surgery.fc_to_conv(deploy, zeros, input_shape=(1, 3, 451, 451), bottom_shapes=shapes)
    assert arrays["fc6-conv"][0].shape == (4096, 256, 6, 6)
    theirs = parse_text(fixture_path("caffe", "examples", "net_surgery", "bvlc_caffenet_full_conv.prototxt")
                        .read_text(), caffe_pb2.NetParameter())
    full.name = theirs.name
    assert to_text(full) == to_text(theirs)


def test_input_channels(lenet_weights, mnist):
    deploy = _lenet_deploy(shape=(2, 1, 28, 28))
    images = _images(mnist, 2)
    expected = _Net(deploy, weights=lenet_weights, phase=caffe_pb2.TEST).forward(data=images)["prob"]
    from pycaffe_lite.zoo.convert import arrays_to_weights
    for channels, mode in ((3, "mean"), (3, None), (4, "zero")):
        param, arrays = surgery.set_input_channels(deploy, lenet_weights, channels, mode=mode)
        assert param.layer[0].input_param.shape[0].dim[1] == channels
        net = _Net(param, weights=arrays_to_weights(arrays, model=param), phase=caffe_pb2.TEST)
        x = np.repeat(images, channels, axis=1) if mode != "zero" else np.concatenate(
            [images, np.random.default_rng(0).random((2, channels - 1, 28, 28), np.float32)], axis=1)
        if mode == "zero":
            x[:, 1:] = 0 * x[:, 1:] + x[:, 1:]     # the new channels are ignored: any values
        got = net.forward(data=x)["prob"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Back to one channel: the sum of the filters, exact for a repeated grey input.
    three, arrays3 = surgery.set_input_channels(deploy, lenet_weights, 3, mode="mean")
    one, arrays1 = surgery.set_input_channels(three, arrays3, 1)
    np.testing.assert_allclose(arrays1["conv1"][0], weights_to_arrays(lenet_weights)["conv1"][0], rtol=1e-5)
    with pytest.raises(ValueError, match="cannot reduce"):
        surgery.set_input_channels(three, arrays3, 2, mode="sum")


def test_surgery_cli(tmp_path, lenet_weights, capsys):
    model = tmp_path / "lenet5.prototxt"
    model.write_text(to_text(_lenet_deploy("ip2_new", 5)))
    out, out_model, report = tmp_path / "init.caffemodel", tmp_path / "frozen.prototxt", tmp_path / "r.json"
    assert main(["surgery", "--model", str(model), "--weights", lenet_weights, "--out", str(out),
                 "--freeze-below", "ip1", "--lr-mult", "top=10", "--out-model", str(out_model),
                 "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "renamed from 'ip2'" in text and "frozen (lr_mult 0): conv1, conv2" in text
    data = json.loads(report.read_text())
    assert sorted(data["copied"]) == ["conv1", "conv2", "ip1"] and data["ignored"] == {"ip2": lenet_weights}
    assert data["lr_mult"] == {"ip2_new": 10.0}
    written = weights_to_arrays(out)
    assert written["ip2_new"][0].shape == (5, 500)
    edited = parse_text(out_model.read_text(), caffe_pb2.NetParameter())
    assert surgery.frozen_layers(edited) == ["conv1", "conv2"]
    # fc -> conv from the command line.
    full = tmp_path / "full.prototxt"
    assert main(["surgery", "--model", str(fixture_path("caffe", "examples", "mnist", "lenet.prototxt")),
                 "--weights", lenet_weights, "--fc-to-conv", "--input-shape", "1,1,36,36",
                 "--out-model", str(full), "--out", str(tmp_path / "full.caffemodel")]) == 0
    assert "ip1-conv, ip2-conv" in capsys.readouterr().out
    net = _Net(str(full), weights=str(tmp_path / "full.caffemodel"), phase=caffe_pb2.TEST)
    assert net.blobs["prob"].shape == (1, 10, 3, 3)


# ---------------------------------------------------------------------------- review fixes
def _siamese(tmp_path):
    """BVLC's mnist_siamese_train_test with an Input instead of its LMDBs (params shared by name)."""
    train = parse_text(fixture_path("caffe", "examples", "siamese", "mnist_siamese_train_test.prototxt")
                       .read_text(), caffe_pb2.NetParameter())
    net = caffe_pb2.NetParameter(name=train.name)
    net.layer.add().CopyFrom(caffe_pb2.LayerParameter(
        name="pair_data", type="Input", top=["pair_data", "sim"],
        input_param=dict(shape=[dict(dim=[4, 2, 28, 28]), dict(dim=[4])])))
    for layer in train.layer:
        if layer.type != "Data":
            net.layer.add().CopyFrom(layer)
    path = tmp_path / "siamese.prototxt"
    path.write_text(to_text(net))
    return path


def test_freeze_and_lr_mult_follow_params_shared_by_name(tmp_path, capsys):
    model = _siamese(tmp_path)
    out = tmp_path / "frozen.prototxt"
    assert main(["surgery", "--model", str(model), "--freeze", "conv1", "--lr-mult", "ip1=1/2",
                 "--out-model", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frozen (lr_mult 0): conv1 (and conv1_p, which shares its params)" in text
    assert "ip1 (and ip1_p, which shares its params) x0.5" in text
    edited = parse_text(out.read_text(), caffe_pb2.NetParameter())
    lr = {l.name: [(p.lr_mult, p.decay_mult) for p in l.param] for l in edited.layer if l.param}
    assert lr["conv1"] == lr["conv1_p"] == [(0, 0), (0, 0)]
    assert [p for p, _ in lr["ip1"]] == [p for p, _ in lr["ip1_p"]] == [0.5, 1.0]
    assert [p for p, _ in lr["conv2_p"]] == [1, 2]                     # not shared with conv1
    _Net(str(out), phase=caffe_pb2.TRAIN)          # Caffe's AppendParam check passes
    # Two factors for one shared param: refused, nothing written.
    out2 = tmp_path / "bad.prototxt"
    assert main(["surgery", "--model", str(model), "--lr-mult", "ip1=2,ip1_p=3",
                 "--out-model", str(out2)]) == 2
    assert "share param 'ip1_w'" in capsys.readouterr().err and not out2.exists()
    # Unnamed params are not shared.
    lenet = _lenet_deploy()
    surgery.freeze(lenet, ["conv1"])
    assert surgery.sharing_layers(lenet, "conv1") == [] and surgery.frozen_layers(lenet) == ["conv1"]


def test_map_from_a_layer_the_weights_lack_is_refused(tmp_path, lenet_weights, capsys):
    with pytest.raises(ValueError, match=r"--map ip2_new=nope: no layer 'nope' with weights in .*"
                                         r"lenet_iter_5000.caffemodel; its layers with weights: conv1, conv2"):
        surgery.transplant(_Net(_lenet_deploy("ip2_new", 10)), [lenet_weights], rename={"ip2_new": "nope"})
    model = tmp_path / "lenet.prototxt"
    model.write_text(to_text(_lenet_deploy("ip2_new", 10)))
    out = tmp_path / "init.caffemodel"
    assert main(["surgery", "--model", str(model), "--weights", lenet_weights, "--map", "ip2_new=nope",
                 "--out", str(out), "--report", str(tmp_path / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "'nope'" in captured.err and "copied" not in captured.out
    assert list(tmp_path.iterdir()) == [model]


def test_surgery_checks_its_arguments_before_writing(tmp_path, lenet_weights, capsys):
    model = tmp_path / "lenet.prototxt"
    model.write_text(to_text(_lenet_deploy("ip2_new", 5)))
    out_model = tmp_path / "edited.prototxt"
    assert main(["surgery", "--model", str(model), "--weights", lenet_weights, "--freeze", "conv1",
                 "--out-model", str(out_model)]) == 2
    assert "--out is needed" in capsys.readouterr().err
    assert not out_model.exists()
    assert main(["surgery", "--model", str(model), "--freeze", "conv1", "--out-model", str(out_model),
                 "--out", str(tmp_path / "w.caffemodel")]) == 2
    assert "no weights to write" in capsys.readouterr().err
    assert main(["surgery", "--model", str(model), "--weights", lenet_weights, "--freeze", "conv1",
                 "--out-model", str(out_model), "--out", str(tmp_path / "nowhere" / "w.caffemodel")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [model]
