"""Converters: .caffemodel <-> NumPy .npz, and Caffe's upgrade tools.

The .npz holds one array per parameter blob, keyed `<layer>/<index>`
(`conv1/0` the weights, `conv1/1` the bias), float32 or float64 as stored.
It is read with `np.load(..., allow_pickle=False)`: a file from anywhere
cannot run code.

    caffemodel_to_npz("lenet.caffemodel", "lenet.npz")
    npz_to_caffemodel("lenet.npz", "lenet.caffemodel", model="lenet.prototxt")

The upgrade functions mirror Caffe's tools of the same names
(`upgrade_net_proto_text`, `upgrade_net_proto_binary`,
`upgrade_solver_proto_text`) over `pycaffe_lite.proto.upgrade`.
"""
import collections
import logging
import os
import zipfile

import numpy as np

from ..io_utils import atomic_write, write_bytes_atomic
from ..layer import layer_class
from ..proto import caffe_pb2, upgrade
from ..proto.blobs import array_to_blob_proto, blob_proto_to_array
from ..proto.files import read_binary_proto, read_text_proto, read_weights
from ..proto.text import to_text

log = logging.getLogger("pycaffe_lite")


# ---------------------------------------------------------------------------- weights as arrays
def weights_to_arrays(weights):
    """OrderedDict layer name -> [arrays] from a .caffemodel path or a NetParameter."""
    param = weights if isinstance(weights, caffe_pb2.NetParameter) else read_weights(os.fspath(weights))
    out = collections.OrderedDict()
    for layer in param.layer:
        if not layer.blobs:
            continue
        if layer.name in out:
            raise ValueError(f"{weights}: two layers named '{layer.name}' hold weights")
        try:
            out[layer.name] = [blob_proto_to_array(b) for b in layer.blobs]
        except ValueError as exc:
            raise ValueError(f"{weights}: layer '{layer.name}': {exc}") from None
    return out


def arrays_to_weights(arrays, model=None, name=None):
    """A NetParameter holding `arrays` (layer -> [arrays]).

    With `model` (a prototxt path or NetParameter), each layer's definition is
    copied from it, in its order, as Caffe's `net.save` writes them; layers of
    `arrays` the model lacks are an error. Without one, layers carry only their
    name and blobs, which is all Caffe's `copy_from` reads.
    """
    out = caffe_pb2.NetParameter()
    remaining = collections.OrderedDict(arrays)
    if model is not None:
        net = model if isinstance(model, caffe_pb2.NetParameter) else read_text_proto(
            os.fspath(model), caffe_pb2.NetParameter())
        if upgrade.net_needs_upgrade(net):
            upgrade.upgrade_net(net)
        out.name = net.name
        seen = set()
        for layer in net.layer:
            if layer.name in seen:     # TRAIN/TEST twins of data layers: keep the first
                continue
            seen.add(layer.name)
            entry = out.layer.add()
            entry.CopyFrom(layer)
            del entry.blobs[:]
            for array in remaining.pop(layer.name, []):
                entry.blobs.add().CopyFrom(array_to_blob_proto(np.asarray(array)))
        if remaining:
            raise ValueError(f"{model}: no layer named {', '.join(repr(k) for k in remaining)} "
                             "to hold those weights")
    else:
        out.name = name or ""
        for layer_name, blobs in remaining.items():
            entry = out.layer.add(name=layer_name)
            for array in blobs:
                entry.blobs.add().CopyFrom(array_to_blob_proto(np.asarray(array)))
    return out


def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _built_param_shapes(net_param, names):
    """{layer: [shapes]} from building the net with cheap fillers (TEST, then TRAIN for the rest)."""
    from ..net import build_net_for_shapes
    shapes = {}
    for phase in (caffe_pb2.TEST, caffe_pb2.TRAIN):
        if not set(names) - set(shapes):
            break
        net = build_net_for_shapes(net_param, phase=phase)
        for name, layer in zip(net.layer_names, net.layers):
            shapes.setdefault(name, [tuple(b.shape) for b in layer.blobs])
    return shapes


