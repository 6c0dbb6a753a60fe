"""The Caffe schema (proto/caffe.proto -> caffe_pb2) and the legacy upgrade."""

import ast
import logging
import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from pycaffe_lite.proto import upgrade
from pycaffe_lite.proto import caffe_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
COMMITTED_PB2 = REPO / "pycaffe_lite" / "proto" / "caffe_pb2.py"


def fixture(*parts):
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} not present (shared fixtures live in ../shared/fixtures)")
    return path


def parse_net(text):
    return text_format.Parse(text, pb.NetParameter())


# ---------------------------------------------------------------------------
# (a) the committed caffe_pb2 is what proto/caffe.proto generates
# ---------------------------------------------------------------------------

def _serialized_descriptor(source):
    """The bytes literal passed to AddSerializedFile in generated code."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"):
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile call in generated module")


def _protoc_version_line(source):
    match = re.search(r"^# Protobuf Python Version: .*$", source, re.M)
    return match.group(0) if match else None


def test_committed_pb2_matches_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to run protoc")
    from pycaffe_lite.proto import build

    fresh = build.generate(tmp_path).read_text()
    committed = COMMITTED_PB2.read_text()
    # The schema itself must be identical whatever protoc produced it ...
    assert _serialized_descriptor(fresh) == _serialized_descriptor(committed), (
        "pycaffe_lite/proto/caffe_pb2.py is stale: run python -m pycaffe_lite.proto.build")
    # ... and with the same protoc, the whole file.
    if _protoc_version_line(fresh) == _protoc_version_line(committed):
        assert fresh == committed


def test_descriptor_is_proto2_package_caffe():
    assert pb.DESCRIPTOR.package == "caffe"
    assert pb.DESCRIPTOR.name == "caffe.proto"


# ---------------------------------------------------------------------------
# (b) every fixture prototxt parses
# ---------------------------------------------------------------------------

_SOLVER_KEYS = re.compile(
    r"^\s*(net|train_net|test_net|net_param|train_net_param|test_net_param|base_lr|lr_policy)\s*[:{]",
    re.M)


def _prototxts():
    if not FIXTURES.exists():
        return []
    return sorted(FIXTURES.rglob("*.prototxt"))


def test_fixture_prototxts_exist():
    fixture("caffe")
    assert _prototxts(), "no prototxt fixtures found"


@pytest.mark.parametrize("path", _prototxts(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_prototxt_parses(path):
    text = path.read_text()
    if _SOLVER_KEYS.search(text):
        solver = text_format.Parse(text, pb.SolverParameter())
        upgrade.upgrade_solver(solver, str(path))
        assert not solver.HasField("solver_type")
    else:
        net = text_format.Parse(text, pb.NetParameter())
        assert len(net.layer) + len(net.layers) > 0
        upgrade.upgrade_net(net, str(path))
        assert not upgrade.net_needs_upgrade(net)
        assert len(net.layers) == 0 and len(net.layer) > 0
        assert all(layer.type for layer in net.layer)


# ---------------------------------------------------------------------------
# (c) binary fixtures: caffemodels, solverstate
# ---------------------------------------------------------------------------

def _is_repeated(field):
    # protobuf 7 dropped FieldDescriptor.label in favour of is_repeated / is_required.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _is_required(field):
    if hasattr(field, "is_required"):
        return field.is_required
    return field.label == FieldDescriptor.LABEL_REQUIRED


def _is_packed(field):
    if hasattr(field, "is_packed"):
        return field.is_packed
    return field.GetOptions().packed


def _assert_no_unknown_fields(message, where="message"):
    from google.protobuf import unknown_fields

    assert len(unknown_fields.UnknownFieldSet(message)) == 0, f"unknown fields in {where}"
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if _is_repeated(field):
            for i, item in enumerate(value):
                _assert_no_unknown_fields(item, f"{where}.{field.name}[{i}]")
        else:
            _assert_no_unknown_fields(value, f"{where}.{field.name}")


def _caffemodels():
    if not FIXTURES.exists():
        return []
    return sorted(FIXTURES.rglob("*.caffemodel"))


@pytest.mark.parametrize("path", _caffemodels(), ids=lambda p: p.name)
def test_caffemodel_parses(path):
    data = path.read_bytes()
    net = pb.NetParameter()
    net.ParseFromString(data)
    assert len(net.layer) + len(net.layers) > 0
    _assert_no_unknown_fields(net, path.name)
    # Same packed / unpacked encoding as Caffe wrote: a byte-exact round trip.
    assert net.SerializeToString() == data
    layers_with_blobs = [layer for layer in net.layer if layer.blobs]
    assert layers_with_blobs
    for layer in layers_with_blobs:
        for blob in layer.blobs:
            count = 1
            dims = list(blob.shape.dim) or [blob.num, blob.channels, blob.height, blob.width]
            for d in dims:
                count *= d
            assert len(blob.data) == count, layer.name


def test_lenet_caffemodel_layers():
    net = pb.NetParameter()
    net.ParseFromString(fixture("weights", "lenet_iter_5000.caffemodel").read_bytes())
    by_name = {layer.name: layer for layer in net.layer}
    conv1 = by_name["conv1"]
    assert conv1.type == "Convolution"
    assert list(conv1.blobs[0].shape.dim) == [20, 1, 5, 5]
    assert list(conv1.blobs[1].shape.dim) == [20]


def test_solverstate_parses():
    data = fixture("weights", "lenet_iter_5000.solverstate").read_bytes()
    state = pb.SolverState()
    state.ParseFromString(data)
    assert state.iter == 5000
    assert len(state.history) == 8
    assert state.learned_net.endswith("lenet_iter_5000.caffemodel")
    _assert_no_unknown_fields(state, "solverstate")
    assert state.SerializeToString() == data


# ---------------------------------------------------------------------------
# (d) field numbers, labels, defaults (written out from BVLC's schema)
# ---------------------------------------------------------------------------

FIELD_NUMBERS = {
    ("BlobShape", "dim"): 1,
    ("BlobProto", "shape"): 7,
    ("BlobProto", "data"): 5,
    ("BlobProto", "diff"): 6,
    ("BlobProto", "double_data"): 8,
    ("BlobProto", "double_diff"): 9,
    ("BlobProto", "num"): 1,
    ("BlobProto", "width"): 4,
    ("BlobProtoVector", "blobs"): 1,
    ("Datum", "channels"): 1,
    ("Datum", "data"): 4,
    ("Datum", "label"): 5,
    ("Datum", "float_data"): 6,
    ("Datum", "encoded"): 7,
    ("FillerParameter", "variance_norm"): 8,
    ("NetParameter", "name"): 1,
    ("NetParameter", "layers"): 2,
    ("NetParameter", "input"): 3,
    ("NetParameter", "input_dim"): 4,
    ("NetParameter", "force_backward"): 5,
    ("NetParameter", "state"): 6,
    ("NetParameter", "debug_info"): 7,
    ("NetParameter", "input_shape"): 8,
    ("NetParameter", "layer"): 100,
    ("SolverParameter", "train_net"): 1,
    ("SolverParameter", "test_iter"): 3,
    ("SolverParameter", "base_lr"): 5,
    ("SolverParameter", "lr_policy"): 8,
    ("SolverParameter", "snapshot_prefix"): 15,
    ("SolverParameter", "random_seed"): 20,
    ("SolverParameter", "net"): 24,
    ("SolverParameter", "net_param"): 25,
    ("SolverParameter", "solver_type"): 30,
    ("SolverParameter", "delta"): 31,
    ("SolverParameter", "iter_size"): 36,
    ("SolverParameter", "snapshot_format"): 37,
    ("SolverParameter", "rms_decay"): 38,
    ("SolverParameter", "momentum2"): 39,
    ("SolverParameter", "type"): 40,
    ("SolverParameter", "layer_wise_reduce"): 41,
    ("SolverParameter", "weights"): 42,
    ("SolverState", "iter"): 1,
    ("SolverState", "history"): 3,
    ("SolverState", "current_step"): 4,
    ("NetStateRule", "not_stage"): 5,
    ("ParamSpec", "lr_mult"): 3,
    ("ParamSpec", "decay_mult"): 4,
    ("LayerParameter", "name"): 1,
    ("LayerParameter", "type"): 2,
    ("LayerParameter", "loss_weight"): 5,
    ("LayerParameter", "param"): 6,
    ("LayerParameter", "blobs"): 7,
    ("LayerParameter", "include"): 8,
    ("LayerParameter", "phase"): 10,
    ("LayerParameter", "propagate_down"): 11,
    ("LayerParameter", "transform_param"): 100,
    ("LayerParameter", "loss_param"): 101,
    ("LayerParameter", "accuracy_param"): 102,
    ("LayerParameter", "convolution_param"): 106,
    ("LayerParameter", "data_param"): 107,
    ("LayerParameter", "inner_product_param"): 117,
    ("LayerParameter", "lrn_param"): 118,
    ("LayerParameter", "pooling_param"): 121,
    ("LayerParameter", "python_param"): 130,
    ("LayerParameter", "prelu_param"): 131,
    ("LayerParameter", "batch_norm_param"): 139,
    ("LayerParameter", "scale_param"): 142,
    ("LayerParameter", "input_param"): 143,
    ("LayerParameter", "crop_param"): 144,
    ("LayerParameter", "parameter_param"): 145,
    ("LayerParameter", "recurrent_param"): 146,
    ("LayerParameter", "swish_param"): 147,
    ("LayerParameter", "clip_param"): 148,
    ("TransformationParameter", "mean_value"): 5,
    ("TransformationParameter", "force_gray"): 7,
    ("LossParameter", "normalize"): 2,
    ("LossParameter", "normalization"): 3,
    ("ConvolutionParameter", "kernel_size"): 4,
    ("ConvolutionParameter", "group"): 5,
    ("ConvolutionParameter", "stride"): 6,
    ("ConvolutionParameter", "engine"): 15,
    ("ConvolutionParameter", "dilation"): 18,
    ("DataParameter", "batch_size"): 4,
    ("DataParameter", "backend"): 8,
    ("DataParameter", "prefetch"): 10,
    ("PoolingParameter", "global_pooling"): 12,
    ("PoolingParameter", "round_mode"): 13,
    ("V1LayerParameter", "layer"): 1,
    ("V1LayerParameter", "type"): 5,
    ("V1LayerParameter", "blobs_lr"): 7,
    ("V1LayerParameter", "convolution_param"): 10,
    ("V1LayerParameter", "include"): 32,
    ("V1LayerParameter", "transform_param"): 36,
    ("V1LayerParameter", "loss_param"): 42,
    ("V1LayerParameter", "param"): 1001,
    ("V1LayerParameter", "blob_share_mode"): 1002,
    ("V0LayerParameter", "kernelsize"): 8,
    ("V0LayerParameter", "k"): 22,
    ("V0LayerParameter", "blobs"): 50,
    ("V0LayerParameter", "concat_dim"): 65,
    ("V0LayerParameter", "hdf5_output_param"): 1001,
}


@pytest.mark.parametrize("message,field", sorted(FIELD_NUMBERS), ids=lambda x: str(x))
def test_field_number(message, field):
    descriptor = getattr(pb, message).DESCRIPTOR
    assert descriptor.fields_by_name[field].number == FIELD_NUMBERS[(message, field)]


def test_packed_and_labels():
    assert _is_packed(pb.BlobShape.DESCRIPTOR.fields_by_name["dim"])
    for name in ("data", "diff", "double_data", "double_diff"):
        assert _is_packed(pb.BlobProto.DESCRIPTOR.fields_by_name[name])
    assert not _is_packed(pb.Datum.DESCRIPTOR.fields_by_name["float_data"])
    assert not _is_packed(pb.NetParameter.DESCRIPTOR.fields_by_name["input_dim"])
    clip = pb.ClipParameter.DESCRIPTOR.fields_by_name
    assert _is_required(clip["min"]) and _is_required(clip["max"])
    assert _is_repeated(pb.ConvolutionParameter.DESCRIPTOR.fields_by_name["kernel_size"])
    assert not _is_repeated(pb.PoolingParameter.DESCRIPTOR.fields_by_name["kernel_size"])
    assert _is_repeated(pb.SolverParameter.DESCRIPTOR.fields_by_name["weights"])
    assert not _is_repeated(pb.DataParameter.DESCRIPTOR.fields_by_name["source"])


def test_defaults():
    assert pb.SolverParameter().type == "SGD"
    assert pb.SolverParameter().solver_mode == pb.SolverParameter.GPU
    assert pb.SolverParameter().random_seed == -1
    assert pb.SolverParameter().snapshot_format == pb.SolverParameter.BINARYPROTO
    assert pb.SolverParameter().regularization_type == "L2"
    assert pb.NetState().phase == pb.TEST
    assert pb.FillerParameter().type == "constant"
    assert pb.FillerParameter().std == 1.0
    assert pb.DataParameter().backend == pb.DataParameter.LEVELDB
    assert pb.DataParameter().prefetch == 4
    assert pb.ConvolutionParameter().bias_term is True
    assert pb.ConvolutionParameter().group == 1
    assert pb.PoolingParameter().stride == 1
    assert pb.PoolingParameter().round_mode == pb.PoolingParameter.CEIL
    assert pb.LRNParameter().beta == pytest.approx(0.75)
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.BatchNormParameter().moving_average_fraction == pytest.approx(0.999)
    assert pb.BatchNormParameter().eps == pytest.approx(1e-5)
    assert pb.EltwiseParameter().operation == pb.EltwiseParameter.SUM
    assert pb.ReductionParameter().operation == pb.ReductionParameter.SUM
    assert pb.HingeLossParameter().norm == pb.HingeLossParameter.L1
    assert pb.ImageDataParameter().batch_size == 1
    assert pb.WindowDataParameter().crop_mode == "warp"
    assert pb.ParamSpec().lr_mult == 1.0
    assert pb.V0LayerParameter().biasterm is True


def test_enums():
    assert pb.TRAIN == 0 and pb.TEST == 1
    assert pb.V1LayerParameter.CONVOLUTION == 4
    assert pb.V1LayerParameter.SOFTMAX_LOSS == 21
    assert pb.V1LayerParameter.DECONVOLUTION == 39
    assert pb.SolverParameter.ADAM == 5
    assert pb.PoolingParameter.STOCHASTIC == 2
    assert pb.ReductionParameter.MEAN == 4
    assert pb.LossParameter.NONE == 3


def test_convolution_engine_extensions():
    engine = pb.ConvolutionParameter.Engine
    assert [engine.Value(n) for n in ("DEFAULT", "CAFFE", "CUDNN")] == [0, 1, 2]
    assert engine.Value("FFT") == 1000
    assert engine.Value("WINOGRAD") == 1001
    assert engine.Value("WINOGRAD4") == 1002
    assert engine.Value("AUTO") == 1003
    conv = text_format.Parse("engine: WINOGRAD4", pb.ConvolutionParameter())
    assert conv.engine == 1002


def test_extensions_are_numbered_from_1000_and_marked():
    """Numbers >= 1000 outside the legacy V0/V1 messages are ours, and marked."""
    lines = (REPO / "proto" / "caffe.proto").read_text().splitlines()
    message = None
    ours = []
    for i, line in enumerate(lines):
        top = re.match(r"^message (\w+)", line)
        if top:
            message = top.group(1)
        number = re.search(r"=\s*(\d+)\s*[;\[]", line)
        if not number or int(number.group(1)) < 1000:
            continue
        if message in ("V1LayerParameter", "V0LayerParameter"):
            continue  # BVLC's own 1001 / 1002 fields
        ours.append(line.strip())
        comment, j = [line], i - 1
        while j >= 0 and lines[j].strip().startswith("//"):  # the comment block just above
            comment.append(lines[j])
            j -= 1
        assert any("pycaffe_lite extension" in c for c in comment), line
    assert ours, "the ConvolutionParameter.Engine extensions are missing"


# ---------------------------------------------------------------------------
# (e) legacy upgrade
# ---------------------------------------------------------------------------

def test_upgrade_lenet_v1_matches_caffe():
    v1 = parse_net(fixture("legacy", "lenet_train_test_v1.prototxt").read_text())
    expected = parse_net(fixture("legacy", "lenet_train_test_upgraded.prototxt").read_text())
    assert upgrade.net_needs_upgrade(v1)
    assert upgrade.upgrade_net(v1, "lenet_train_test_v1.prototxt") is True
    assert v1 == expected, text_format.MessageToString(v1)
    assert not upgrade.net_needs_upgrade(v1)
    assert upgrade.upgrade_net(v1) is False


def test_upgrade_logs_to_pycaffe_lite_logger(caplog, capsys):
    v1 = parse_net(fixture("legacy", "lenet_train_test_v1.prototxt").read_text())
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        upgrade.upgrade_net(v1, "lenet.prototxt")
    assert any("V1LayerParameter: lenet.prototxt" in r.getMessage() for r in caplog.records)
    assert all(r.name == "pycaffe_lite" for r in caplog.records)
    assert capsys.readouterr().out == ""


def test_upgrade_input_dim_to_input_layer():
    net = parse_net("""
        name: "deploy"
        input: "data"
        input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227
        input: "rois"
        input_dim: 1 input_dim: 5 input_dim: 1 input_dim: 1
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 4 kernel_size: 3 } }
    """)
    assert upgrade.net_needs_upgrade(net)
    upgrade.upgrade_net(net)
    expected = parse_net("""
        name: "deploy"
        layer { name: "input" type: "Input" top: "data" top: "rois"
                input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 }
                              shape { dim: 1 dim: 5 dim: 1 dim: 1 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 4 kernel_size: 3 } }
    """)
    assert net == expected


def test_upgrade_input_shape_to_input_layer():
    net = parse_net("""
        input: "data" input_shape { dim: 1 dim: 2 }
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    """)
    upgrade.upgrade_net(net)
    assert [layer.type for layer in net.layer] == ["Input", "ReLU"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 2]
    assert not net.input and not net.input_shape and not net.input_dim


def test_upgrade_bare_input_is_dropped():
    # Old caffemodels list the input name without shapes: Caffe just strips it.
    net = parse_net('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    upgrade.upgrade_net(net)
    assert [layer.name for layer in net.layer] == ["r"]
    assert not net.input


def test_upgrade_input_dim_count_mismatch():
    net = parse_net('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4')
    with pytest.raises(ValueError, match="input_dim"):
        upgrade.upgrade_net(net)


V0_NET = """
name: "v0net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "feed" type: "data" source: "db" batchsize: 4 scale: 0.5 cropsize: 3
                 mirror: true meanfile: "mean.binaryproto" rand_skip: 7 }
         top: "more" top: "label" }
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false
          weight_filler { type: "gaussian" std: 0.01 }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 }
         bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.001 beta: 0.5 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "drop1" type: "dropout" dropout_ratio: 0.3 }
         bottom: "norm1" top: "norm1" }
