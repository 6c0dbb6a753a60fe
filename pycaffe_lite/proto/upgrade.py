"""Upgrade legacy Caffe net and solver definitions to the current format.

The same steps, in the same order, as BVLC Caffe's ``UpgradeNetAsNeeded``
(``src/caffe/util/upgrade_proto.cpp``), applied in place to a
``caffe_pb2.NetParameter`` read from a prototxt or a ``.caffemodel``:

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` with flat fields and
   separate ``padding`` layers becomes ``layers { type: CONVOLUTION
   convolution_param { pad: ... } }``.
2. Data transformation: ``scale`` / ``mean_file`` / ``crop_size`` /
   ``mirror`` move from ``data_param`` / ``image_data_param`` /
   ``window_data_param`` into ``transform_param`` (V1 layers, as Caffe).
3. V1 -> V2: ``layers { type: CONVOLUTION blobs_lr: 1 }`` becomes
   ``layer { type: "Convolution" param { lr_mult: 1 } }``.
4. Net inputs: ``input`` + ``input_shape`` / ``input_dim`` become an
   ``Input`` layer placed first (a bare ``input`` without shapes, as in old
   caffemodels, is simply dropped).
5. BatchNorm: a BatchNorm layer declaring three ``param`` specs (the old way
   of freezing its statistics) gets ``lr_mult: 0  decay_mult: 0`` on all
   three, as BVLC Caffe master does.

``upgrade_solver`` turns the deprecated ``solver_type`` enum into the
``type`` string.

Where Caffe would abort (CHECK / LOG(FATAL)) we raise ``ValueError`` naming
the layer.  Where Caffe logs an error and continues with a partly upgraded
net, we raise too unless ``strict=False``, in which case we log a warning
and continue exactly as Caffe does.  Progress notes go to the
``pycaffe_lite`` logger; nothing is printed.
"""

from __future__ import annotations

import logging
import os

from . import caffe_pb2

__all__ = [
    "V1_TYPE_NAMES",
    "V0_TYPE_NAMES",
    "SOLVER_TYPE_NAMES",
    "net_needs_upgrade",
    "net_needs_v0_to_v1_upgrade",
    "net_needs_v1_to_v2_upgrade",
    "net_needs_data_upgrade",
    "net_needs_input_upgrade",
    "net_needs_batchnorm_upgrade",
    "upgrade_net",
    "solver_needs_upgrade",
    "register_v1_names",
    "upgrade_solver",
    "upgrade_snapshot_prefix",
    "v1_type_name",
]

log = logging.getLogger("pycaffe_lite")

_V1 = caffe_pb2.V1LayerParameter