def check_param_shapes(arrays, model, origin=None, model_path=None):
    """Raise ValueError unless each layer's arrays have the number and shapes of the blobs of
    `model` (a NetParameter), as Caffe's Net::CopyTrainedLayersFrom requires.

    The net is built to know every shape; when it cannot be (say its LMDBs are
    not here), the blob counts and the dimensions its layer definitions fix
    (num_output, kernel) are checked, and a note says so in the log.
    """
    origin = origin or "the weights"
    where = model_path or model.name or "the model"
    definitions = {}
    for layer in model.layer:
        definitions.setdefault(layer.name, layer)
    try:
        expected = _built_param_shapes(model, [n for n in arrays if n in definitions])
        exact = True
    except (ValueError, RuntimeError, OSError, KeyError, ImportError, NotImplementedError) as exc:
        log.info("%s: cannot build the net (%s); checking blob counts and the shapes its layer "
                 "definitions fix", where, exc)
        expected, exact = {}, False
    for name, blobs in arrays.items():
        if name not in definitions:
            continue
        definition = definitions[name]
        target = expected[name] if name in expected else layer_class(definition.type, name).param_shapes(definition)
        if len(blobs) != len(target):
            raise ValueError(f"{origin}: incompatible number of blobs for layer '{name}': source has "
                             f"{len(blobs)}, target ({where}) {len(target)}")
        for j, (array, shape) in enumerate(zip(blobs, target)):
            source = tuple(np.shape(array))
            if shape is None:
                continue
            if len(source) != len(shape) or any(t is not None and t != s for s, t in zip(source, shape)):
                raise ValueError(f"{origin}: Cannot copy param {j} weights from layer '{name}'; shape "
                                 f"mismatch. Source param shape is {_shape_text(source)}; target param "
                                 f"shape is {_shape_text(shape)} ({where}"
                                 f"{'' if exact else ', ? where it depends on the input'}).")


# ---------------------------------------------------------------------------- npz
def save_npz(arrays, path):
    """Write layer -> [arrays] as an .npz keyed `layer/index`, atomically."""
    flat = collections.OrderedDict()
    for layer_name, blobs in arrays.items():
        for index, array in enumerate(blobs):
            flat[f"{layer_name}/{index}"] = np.asarray(array)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **flat)
    return path


def load_npz(path):
    """layer -> [arrays] from an .npz keyed `layer/index` (no pickles allowed)."""
    try:
        archive = np.load(os.fspath(path), allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a NumPy .npz archive ({exc})") from None
    grouped = collections.OrderedDict()
    with archive:
        for key in archive.files:
            layer_name, sep, index = key.rpartition("/")
            if not sep or not index.isdigit():
                raise ValueError(f"{path}: key '{key}' is not '<layer>/<index>'")
            array = archive[key]
            if array.dtype.kind != "f":
                raise ValueError(f"{path}: '{key}' holds {array.dtype} values; weights are floats")
            grouped.setdefault(layer_name, {})[int(index)] = array
    out = collections.OrderedDict()
    for layer_name, by_index in grouped.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{path}: layer '{layer_name}' has blobs {sorted(by_index)}; "
                             f"expected 0..{len(by_index) - 1}")
        out[layer_name] = [by_index[i] for i in range(len(by_index))]
    return out


def caffemodel_to_npz(weights, out_path):
    arrays = weights_to_arrays(weights)
    save_npz(arrays, out_path)
    return arrays


def _read_model(model):
    """A private, upgraded copy of a prototxt path or NetParameter."""
    net = caffe_pb2.NetParameter()
    if isinstance(model, caffe_pb2.NetParameter):
        net.CopyFrom(model)
    else:
        net = read_text_proto(os.fspath(model), net)
    if upgrade.net_needs_upgrade(net):
        upgrade.upgrade_net(net)
    return net


def npz_to_caffemodel(npz_path, out_path, model=None):
    """Write the .npz's arrays as a .caffemodel. With `model`, every layer must be in it with the
    number and shapes of blobs its net has (checked before anything is written)."""
    arrays = load_npz(npz_path)
    param = arrays_to_weights(arrays, model=model)
    if model is not None:
        check_param_shapes(arrays, _read_model(model), origin=os.fspath(npz_path),
                           model_path=None if isinstance(model, caffe_pb2.NetParameter) else os.fspath(model))
    write_bytes_atomic(out_path, param.SerializeToString())
    return param


def convert(in_path, out_path, model=None):
    """Convert by extension: .caffemodel -> .npz, .npz -> .caffemodel."""
    src, dst = os.fspath(in_path).lower(), os.fspath(out_path).lower()
    if src.endswith(".npz") and not dst.endswith(".npz"):
        return npz_to_caffemodel(in_path, out_path, model=model)
    if dst.endswith(".npz") and not src.endswith(".npz"):
        return caffemodel_to_npz(in_path, out_path)
    raise ValueError(f"convert {in_path} -> {out_path}: one side must be .npz and the other "
                     "a .caffemodel (or OUT.onnx with --model)")


