"""BlobProto <-> arrays: the shapes a BlobProto describes (new `shape` or legacy 4-D), its values as an
array, and arrays written as packed wire bytes (Caffe's Blob::FromProto / ToProto)."""
import numpy as np

from .. import backend
from . import caffe_pb2


def blob_proto_shape(proto):
    """The shape a BlobProto describes (new `shape` field or legacy 4-D)."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.double_data) or len(proto.data),)


def _legacy_shape(shape):
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + tuple(shape)


def blob_shape_matches(shape, proto):
    """Caffe's Blob::ShapeEquals: legacy 4-D protos match any shape padded with leading 1s."""
    if not proto.HasField("shape") and any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return _legacy_shape(shape) == (proto.num, proto.channels, proto.height, proto.width)
    return tuple(shape) == blob_proto_shape(proto)


def blob_proto_to_array(proto, want_diff=False):
    values = (proto.double_diff or proto.diff) if want_diff else (proto.double_data or proto.data)
    dtype = np.float64 if (proto.double_diff if want_diff else proto.double_data) else np.float32
    array = np.asarray(values, dtype=dtype)
    shape = blob_proto_shape(proto)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"BlobProto holds {array.size} values for shape {shape}")
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


def array_to_blob_proto(array, diff=None):
    """A BlobProto with the new-style shape; float64 arrays go to double_data."""
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(int(d) for d in array.shape)
    double = np.dtype(array.dtype) == np.float64
    names, dtype = (("double_data", "double_diff"), np.float64) if double else (("data", "diff"), np.float32)
    payload = _packed(names[0], array, dtype)
    if diff is not None:
        payload += _packed(names[1], diff, dtype)
    proto.MergeFromString(payload)
    return proto