# V1LayerParameter.LayerType enum name -> V2 type string: Caffe's fixed
# table (UpgradeV1LayerType).  It is a fact of the file format, so it covers
# every V1 type whether or not pycaffe_lite implements the layer; the layer
# registry (pycaffe_lite.layer.v1_type_names) is consulted first and must
# agree with it (tests/test_proto.py checks that).
V1_TYPE_NAMES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# V0 type string -> V1 enum name (UpgradeV0LayerType).
V0_TYPE_NAMES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# SolverParameter.SolverType enum name -> type string (UpgradeSolverType).
SOLVER_TYPE_NAMES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# V1 layer types whose parameter message holds deprecated transformation
# fields, and that message's field name.
_DATA_PARAM_OF_V1_TYPE = {
    _V1.DATA: "data_param",
    _V1.IMAGE_DATA: "image_data_param",
    _V1.WINDOW_DATA: "window_data_param",
}
_V2_DATA_PARAM_OF_TYPE = {
    "Data": "data_param",
    "ImageData": "image_data_param",
    "WindowData": "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


class _Problems:
    """Collects what Caffe would log as 'not fully compatible'."""

    def __init__(self, strict: bool):
        self.strict = strict

    def __call__(self, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        log.warning("%s", message)


def _describe(name: str, index: int) -> str:
    return f"layer '{name}' (#{index})" if name else f"layer #{index}"


# ---------------------------------------------------------------------------
# Type tables
# ---------------------------------------------------------------------------

_V1_NAME_SOURCES = []


def register_v1_names(source):
    """Add `source` (a callable: V1 enum name -> type string) to the names the upgrade consults
    before its own table.  The layer registry registers itself (pycaffe_lite.layer), so a layer
    declared with `register(..., v1=...)` upgrades to its own type; the proto floor stays below it."""
    if source not in _V1_NAME_SOURCES:
        _V1_NAME_SOURCES.append(source)


def _registry_v1_names() -> dict:
    names = {}
    for source in _V1_NAME_SOURCES:
        names.update(source())
    return names


def v1_type_name(v1_type: int, layer_desc: str = "layer", _registry=None) -> str:
    """The V2 type string of a ``V1LayerParameter.LayerType`` value."""
    try:
        enum_name = _V1.LayerType.Name(v1_type)
    except ValueError:
        raise ValueError(f"{layer_desc}: unknown V1 layer type {v1_type}") from None
    registry = _registry_v1_names() if _registry is None else _registry
    if enum_name in registry:
        return registry[enum_name]
    try:
        return V1_TYPE_NAMES[enum_name]
    except KeyError:
        raise ValueError(f"{layer_desc}: V1 layer type {enum_name} has no V2 type name") from None


# ---------------------------------------------------------------------------
# What needs upgrading
# ---------------------------------------------------------------------------

def net_needs_v0_to_v1_upgrade(net_param) -> bool:
    return any(layer.HasField("layer") for layer in net_param.layers)


def net_needs_v1_to_v2_upgrade(net_param) -> bool:
    return len(net_param.layers) > 0


def net_needs_data_upgrade(net_param) -> bool:
    for layer in net_param.layers:
        field = _DATA_PARAM_OF_V1_TYPE.get(layer.type)
        if field is None:
            continue
        sub = getattr(layer, field)
        if any(sub.HasField(name) for name in _TRANSFORM_FIELDS):
            return True
    return False


def net_needs_input_upgrade(net_param) -> bool:
    return len(net_param.input) > 0


def _is_old_batchnorm(layer) -> bool:
    # Caffe's test is "BatchNorm with three param specs"; we also skip layers
    # whose specs are already frozen, so that an upgraded net needs no upgrade.
    return (layer.type == "BatchNorm" and len(layer.param) == 3
            and any(p.lr_mult != 0 or p.decay_mult != 0 for p in layer.param))


def net_needs_batchnorm_upgrade(net_param) -> bool:
    return any(_is_old_batchnorm(layer) for layer in net_param.layer)


def net_needs_upgrade(net_param) -> bool:
    """True if `upgrade_net` would change anything."""
    return (net_needs_v0_to_v1_upgrade(net_param)
            or net_needs_v1_to_v2_upgrade(net_param)
            or net_needs_data_upgrade(net_param)
            or net_needs_input_upgrade(net_param)
            or net_needs_batchnorm_upgrade(net_param))


# ---------------------------------------------------------------------------
# V0 -> V1
# ---------------------------------------------------------------------------

def _upgrade_v0_padding_layers(param):
    """Fold V0 ``padding`` layers into the conv / pool layer they feed."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layers[:]
    last_top = {name: -1 for name in param.input}
    for i, conn in enumerate(param.layers):
        v0 = conn.layer
        desc = _describe(v0.name or conn.name, i)
        if v0.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise ValueError(f"{desc}: unknown bottom blob '{blob}'")
            top_idx = last_top[blob]
            if top_idx == -1:
                continue
            source = param.layers[top_idx]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise ValueError(f"{desc}: padding layer feeds a layer of type "
                                 f"'{v0.type}'; only conv and pool can absorb padding")
            if len(conn.bottom) != 1:
                raise ValueError(f"{desc}: a padded conv / pool layer must have one bottom")
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise ValueError(f"{_describe(source.layer.name, top_idx)}: a padding "
                                 "layer must have exactly one bottom and one top")
            target = out.layers[-1]
            target.layer.pad = source.layer.pad
            target.bottom[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return out


# (V0 field, {v0 type: (sub-message field, target field, kind)})
# kind: "set" assigns, "add" appends to a repeated field, "copy" copies a
# message.  Fields used by every type (scale, meanfile, cropsize, mirror) go
# to transform_param and are handled separately.
_V0_FIELD_MAP = {
    "num_output": {"conv": ("convolution_param", "num_output", "set"),
                   "innerproduct": ("inner_product_param", "num_output", "set")},
    "biasterm": {"conv": ("convolution_param", "bias_term", "set"),
                 "innerproduct": ("inner_product_param", "bias_term", "set")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler", "copy"),
                      "innerproduct": ("inner_product_param", "weight_filler", "copy")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler", "copy"),
                    "innerproduct": ("inner_product_param", "bias_filler", "copy")},
    "pad": {"conv": ("convolution_param", "pad", "add"),
            "pool": ("pooling_param", "pad", "set")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size", "add"),
                   "pool": ("pooling_param", "kernel_size", "set")},
    "group": {"conv": ("convolution_param", "group", "set")},
    "stride": {"conv": ("convolution_param", "stride", "add"),
               "pool": ("pooling_param", "stride", "set")},
    "pool": {"pool": ("pooling_param", "pool", "set")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio", "set")},
    "local_size": {"lrn": ("lrn_param", "local_size", "set")},
    "alpha": {"lrn": ("lrn_param", "alpha", "set")},
    "beta": {"lrn": ("lrn_param", "beta", "set")},
    "k": {"lrn": ("lrn_param", "k", "set")},
    "source": {"data": ("data_param", "source", "set"),
               "hdf5_data": ("hdf5_data_param", "source", "set"),
               "images": ("image_data_param", "source", "set"),
               "window_data": ("window_data_param", "source", "set"),
               "infogain_loss": ("infogain_loss_param", "source", "set")},
    "batchsize": {"data": ("data_param", "batch_size", "set"),
                  "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                  "images": ("image_data_param", "batch_size", "set"),
                  "window_data": ("window_data_param", "batch_size", "set")},
    "rand_skip": {"data": ("data_param", "rand_skip", "set"),
                  "images": ("image_data_param", "rand_skip", "set")},
    "shuffle_images": {"images": ("image_data_param", "shuffle", "set")},
    "new_height": {"images": ("image_data_param", "new_height", "set")},
    "new_width": {"images": ("image_data_param", "new_width", "set")},
    "concat_dim": {"concat": ("concat_param", "concat_dim", "set")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold", "set")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold", "set")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction", "set")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad", "set")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode", "set")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None, "copy")},
}
_V0_TRANSFORM_MAP = (("scale", "scale"), ("meanfile", "mean_file"),
                     ("cropsize", "crop_size"), ("mirror", "mirror"))


def _upgrade_v0_layer(conn, out, index, problem):
    """One V1LayerParameter holding a V0 ``layer`` -> a plain V1 layer."""
    out.Clear()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        # Caffe keeps only bottom/top here, losing the layer's definition.
        problem(f"{_describe(conn.name, index)}: V1 layer definition inside a V0 net "
                "(V0 upgrade keeps only its bottoms and tops)")
        return
    v0 = conn.layer
    desc = _describe(v0.name, index)
    if v0.HasField("name"):
        out.name = v0.name
    vtype = v0.type
    if v0.HasField("type"):
        if vtype not in V0_TYPE_NAMES:
            raise ValueError(f"{desc}: unknown V0 layer type '{vtype}'")
        out.type = _V1.LayerType.Value(V0_TYPE_NAMES[vtype])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    for v0_field, targets in _V0_FIELD_MAP.items():
        if not v0.HasField(v0_field):
            continue
        target = targets.get(vtype)
        if target is None:
            problem(f"{desc}: V0 parameter '{v0_field}' is not valid for layer type '{vtype}'")
            continue
        sub_name, field, kind = target
        sub = getattr(out, sub_name)
        value = getattr(v0, v0_field)
        if kind == "copy":
            (getattr(sub, field) if field else sub).CopyFrom(value)
        elif kind == "add":
            getattr(sub, field).append(value)
        elif v0_field == "pool":
            # V0 and Pooling enums share names and numbers.
            name = caffe_pb2.V0LayerParameter.PoolMethod.Name(value)
            sub.pool = caffe_pb2.PoolingParameter.PoolMethod.Value(name)
        else:
            setattr(sub, field, value)
    for v0_field, field in _V0_TRANSFORM_MAP:
        if v0.HasField(v0_field):
            setattr(out.transform_param, field, getattr(v0, v0_field))


def _upgrade_v0_net(net_param, problem):
    padded = _upgrade_v0_padding_layers(net_param)
    net_param.Clear()
    if padded.HasField("name"):
        net_param.name = padded.name
    for i, conn in enumerate(padded.layers):
        _upgrade_v0_layer(conn, net_param.layers.add(), i, problem)
    net_param.input.extend(padded.input)
    net_param.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        net_param.force_backward = padded.force_backward


# ---------------------------------------------------------------------------
# Deprecated data transformation fields
# ---------------------------------------------------------------------------

def _upgrade_data_transformation(net_param):
    for layer in net_param.layers:
        field = _DATA_PARAM_OF_V1_TYPE.get(layer.type)
        if field is None:
            continue
        sub = getattr(layer, field)
        for name in _TRANSFORM_FIELDS:
            if sub.HasField(name):
                setattr(layer.transform_param, name, getattr(sub, name))
                sub.ClearField(name)


def _warn_ignored_v2_transform_fields(net_param):
    # Caffe moves these only for V1 layers; in a V2 net it ignores them.
    # WindowData is left out: Caffe reads its scale there, and our layer the others too.
    for i, layer in enumerate(net_param.layer):
        field = _V2_DATA_PARAM_OF_TYPE.get(layer.type)
        if field is None or layer.type == "WindowData" or not layer.HasField(field):
            continue
        sub = getattr(layer, field)
        stale = [name for name in _TRANSFORM_FIELDS if sub.HasField(name)]
        if stale:
            log.warning("%s: deprecated %s.%s ignored (as in Caffe); "
                        "set them in transform_param", _describe(layer.name, i),
                        field, "/".join(stale))


# ---------------------------------------------------------------------------
# V1 -> V2
# ---------------------------------------------------------------------------

_V1_PARAM_FIELDS = tuple(
    f.name for f in _V1.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.message_type is not None
)


def _upgrade_v1_layer(v1, out, index, registry, problem):
    desc = _describe(v1.name, index)
    out.Clear()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = v1_type_name(v1.type, desc, registry)
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        mode_name = _V1.DimCheckMode.Name(mode)
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(mode_name)
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for field in _V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(out, field).CopyFrom(getattr(v1, field))
    if v1.HasField("layer"):
        problem(f"{desc}: still holds a V0 layer definition, which is ignored")


def _upgrade_v1_net(net_param, problem):
    if len(net_param.layer) > 0:
        problem("net mixes 'layer' and deprecated 'layers' fields; "
                "the 'layer' entries are dropped by the upgrade")
    v1_layers = list(net_param.layers)
    registry = _registry_v1_names() if v1_layers else {}
    upgraded = []
    for i, v1 in enumerate(v1_layers):
        layer = caffe_pb2.LayerParameter()
        _upgrade_v1_layer(v1, layer, i, registry, problem)
        upgraded.append(layer)
    net_param.ClearField("layers")
    net_param.ClearField("layer")
    net_param.layer.extend(upgraded)


# ---------------------------------------------------------------------------
# Net inputs -> Input layer
# ---------------------------------------------------------------------------

def _upgrade_net_input(net_param):
    has_shape = len(net_param.input_shape) > 0
    has_dim = len(net_param.input_dim) > 0
    if has_shape or has_dim:
        names = list(net_param.input)
        if has_shape and len(net_param.input_shape) < len(names):
            raise ValueError(f"net declares {len(names)} inputs but only "
                             f"{len(net_param.input_shape)} input_shape entries")
        if not has_shape and len(net_param.input_dim) < 4 * len(names):
            raise ValueError(f"net declares {len(names)} inputs, which need "
                             f"{4 * len(names)} input_dim values, but has "
                             f"{len(net_param.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(names):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net_param.input_shape[i])
            else:
                shape.dim.extend(net_param.input_dim[4 * i:4 * i + 4])
        rest = list(net_param.layer)
        net_param.ClearField("layer")
        net_param.layer.append(layer)
        net_param.layer.extend(rest)
    net_param.ClearField("input")
    net_param.ClearField("input_shape")
    net_param.ClearField("input_dim")


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------

def _upgrade_net_batchnorm(net_param):
    for layer in net_param.layer:
        if _is_old_batchnorm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def upgrade_net(net_param, source_name: str = "", strict: bool = True) -> bool:
    """Upgrade a NetParameter in place, as Caffe's UpgradeNetAsNeeded.

    Returns True if anything was changed.  `source_name` (a file name) is
    only used in log messages.  Raises ValueError naming the layer when the
    net cannot be upgraded (and, with `strict`, when Caffe would continue with
    a partly upgraded net).
    """
    problem = _Problems(strict)
    where = source_name or "<net>"
    changed = False
    if net_needs_v0_to_v1_upgrade(net_param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V0LayerParameter: %s", where)
        _upgrade_v0_net(net_param, problem)
        log.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        changed = True
    if net_needs_data_upgrade(net_param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "transformation parameters: %s", where)
        _upgrade_data_transformation(net_param)
        log.info("Successfully upgraded file specified using deprecated "
                 "data transformation parameters.")
        changed = True
    if net_needs_v1_to_v2_upgrade(net_param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V1LayerParameter: %s", where)
        _upgrade_v1_net(net_param, problem)
        log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
        changed = True
    if net_needs_input_upgrade(net_param):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "input fields: %s", where)
        _upgrade_net_input(net_param)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        changed = True
    if net_needs_batchnorm_upgrade(net_param):
        log.info("Attempting to upgrade batch norm layers using deprecated params: %s", where)
        _upgrade_net_batchnorm(net_param)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
        changed = True
    _warn_ignored_v2_transform_fields(net_param)
    return changed


def solver_needs_upgrade(solver_param) -> bool:
    return solver_param.HasField("solver_type")


def upgrade_solver(solver_param, source_name: str = "") -> bool:
    """Replace the deprecated ``solver_type`` enum by the ``type`` string, in place.

    Returns True if anything was changed.  Raises ValueError when both
    ``solver_type`` and ``type`` are given (Caffe refuses that too).
    """
    if not solver_needs_upgrade(solver_param):
        return False
    where = source_name or "<solver>"
    if solver_param.HasField("type"):
        raise ValueError(f"{where}: failed to upgrade solver: the deprecated 'solver_type' "
                         "(enum) and 'type' (string) fields cannot both be specified")
    log.info("Attempting to upgrade input file specified using deprecated "
             "'solver_type' field (enum)': %s", where)
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver_param.solver_type)
    solver_param.type = SOLVER_TYPE_NAMES[enum_name]
    solver_param.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' "
             "field (enum) to 'type' field (string).")
    return True


def upgrade_snapshot_prefix(solver_param, param_file: str) -> bool:
    """Caffe master's snapshot_prefix defaulting (UpgradeSnapshotPrefixProperty).

    Unset: the solver file's path without its extension.  A directory: that
    directory joined with the solver file's stem.  Returns True if changed.
    Separate from `upgrade_solver` because it depends on the file name and
    the file system.
    """
    if not solver_param.HasField("snapshot_prefix"):
        solver_param.snapshot_prefix = os.path.splitext(param_file)[0]
        log.info("snapshot_prefix was not specified and is set to %s",
                 solver_param.snapshot_prefix)
        return True
    if os.path.isdir(solver_param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(param_file))[0]
        solver_param.snapshot_prefix = os.path.join(solver_param.snapshot_prefix, stem)
        log.info("snapshot_prefix was a directory and is replaced to %s",
                 solver_param.snapshot_prefix)
        return True
    return False
