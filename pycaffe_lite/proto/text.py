"""Protobuf text format: read with errors naming the source, written exactly as BVLC Caffe writes it.

Caffe's tools (`upgrade_net_proto_text`, `WriteProtoToTextFile`) print
messages with C++ `google::protobuf::TextFormat`: fields in field-number
order, two-space indentation, enums by name, strings C-escaped, and floats
with `SimpleFtoa` (`%.6g`, or `%.9g` when six digits do not read back as
the same float), so `lr_mult: 1`, never `lr_mult: 1.0`.  Python's
`text_format` prints floats differently; this printer reproduces Caffe's
bytes, so that a file we upgrade or generate diffs cleanly against one Caffe
wrote.
"""
import math
import struct

from google.protobuf import descriptor, text_encoding, text_format

from ..io_utils import FormatError, atomic_write, decode_utf8

_FD = descriptor.FieldDescriptor


def _float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def format_float(value):
    """C++ protobuf's SimpleFtoa for a float field."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = "%.6g" % value
    if _float32(float(text)) != _float32(value):
        text = "%.9g" % value
    return text


def format_double(value):
    """C++ protobuf's SimpleDtoa for a double field."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = "%.15g" % value
    if float(text) != value:
        text = "%.17g" % value
    return text


def _scalar(field, value):
    kind = field.type
    if kind == _FD.TYPE_FLOAT:
        return format_float(value)
    if kind == _FD.TYPE_DOUBLE:
        return format_double(value)
    if kind == _FD.TYPE_BOOL:
        return "true" if value else "false"
    if kind == _FD.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else str(value)
    if kind == _FD.TYPE_STRING:
        return '"' + text_encoding.CEscape(value, as_utf8=False) + '"'
    if kind == _FD.TYPE_BYTES:
        return '"' + text_encoding.CEscape(value, as_utf8=False) + '"'
    return str(value)


def _is_repeated(field):
    # protobuf >= 5 (upb) has `is_repeated`; older releases only `label`.
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == _FD.LABEL_REPEATED


def _print(message, indent, out):
    pad = "  " * indent
    for field, value in message.ListFields():
        repeated = _is_repeated(field)
        values = value if repeated else [value]
        for item in values:
            if field.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP):
                out.append(f"{pad}{field.name} {{\n")
                _print(item, indent + 1, out)
                out.append(f"{pad}}}\n")
            else:
                out.append(f"{pad}{field.name}: {_scalar(field, item)}\n")


def to_text(message, header=None):
    """The message in Caffe's text format (what `caffe` itself would write).

    `header` (optional) is written first as `#` comment lines.
    """
    out = []
    if header:
        out.extend(f"# {line}".rstrip() + "\n" for line in header.strip("\n").split("\n"))
    _print(message, 0, out)
    return "".join(out)


def write_text(path, message, header=None):
    """Write `message` to `path` in Caffe's text format, atomically."""
    payload = to_text(message, header).encode("utf-8")
    with atomic_write(path, "wb") as handle:
        handle.write(payload)


def parse_text(text, message, source="<string>"):
    """Merge prototxt `text` into `message`; errors (FormatError) name the source and line."""
    if isinstance(text, (bytes, bytearray)):
        text = decode_utf8(bytes(text), source)
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        raise FormatError(f"{source}:{exc}", source, exc.GetLine()) from None
    except (ValueError, RecursionError) as exc:   # protobuf's own checks that are not ParseErrors
        raise FormatError(f"{source}: {exc}", source) from None
    return message

