"""The model zoo and transfer learning.

- `architectures`: the zoo's nets as code (train_val, deploy, solver per model).
- `manifest`: model folders and their readme front matter (BVLC's format).
- `fetch`: weights downloaded or copied, checked against the readme's sha1.
- `surgery`: copy weights by layer name, freeze, lr multipliers, fc -> conv,
  input channels.
- `convert`: .caffemodel <-> .npz, Caffe's upgrade tools.
- `onnx_export`: deploy nets to ONNX.  `features`: extract blobs to npz/LMDB.

    from pycaffe_lite import zoo
    zoo.list_models()                       # [ZooModel]
    zoo.fetch_weights("bvlc_alexnet", source="bvlc_alexnet.caffemodel")
    report = zoo.transplant(net, ["bvlc_reference_caffenet.caffemodel"])
"""
from .fetch import ChecksumError, fetch_weights, sha1_of
from .manifest import ZooModel, default_root, get_model, list_models, parse_front_matter


def count_params(net, learnable_only=True):
    """Parameters of a built Net, as papers count them.

    BatchNorm's blobs (mean, variance, moving-average factor) are statistics,
    not learned weights, and are left out unless `learnable_only=False`.
    Shared parameters are counted once.
    """
    seen, total = set(), 0
    for layer in net.layers:
        if learnable_only and layer.type == "BatchNorm":
            continue
        for blob in layer.blobs:
            if id(blob) not in seen:
                seen.add(id(blob))
                total += blob.count
    return total


def __getattr__(name):
    # Heavier parts load on first use (surgery and converters import the Net).
    if name in ("transplant", "freeze", "freeze_below", "apply_lr_mult", "fc_to_conv",
                "set_input_channels", "SurgeryReport"):
        from . import surgery
        return getattr(surgery, name)
    if name in ("caffemodel_to_npz", "npz_to_caffemodel", "upgrade_net_proto_text",
                "upgrade_net_proto_binary", "upgrade_solver_proto_text"):
        from . import convert
        return getattr(convert, name)
    if name in ("extract_features", "save_features"):
        from . import features
        return getattr(features, name)
    if name in ("to_onnx", "save_onnx"):
        from . import onnx_export
        return getattr(onnx_export, name)
    raise AttributeError(f"module 'pycaffe_lite.zoo' has no attribute '{name}'")


__all__ = ["ChecksumError", "ZooModel", "count_params", "default_root", "fetch_weights", "get_model",
           "list_models", "parse_front_matter", "sha1_of"]
