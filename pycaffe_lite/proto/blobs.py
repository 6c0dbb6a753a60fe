"""BlobProto <-> arrays: the shapes a BlobProto describes (new `shape` or legacy 4-D), its values as an
array, and arrays written as packed wire bytes (Caffe's Blob::FromProto / ToProto).  Values are read from
double_data, data, then NVCaffe's raw_data (FLOAT16 / FLOAT / DOUBLE little-endian bytes, the form of
NVCaffe's and OpenCV's shrinkCaffeModel's fp16 files), in NVCaffe's order; this is the one place a
BlobProto becomes an array.  A binary layer's weights may be stored as sign bits instead (our
packed_signs / packed_scale fields, 32x smaller): `signs_to_blob_proto` writes them,
`blob_proto_to_array` reads them back as scale * (+-1)."""
import numpy as np

from .. import backend
from ..io_utils import FormatError
from . import caffe_pb2
from .types import RAW_LAYOUTS, decode_raw, encode_raw

_LEGACY = ("num", "channels", "height", "width")


def _has_legacy_shape(proto):
    return any(proto.HasField(f) for f in _LEGACY)


def _fields(want_diff):
    """(double, float, raw, raw type) field names of a BlobProto's data or diff."""
    return ("double_diff", "diff", "raw_diff", "raw_diff_type") if want_diff else \
        ("double_data", "data", "raw_data", "raw_data_type")


def _stored_count(proto):
    """How many data values a BlobProto holds (for one with neither shape nor legacy dims)."""
    if len(proto.double_data) or len(proto.data) or not proto.HasField("raw_data"):
        return len(proto.double_data) or len(proto.data)
    layout = RAW_LAYOUTS.get(proto.raw_data_type)
    return len(proto.raw_data) // layout.itemsize if layout else 0


def blob_proto_shape(proto):
    """The shape a BlobProto describes: legacy 4-D when any of num/channels/height/width is set,
    else `shape` (Caffe's Blob::FromProto decides in that order)."""
    if _has_legacy_shape(proto):
        return (proto.num, proto.channels, proto.height, proto.width)
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    return (_stored_count(proto),)


def _legacy_shape(shape):
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + tuple(shape)


def blob_shape_matches(shape, proto):
    """Caffe's Blob::ShapeEquals: legacy 4-D protos match any shape padded with leading 1s."""
    if _has_legacy_shape(proto):
        return _legacy_shape(shape) == (proto.num, proto.channels, proto.height, proto.width)
    return tuple(shape) == blob_proto_shape(proto)


def _values(proto, want_diff, count):
    """A BlobProto's data (or diff) as a flat array: double_*, then the float field, then raw_*."""
    double, single, raw, raw_type = _fields(want_diff)
    if len(getattr(proto, double)):
        return np.asarray(getattr(proto, double), np.float64)
    if len(getattr(proto, single)) or not proto.HasField(raw):
        return np.asarray(getattr(proto, single), np.float32)
    if not proto.HasField(raw_type):
        raise FormatError(f"BlobProto holds {raw} but no {raw_type} (NVCaffe requires the type with the bytes)")
    return decode_raw(getattr(proto, raw), getattr(proto, raw_type), count, raw)


def blob_proto_to_array(proto, want_diff=False):
    """A BlobProto's data (or diff) as an array of its shape: float64 from double_*, float32 from
    data / diff, the raw type's own dtype from raw_* (float16 for FLOAT16); the number of values is
    checked against the shape (raw bytes before they are decoded)."""
    if proto.HasField("packed_signs"):
        if want_diff:
            raise ValueError(f"BlobProto of shape {blob_proto_shape(proto)} holds packed signs, no diff")
        return packed_signs_to_array(proto)
    shape = blob_proto_shape(proto)
    count = int(np.prod(shape, dtype=np.int64))
    array = _values(proto, want_diff, count)
    if array.size != count:
        raise FormatError(f"BlobProto holds {array.size} values for shape {shape}")
    return array.reshape(shape)


def _varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packed(field, array, dtype):
    """The wire bytes of a packed repeated float/double field: far faster than extend()
    for the millions of weights of a real net (protobuf copies the bytes as they are)."""
    raw = np.ascontiguousarray(backend.to_numpy(array), dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    number = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name[field].number
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def array_to_blob_proto(array, diff=None, raw_type=None):
    """A BlobProto with the new-style shape; float64 arrays go to double_data.  With `raw_type`
    (a caffe_pb2 Type: FLOAT16, FLOAT, DOUBLE) the values go to NVCaffe's raw_data (and raw_diff)
    as little-endian bytes of that type instead."""
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(int(d) for d in array.shape)
    if raw_type is not None:
        proto.raw_data_type, proto.raw_data = raw_type, encode_raw(backend.to_numpy(array), raw_type)
        if diff is not None:
            proto.raw_diff_type, proto.raw_diff = raw_type, encode_raw(backend.to_numpy(diff), raw_type)
        return proto
    double = np.dtype(array.dtype) == np.float64
    names, dtype = (("double_data", "double_diff"), np.float64) if double else (("data", "diff"), np.float32)
    payload = _packed(names[0], array, dtype)
    if diff is not None:
        payload += _packed(names[1], diff, dtype)
    proto.MergeFromString(payload)
    return proto


# ---- packed signs (pycaffe_lite extension, issue 19) ---------------------------------
def signs_to_blob_proto(positive, scale=None, scale_axis=0):
    """A BlobProto holding sign bits (1 where `positive`, i.e. w >= 0) and optional scales
    along `scale_axis` (one per output of a binary layer)."""
    positive = np.asarray(backend.to_numpy(positive), dtype=bool)
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(int(d) for d in positive.shape)
    proto.packed_signs = np.packbits(positive.reshape(-1), bitorder="little").tobytes()
    if scale is not None:
        proto.packed_scale.extend(np.asarray(backend.to_numpy(scale), np.float32).reshape(-1).tolist())
        proto.packed_scale_axis = int(scale_axis)
    return proto


def packed_signs_to_array(proto):
    """scale * (+-1) from a packed BlobProto, float32, checked against its shape."""
    shape = blob_proto_shape(proto)
    count = int(np.prod(shape))
    raw = np.frombuffer(proto.packed_signs, np.uint8)
    if raw.size != (count + 7) // 8:
        raise ValueError(f"BlobProto packed_signs holds {raw.size} bytes for shape {shape}; "
                         f"expected {(count + 7) // 8}")
    values = np.unpackbits(raw, count=count, bitorder="little").astype(np.float32) * 2 - 1
    values = values.reshape(shape)
    scale = np.asarray(proto.packed_scale, np.float32)
    if scale.size:
        axis = proto.packed_scale_axis
        if not 0 <= axis < len(shape) or scale.size not in (1, shape[axis]):
            raise ValueError(f"BlobProto of shape {shape} has {scale.size} packed_scale values along "
                             f"axis {axis}; expected 1 or one per index of that axis")
        view = [1] * len(shape)
        view[axis] = -1
        values *= scale.reshape(view)
    return values
