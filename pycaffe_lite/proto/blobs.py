"""BlobProto <-> arrays: the shapes a BlobProto describes (new `shape` or legacy 4-D), its values as an
array, and arrays written as packed wire bytes (Caffe's Blob::FromProto / ToProto).  A binary layer's
weights may be stored as sign bits instead (our packed_signs / packed_scale fields, 32x smaller):
`signs_to_blob_proto` writes them, `blob_proto_to_array` reads them back as scale * (+-1)."""
import numpy as np

from .. import backend
from ..io_utils import FormatError
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
    if proto.HasField("packed_signs"):
        if want_diff:
            raise ValueError(f"BlobProto of shape {blob_proto_shape(proto)} holds packed signs, no diff")
        return packed_signs_to_array(proto)
    values = (proto.double_diff or proto.diff) if want_diff else (proto.double_data or proto.data)
    dtype = np.float64 if (proto.double_diff if want_diff else proto.double_data) else np.float32
    array = np.asarray(values, dtype=dtype)
    shape = blob_proto_shape(proto)
    if array.size != int(np.prod(shape)):
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
