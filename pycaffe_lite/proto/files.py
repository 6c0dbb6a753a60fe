"""Caffe's files read into messages: prototxt (text) and binary protos, nets and trained weights
upgraded from legacy formats as Caffe's ReadNetParamsFrom*OrDie, solvers as ReadSolverParamsFromTextFileOrDie.
Errors are FormatError (io_utils) naming the file (and, for text, the line and column); a missing file
is a MissingFileError, which is also a FileNotFoundError.  Only regular files and pipes are read
(io_utils.read_file), and a prototxt setting that must be a finite number is refused if it is not."""
import math
import os
import re

from google.protobuf import message as _message
from google.protobuf.descriptor import FieldDescriptor

from ..io_utils import FormatError, read_file
from . import caffe_pb2, upgrade
from .text import parse_text

_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
# Settings where an infinity means something in Caffe (a clip bound that is not there); NaN never does.
INFINITE_ALLOWED = {"ClipParameter.min", "ClipParameter.max", "ThresholdParameter.threshold"}
# Values, not settings: weights written into a prototxt are checked where they are used, if at all.
_NOT_SETTINGS = ("BlobProto",)


def read_text_proto(path, message, what="prototxt"):
    """Parse a text-format protobuf file; errors name the file, line and column."""
    text = read_file(path, binary=False, what=what)
    parse_text(text, message, path)
    check_finite(message, path, text)
    return message


def read_binary_proto(path, message, what=None):
    payload = read_file(path, binary=True, what=what or f"binary {message.DESCRIPTOR.name}")
    try:
        message.ParseFromString(payload)
    except (_message.DecodeError, RecursionError, ValueError) as exc:
        raise FormatError(f"{path}: not a binary {message.DESCRIPTOR.name} ({exc})", path) from None
    return message


def check_finite(message, source="<NetParameter>", text=None):
    """Refuse a NaN or infinite setting (lr_mult, base_lr, a filler's value, ...): Caffe's arithmetic
    with it poisons every weight.  The error names the field's path, and its line when `text` is given."""
    for path, field, value in _float_settings(message, message.DESCRIPTOR.name):
        if math.isfinite(value):
            continue
        where = f"{field.containing_type.name}.{field.name}"
        if math.isinf(value) and where in INFINITE_ALLOWED:
            continue
        line = _line_of(text, field.name) if text is not None else None
        at = f"{source}:{line}" if line else source
        raise FormatError(f"{at}: {path} = {value}: must be a finite number", source, line, path)


def _float_settings(message, path):
    """(field path, field, value) of every float or double set in `message` and its sub-messages."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.name in _NOT_SETTINGS:
                continue
            items = value if field.is_repeated else [value]
            for i, item in enumerate(items):
                label = _item_label(item, i) if field.is_repeated else ""
                yield from _float_settings(item, name + label)
        elif field.type in _FLOATS:
            values = value if field.is_repeated else [value]
            for i, number in enumerate(values):
                yield (f"{name}[{i}]" if field.is_repeated else name), field, number


def _item_label(item, index):
    name = getattr(item, "name", "") if "name" in item.DESCRIPTOR.fields_by_name else ""
    return f"['{name}']" if name else f"[{index}]"


def _line_of(text, field_name):
    pattern = re.compile(rf"\b{re.escape(field_name)}\s*:\s*[-+]?(inf|nan)", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def upgraded_net(param, source):
    """`param`, upgraded in place from legacy formats if it needs it (Caffe's UpgradeNetAsNeeded)."""
    if upgrade.net_needs_upgrade(param):
        try:
            upgrade.upgrade_net(param, str(source))
        except FormatError:
            raise
        except ValueError as exc:
            raise FormatError(f"{source}: {exc}", str(source)) from None
    return param


def read_net_param(path):
    """A NetParameter from a prototxt, upgraded from legacy formats."""
    path = os.fspath(path)
    return upgraded_net(read_text_proto(path, caffe_pb2.NetParameter(), "model definition (prototxt)"), path)


def read_solver_param(path):
    param = read_text_proto(os.fspath(path), caffe_pb2.SolverParameter(), "solver definition (prototxt)")
    upgrade.upgrade_solver(param)
    return param


def read_weights(path):
    """A trained NetParameter (.caffemodel), upgraded from legacy formats."""
    path = os.fspath(path)
    return upgraded_net(read_binary_proto(path, caffe_pb2.NetParameter(), "weights file (.caffemodel)"), path)
