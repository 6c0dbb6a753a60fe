"""Every net prototxt BVLC Caffe ships (../shared/fixtures/caffe) builds in TRAIN and TEST with
Caffe's blob shapes; data layers are swapped for DummyData of the shape their data would have."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite.proto.files import read_net_param
from pycaffe_lite.proto import caffe_pb2
from conftest import FIXTURES, fixture_params, fixture_path, require_found

DATA_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData", "MemoryData")
# (channels, height, width) of the images each example's database holds.
SOURCE_SHAPES = {"mnist_siamese": (2, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                 "imagenet": (3, 256, 256), "flickr": (3, 256, 256), "hdf5_classification": (4,)}


def net_prototxts():
    """pytest params: every net prototxt under ../shared/fixtures/caffe (conftest.fixture_params:
    skipped when ../shared is absent, failing when it holds none)."""
    root = FIXTURES / "caffe"
    files = [path.relative_to(root) for path in sorted(root.rglob("*.prototxt"))
             if "layer" in path.read_text() and "base_lr" not in path.read_text()]
    return fixture_params(files, "net prototxt in fixtures/caffe")


def data_shape(layer):
    p = {"Data": layer.data_param, "ImageData": layer.image_data_param,
         "WindowData": layer.window_data_param}.get(layer.type, layer.hdf5_data_param)
    source = p.source
    image = next(shape for key, shape in SOURCE_SHAPES.items() if key in source)
    crop = layer.transform_param.crop_size
    if crop and len(image) == 3:
        image = (image[0], crop, crop)
    return (min(p.batch_size, 4),) + image   # a small batch: only the shapes are checked


def with_dummy_data(param):
    """Replace data layers by DummyData tops of the same shapes (data, then a label per image)."""
    for layer in param.layer:
        if layer.type not in DATA_TYPES:
            continue
        shape = data_shape(layer)
        layer.type = "DummyData"
        dummy = layer.dummy_data_param
        for i in range(len(layer.top)):
            dummy.shape.add().dim.extend(shape if i == 0 else shape[:1])
        for field in ("data_param", "image_data_param", "hdf5_data_param", "transform_param"):
            layer.ClearField(field)
    return param


@pytest.mark.parametrize("relative", net_prototxts())
def test_fixture_net_builds_in_both_phases(relative):
    relative = require_found(relative, "net prototxt in fixtures/caffe")
    param = with_dummy_data(read_net_param(str(fixture_path("caffe", relative))))
    # A net whose TEST layers need a stage (the autoencoder's test-on-test) gets the first one,
    # as its solver's test_state would give.
    stages = sorted({s for l in param.layer for r in l.include if r.phase == caffe.TEST for s in r.stage})
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(param, phase, stages=stages[:1] if phase == caffe.TEST else ())
        assert net.layers, f"{relative}: no layers in phase {phase}"
        for name, blob in net.blobs.items():
            assert all(d > 0 for d in blob.shape) or blob.shape == (), f"{relative}: blob {name} {blob.shape}"


def test_caffenet_deploy_shapes_match_caffe():
    net = caffe.Net(str(fixture_path("caffe", "models", "bvlc_reference_caffenet", "deploy.prototxt")), caffe.TEST)
    assert net.blobs["data"].shape == (10, 3, 227, 227)
    assert net.blobs["conv1"].shape == (10, 96, 55, 55)
    assert net.blobs["pool1"].shape == (10, 96, 27, 27)
    assert net.blobs["pool5"].shape == (10, 256, 6, 6)
    assert net.blobs["fc8"].shape == (10, 1000)
    params = sum(b.count for blobs in net.params.values() for b in blobs)
    assert params == 60965224


def test_googlenet_train_val_builds_its_three_loss_branches():
    googlenet = fixture_path("caffe", "models", "bvlc_googlenet", "train_val.prototxt")
    param = with_dummy_data(read_net_param(str(googlenet)))
    net = caffe.Net(param, caffe.TRAIN)
    losses = {name: w for name, w in net.blob_loss_weights.items() if w}
    assert losses == pytest.approx({"loss1/loss1": 0.3, "loss2/loss2": 0.3, "loss3/loss3": 1.0})
    assert net.blobs["pool5/7x7_s1"].shape == (4, 1024, 1, 1)
    test_net = caffe.Net(param, caffe.TEST)
    assert {"loss1/top-1", "loss3/top-5"} <= set(test_net.outputs)


def test_one_training_step_runs_on_random_data_for_lenet_and_cifar():
    for parts in (("examples", "mnist", "lenet_train_test.prototxt"),
                  ("examples", "cifar10", "cifar10_quick_train_test.prototxt")):
        param = with_dummy_data(read_net_param(str(fixture_path("caffe", *parts))))
        for layer in param.layer:
            if layer.type == "DummyData":
                layer.dummy_data_param.data_filler.add().CopyFrom(
                    text_format.Parse('type: "uniform" min: 0 max: 1', caffe_pb2.FillerParameter()))
                for shape in layer.dummy_data_param.shape:
                    shape.dim[0] = 4
        net = caffe.Net(param, caffe.TRAIN)  # labels drawn in [0, 1): class 0
        net.clear_param_diffs()
        loss = net.forward_backward()
        assert np.isfinite(loss) and loss > 0
        assert all(np.abs(p.diff).sum() > 0 for p in net.learnable_params)
