"""The zoo's prototxts: generated, faithful to BVLC's, and the published sizes.

Nets are only built (shapes and parameters), never run forward: building is
cheap, a forward of VGG16 is not.
"""
import importlib

import numpy as np
import pytest

from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.zoo import architectures as A
from pycaffe_lite.zoo import count_params
from pycaffe_lite.proto.text import parse_text, to_text

from conftest import REPO, fixture_path

MODELS = REPO / "models"

# Published parameter counts (millions) and how close ours must be.
PUBLISHED = {
    "vgg16": (138.0, 0.005), "resnet50": (25.6, 0.005), "squeezenet_v1.1": (1.24, 0.01),
    "bvlc_googlenet": (7.0, 0.02), "bvlc_reference_caffenet": (61.0, 0.005),
    "bvlc_alexnet": (61.0, 0.005), "mobilenet": (4.2, 0.01), "inception_v3": (23.8, 0.005),
}
OUTPUT_SHAPE = {"squeezenet_v1.1": (1, 1000, 1, 1), "mobilenet": (1, 1000, 1, 1),
                "cifar10_quick": (1, 10), "cifar10_full": (1, 10), "finetune_flickr_style": (1, 20)}


@pytest.fixture
def shapes_only(monkeypatch):
    """Parameter blobs allocated but not filled: these tests are about shapes and counts, and
    drawing VGG16's 138M Gaussian weights would cost seconds for nothing."""
    from pycaffe_lite.layer import Layer
    monkeypatch.setattr(Layer, "fill_param", lambda self, shape, filler, dtype, like=None:
                        self.make_blob(shape, dtype, like))


def _net(param, phase=caffe_pb2.TEST):
    importlib.import_module("pycaffe_lite.layers")
    from pycaffe_lite.net import Net
    return Net(param, phase=phase)


def test_committed_prototxts_are_the_generated_ones():
    import runpy
    tool = runpy.run_path(str(REPO / "tools" / "make_zoo_models.py"))
    for name in A.MODELS:
        for file_name, text in tool["model_files"](name).items():
            path = MODELS / name / file_name
            assert path.read_text() == text, f"{path} is stale: run tools/make_zoo_models.py"


@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_deploy_builds_with_published_size(name, shapes_only):
    spec = A.spec(name)
    net = _net(MODELS / name / "deploy.prototxt")
    assert count_params(net) == spec.params
    if name in PUBLISHED:
        millions, tolerance = PUBLISHED[name]
        assert abs(spec.params / 1e6 - millions) <= tolerance * millions, (name, spec.params)
    batch = spec.input_shape[0]
    expected = OUTPUT_SHAPE.get(name, (1, 1000))
    assert net.blobs["prob"].shape == (batch,) + tuple(expected[1:])
    assert net.inputs == ["data"] and net.outputs == ["prob"]


def _dummy_train_val(name, batch=1):
    """train_val with its data layers as DummyData of the deploy input shape."""
    spec = A.spec(name)
    param = parse_text((MODELS / name / "train_val.prototxt").read_text(), caffe_pb2.NetParameter())
    shape = (batch,) + tuple(spec.input_shape[1:])
    out = caffe_pb2.NetParameter(name=param.name)
    placed = False
    for layer in param.layer:
        if layer.type == "Data":
            if not placed:
                out.layer.add().CopyFrom(caffe_pb2.LayerParameter(
                    name=layer.name, type="DummyData", top=list(layer.top),
                    dummy_data_param=dict(shape=[dict(dim=list(shape)), dict(dim=[batch])])))
                placed = True
            continue
        out.layer.add().CopyFrom(layer)
    return out


@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_train_val_builds_in_both_phases(name, shapes_only):
    param = _dummy_train_val(name)
    # The TEST phase differs only by its accuracy layers: built for the smaller nets, to save time.
    phases = (caffe_pb2.TRAIN,) if len(param.layer) > 150 else (caffe_pb2.TRAIN, caffe_pb2.TEST)
    for phase in phases:
        net = _net(param, phase)
        assert "loss" in " ".join(net.blobs), name
        if phase == caffe_pb2.TRAIN:
            # The deploy net holds the same learnable layers (plus auxiliary heads in train_val).
            deploy = parse_text((MODELS / name / "deploy.prototxt").read_text(), caffe_pb2.NetParameter())
            deploy_names = {l.name for l in deploy.layer}
            assert deploy_names - {"data", "prob"} <= set(net.layer_names)
        del net