layers { layer { name: "ip1" type: "innerproduct" num_output: 10 } bottom: "norm1" top: "ip1" }
layers { layer { name: "loss" type: "softmax_loss" } bottom: "ip1" bottom: "label" top: "loss" }
"""

V0_NET_UPGRADED = """
name: "v0net"
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "feed" type: "Data" top: "more" top: "label"
        transform_param { scale: 0.5 mirror: true crop_size: 3 mean_file: "mean.binaryproto" }
        data_param { source: "db" batch_size: 4 rand_skip: 7 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 bias_term: false pad: 2 kernel_size: 3 stride: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.001 beta: 0.5 } }
layer { name: "drop1" type: "Dropout" bottom: "norm1" top: "norm1"
        dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_upgrade_v0_net_with_padding_layer():
    net = parse_net(V0_NET)
    assert upgrade.net_needs_v0_to_v1_upgrade(net)
    upgrade.upgrade_net(net, "v0net.prototxt")
    assert net == parse_net(V0_NET_UPGRADED), text_format.MessageToString(net)


def test_upgrade_v0_errors_name_the_layer():
    bad_type = parse_net('layers { layer { name: "odd" type: "mystery" } top: "x" }')
    with pytest.raises(ValueError, match="odd"):
        upgrade.upgrade_net(bad_type)

    pad_into_relu = parse_net("""
        input: "data"
        layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "p" }
        layers { layer { name: "act" type: "relu" } bottom: "p" top: "r" }
    """)
    with pytest.raises(ValueError, match="act"):
        upgrade.upgrade_net(pad_into_relu)

    unknown_bottom = parse_net(
        'layers { layer { name: "c" type: "conv" num_output: 1 } bottom: "nowhere" top: "c" }')
    with pytest.raises(ValueError, match="nowhere"):
        upgrade.upgrade_net(unknown_bottom)


def test_upgrade_v0_misplaced_parameter_strict_and_lenient(caplog):
    text = 'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }'
    text = 'input: "x" ' + text
    with pytest.raises(ValueError, match="num_output"):
        upgrade.upgrade_net(parse_net(text))
    net = parse_net(text)
    with caplog.at_level(logging.WARNING, logger="pycaffe_lite"):
        upgrade.upgrade_net(net, strict=False)
    assert net.layer[0].type == "ReLU"
    assert any("num_output" in r.getMessage() for r in caplog.records)


def test_upgrade_v1_params_and_share_mode():
    net = parse_net("""
        layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
                 param: "w" param: "b" blob_share_mode: PERMISSIVE
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 loss_weight: 0.5
                 inner_product_param { num_output: 3 }
                 include { phase: TRAIN } exclude { stage: "deploy" } }
        layers { name: "scl" type: DECONVOLUTION bottom: "y" top: "z"
                 convolution_param { num_output: 2 kernel_size: 2 } }
    """)
    upgrade.upgrade_net(net)
    expected = parse_net("""
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
                include { phase: TRAIN } exclude { stage: "deploy" }
                loss_weight: 0.5
                param { name: "w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
                param { name: "b" lr_mult: 2 decay_mult: 0 }
                inner_product_param { num_output: 3 } }
        layer { name: "scl" type: "Deconvolution" bottom: "y" top: "z"
                convolution_param { num_output: 2 kernel_size: 2 } }
    """)
    assert net == expected


def test_upgrade_v1_mixed_with_layer_is_an_error():
    text = ('layer { name: "a" type: "ReLU" } '
            'layers { name: "b" type: RELU }')
    with pytest.raises(ValueError, match="layer"):
        upgrade.upgrade_net(parse_net(text))
    lenient = parse_net(text)
    upgrade.upgrade_net(lenient, strict=False)  # Caffe: drops the 'layer' entries
    assert [layer.name for layer in lenient.layer] == ["b"]


def test_upgrade_v1_window_and_image_data_transform():
    net = parse_net("""
        layers { name: "w" type: WINDOW_DATA top: "d" top: "l"
                 window_data_param { source: "w.txt" scale: 2 crop_size: 227 mirror: true
                                     mean_file: "m" fg_threshold: 0.6 } }
        layers { name: "i" type: IMAGE_DATA top: "d2" top: "l2"
                 image_data_param { source: "i.txt" crop_size: 5 } }
    """)
    upgrade.upgrade_net(net)
    w, i = net.layer
    assert (w.type, i.type) == ("WindowData", "ImageData")
    assert w.transform_param == text_format.Parse(
        'scale: 2 crop_size: 227 mirror: true mean_file: "m"', pb.TransformationParameter())
    assert not w.window_data_param.HasField("crop_size")
    assert w.window_data_param.fg_threshold == pytest.approx(0.6)
    assert i.transform_param.crop_size == 5
    assert not i.image_data_param.HasField("crop_size")


def test_upgrade_batchnorm_params():
    net = parse_net("""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" }
    """)
    assert upgrade.net_needs_batchnorm_upgrade(net)
    upgrade.upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3
    assert len(net.layer[1].param) == 0
    before = net.SerializeToString()
    upgrade.upgrade_net(net)  # idempotent
    assert net.SerializeToString() == before


def test_upgrade_binary_v1_caffemodel_roundtrip():
    # A V1 net written in binary (as old zoo caffemodels are) keeps its blobs.
    v1 = parse_net("""
        layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
                 blobs { num: 1 channels: 1 height: 2 width: 3 data: 1 data: 2 data: 3
                         data: 4 data: 5 data: 6 }
                 blobs { num: 1 channels: 1 height: 1 width: 2 data: 7 data: 8 } }
    """)
    binary = pb.NetParameter()
    binary.ParseFromString(v1.SerializeToString())
    upgrade.upgrade_net(binary)
    layer = binary.layer[0]
    assert layer.type == "InnerProduct"
    assert list(layer.blobs[0].data) == [1, 2, 3, 4, 5, 6]
    assert layer.blobs[1].width == 2


def test_v1_type_table_covers_enum_and_agrees_with_registry():
    enum_names = set(pb.V1LayerParameter.LayerType.keys())
    assert set(upgrade.V1_TYPE_NAMES) == enum_names
    from pycaffe_lite.layer import v1_type_names
    for enum_name, type_name in v1_type_names().items():
        if enum_name not in enum_names:
            continue  # not a V1 type at all: can never appear in a V1 net
        assert upgrade.V1_TYPE_NAMES[enum_name] == type_name, enum_name


def test_upgrade_solver_type():
    solver = text_format.Parse('base_lr: 0.1 solver_type: NESTEROV', pb.SolverParameter())
    assert upgrade.solver_needs_upgrade(solver)
    assert upgrade.upgrade_solver(solver, "solver.prototxt")
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")
    assert not upgrade.upgrade_solver(solver)
    for enum_name, type_name in [("SGD", "SGD"), ("ADAGRAD", "AdaGrad"),
                                 ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"),
                                 ("ADAM", "Adam")]:
        s = text_format.Parse(f"solver_type: {enum_name}", pb.SolverParameter())
        upgrade.upgrade_solver(s)
        assert s.type == type_name


def test_upgrade_solver_type_conflict():
    solver = text_format.Parse('solver_type: ADAM type: "Adam"', pb.SolverParameter())
    with pytest.raises(ValueError, match="solver_type"):
        upgrade.upgrade_solver(solver)


def test_upgrade_snapshot_prefix(tmp_path):
    solver = pb.SolverParameter()
    assert upgrade.upgrade_snapshot_prefix(solver, "models/x/solver.prototxt")
    assert solver.snapshot_prefix == "models/x/solver"
    solver.snapshot_prefix = str(tmp_path)
    assert upgrade.upgrade_snapshot_prefix(solver, "models/x/solver.prototxt")
    assert solver.snapshot_prefix == str(tmp_path / "solver")
    assert not upgrade.upgrade_snapshot_prefix(solver, "models/x/solver.prototxt")