# ---------------------------------------------------------------------------- packed binary weights
def save_packed(net, out_path):
    """Write `net`'s weights with its binary layers' weights as sign bits (Net.save(packed=True));
    returns [(layer, float32 bytes, packed bytes)] for the blobs written packed."""
    net.save(out_path, packed=True)
    written = read_weights(os.fspath(out_path))
    report = []
    for layer in written.layer:
        for blob in layer.blobs:
            if blob.HasField("packed_signs"):
                count = int(np.prod(blob.shape.dim))
                report.append((layer.name, 4 * count, len(blob.packed_signs) + 4 * len(blob.packed_scale)))
    return report


# ---------------------------------------------------------------------------- fp16 weights
FP16_MAX = float(np.finfo(np.float16).max)


def weights_to_fp16(in_path, out_path):
    """Write a .caffemodel's blobs as NVCaffe's raw FLOAT16 bytes (raw_data_type FLOAT16, as NVCaffe and
    OpenCV's shrinkCaffeModel write; half the size of float32), atomically.  A blob with a value beyond
    float16's range (|x| > 65504) stays float32 rather than turn to inf; packed binary blobs stay as they
    are.  Returns [(layer, blob index, bytes before, bytes after)] of every blob written."""
    param = read_weights(os.fspath(in_path))
    report = []
    for layer in param.layer:
        for j, blob in enumerate(layer.blobs):
            if blob.HasField("packed_signs"):
                continue
            try:
                array = blob_proto_to_array(blob)
            except ValueError as exc:
                raise ValueError(f"{in_path}: layer '{layer.name}' blob {j}: {exc}") from None
            before = blob.ByteSize()
            if array.size and float(np.max(np.abs(array))) > FP16_MAX:
                log.warning("%s: layer '%s' blob %d reaches %g, beyond float16's %g: kept as float32",
                            in_path, layer.name, j, float(np.max(np.abs(array))), FP16_MAX)
                blob.CopyFrom(array_to_blob_proto(array.astype(np.float32)))
            else:
                blob.CopyFrom(array_to_blob_proto(array, raw_type=caffe_pb2.FLOAT16))
            report.append((layer.name, j, before, blob.ByteSize()))
    write_bytes_atomic(out_path, param.SerializeToString())
    return report


# ---------------------------------------------------------------------------- Caffe's upgrade tools
def upgrade_net_proto_text(in_path, out_path):
    """Caffe's tools/upgrade_net_proto_text: read, upgrade, write text. Returns whether it changed."""
    param = read_text_proto(os.fspath(in_path), caffe_pb2.NetParameter())
    changed = upgrade.upgrade_net(param, os.fspath(in_path)) if upgrade.net_needs_upgrade(param) else False
    if not changed:
        log.info("File already in latest proto format: %s", in_path)
    write_bytes_atomic(out_path, to_text(param).encode("utf-8"))
    log.info("Wrote upgraded NetParameter text proto to %s", out_path)
    return changed


def upgrade_net_proto_binary(in_path, out_path):
    """Caffe's tools/upgrade_net_proto_binary (a .caffemodel from V0/V1 to the current format)."""
    param = read_binary_proto(os.fspath(in_path), caffe_pb2.NetParameter())
    changed = upgrade.upgrade_net(param, os.fspath(in_path)) if upgrade.net_needs_upgrade(param) else False
    if not changed:
        log.info("File already in latest proto format: %s", in_path)
    write_bytes_atomic(out_path, param.SerializeToString())
    log.info("Wrote upgraded NetParameter binary proto to %s", out_path)
    return changed


def upgrade_solver_proto_text(in_path, out_path):
    """Caffe's tools/upgrade_solver_proto_text (`solver_type` enum -> `type` string)."""
    param = read_text_proto(os.fspath(in_path), caffe_pb2.SolverParameter())
    changed = upgrade.upgrade_solver(param, os.fspath(in_path))
    if not changed:
        log.info("File already in latest proto format: %s", in_path)
    write_bytes_atomic(out_path, to_text(param).encode("utf-8"))
    log.info("Wrote upgraded SolverParameter text proto to %s", out_path)
    return changed