@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_solver_points_at_its_train_val(name):
    text = (MODELS / name / "solver.prototxt").read_text()
    solver = parse_text(text, caffe_pb2.SolverParameter())
    assert solver.net == f"models/{name}/train_val.prototxt"
    assert (REPO / solver.net).exists()
    assert solver.snapshot_prefix.startswith(f"models/{name}/snapshots/")
    assert solver.base_lr > 0 and solver.max_iter > 0


@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_readme_front_matter(name):
    from pycaffe_lite.zoo import get_model
    model = get_model(name, MODELS)
    for key in ("name", "caffemodel", "license", "weights_from"):
        assert model.meta.get(key), (name, key)
    if model.url:
        assert model.url.startswith(("http://", "https://"))
    if model.sha1:
        assert len(model.sha1) == 40


BVLC = ["bvlc_reference_caffenet", "bvlc_alexnet", "bvlc_googlenet", "finetune_flickr_style"]


def _layers_text(param, skip_data=False):
    out = caffe_pb2.NetParameter()
    for layer in param.layer:
        if skip_data and layer.type in ("Data", "ImageData"):
            continue
        out.layer.add().CopyFrom(layer)
    return to_text(out)


@pytest.mark.parametrize("name", BVLC)
def test_bvlc_models_match_bvlc_prototxts(name):
    folder = fixture_path("caffe", "models", name)
    ours_tv = A.train_val(name)
    theirs_tv = parse_text((folder / "train_val.prototxt").read_text(), caffe_pb2.NetParameter())
    # flickr's data layers read LMDBs here, image lists in BVLC's: compare the rest.
    skip = name == "finetune_flickr_style"
    assert _layers_text(ours_tv, skip) == _layers_text(theirs_tv, skip)
    ours, theirs = A.deploy(name), parse_text((folder / "deploy.prototxt").read_text(),
                                              caffe_pb2.NetParameter())
    if name == "bvlc_googlenet":    # BVLC's deploy carries odd filler stds; fillers are unused there
        for net in (ours, theirs):
            for layer in net.layer:
                for field in ("convolution_param", "inner_product_param"):
                    if layer.HasField(field):
                        getattr(layer, field).ClearField("weight_filler")
    assert _layers_text(ours) == _layers_text(theirs)


@pytest.mark.parametrize("name, example", [("cifar10_quick", "cifar10_quick"),
                                           ("cifar10_full", "cifar10_full")])
def test_cifar_models_match_caffe_examples(name, example):
    folder = fixture_path("caffe", "examples", "cifar10")
    theirs = parse_text((folder / f"{example}_train_test.prototxt").read_text(), caffe_pb2.NetParameter())
    assert _layers_text(A.train_val(name)) == _layers_text(theirs)
    theirs = parse_text((folder / f"{example}.prototxt").read_text(), caffe_pb2.NetParameter())
    assert _layers_text(A.deploy(name)) == _layers_text(theirs)


def test_architecture_details():
    tv = A.train_val("resnet50")
    types = [l.type for l in tv.layer]
    assert types.count("BatchNorm") == types.count("Scale") == 53
    kernels = [tuple(l.convolution_param.kernel_size) for l in tv.layer
               if l.type == "Convolution" and l.name.startswith("res3b_branch2")]
    assert kernels == [(1,), (3,), (1,)]                       # bottleneck 1x1 / 3x3 / 1x1
    mb = A.deploy("mobilenet")
    depthwise = [l for l in mb.layer if l.name.endswith("/dw") and l.type == "Convolution"]
    assert len(depthwise) == 13
    assert all(l.convolution_param.group == l.convolution_param.num_output for l in depthwise)
    v3 = A.deploy("inception_v3")
    rect = {(l.convolution_param.kernel_h, l.convolution_param.kernel_w) for l in v3.layer
            if l.type == "Convolution" and l.convolution_param.kernel_h}
    assert rect == {(1, 7), (7, 1), (1, 3), (3, 1)}            # factorised convolutions
    assert not any(l.name.startswith("AuxLogits") for l in v3.layer)
    assert any(l.name.startswith("AuxLogits") for l in A.train_val("inception_v3").layer)
    assert A.train_val("vgg16", num_classes=20).layer[-3].inner_product_param.num_output == 20


def test_text_writer_matches_caffe_byte_for_byte():
    path = fixture_path("legacy", "lenet_train_test_upgraded.prototxt")
    text = path.read_text()
    assert to_text(parse_text(text, caffe_pb2.NetParameter())) == text
    from pycaffe_lite.proto.text import format_float
    assert [format_float(v) for v in (1.0, 0.1, 5e-05, 0.00390625, 1e10, 0.2)] == \
        ["1", "0.1", "5e-05", "0.00390625", "1e+10", "0.2"]
    assert format_float(np.float32(1 / 3)) == "0.333333343"
