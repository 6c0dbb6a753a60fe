"""NVCaffe's `Type` enum (storage and math types of blobs and layers) and the NumPy dtypes they name.

NVCaffe (NVIDIA/caffe 0.17) stores a blob's values as raw little-endian bytes of a Type
(BlobProto raw_data / raw_diff) and lets a net choose each layer's storage and math types;
this module is the one table between those Types and NumPy."""
import numpy as np

from ..io_utils import FormatError
from . import caffe_pb2

# The little-endian layout of each Type a BlobProto's raw bytes may hold.  bfloat16 (ours) is
# read as the high 16 bits of a float32, so it needs no bfloat16 dtype.
RAW_LAYOUTS = {
    caffe_pb2.DOUBLE: np.dtype("<f8"),
    caffe_pb2.FLOAT: np.dtype("<f4"),
    caffe_pb2.FLOAT16: np.dtype("<f2"),
    caffe_pb2.BFLOAT16: np.dtype("<u2"),
}

_TYPE_OF_DTYPE = {np.dtype(np.float64): caffe_pb2.DOUBLE, np.dtype(np.float32): caffe_pb2.FLOAT,
                  np.dtype(np.float16): caffe_pb2.FLOAT16}

# Higher precision first: NVCaffe's tpm() picks the more precise of two Types.
_PRECISION_ORDER = (caffe_pb2.DOUBLE, caffe_pb2.FLOAT, caffe_pb2.FLOAT16, caffe_pb2.BFLOAT16)


def type_name(value):
    """The Type's name as prototxts spell it (FLOAT16), or the number when it is none of ours."""
    try:
        return caffe_pb2.Type.Name(value)
    except ValueError:
        return str(value)


def type_of_dtype(dtype):
    """The Type a NumPy float dtype is (float32 -> FLOAT), None for one without a Type."""
    return _TYPE_OF_DTYPE.get(np.dtype(dtype))


def more_precise(a, b):
    """NVCaffe's tpm(a, b): the more precise of two Types (the default math of a storage type)."""
    rank = {t: i for i, t in enumerate(_PRECISION_ORDER)}
    return min(a, b, key=lambda t: rank.get(t, len(rank)))


def decode_raw(raw, raw_type, count, field="raw_data"):
    """`count` values from the raw bytes of a Type as a native-order array (FLOAT16 as float16,
    BFLOAT16 widened to float32); the byte count is checked before anything is decoded."""
    layout = RAW_LAYOUTS.get(raw_type)
    if layout is None:
        raise FormatError(f"BlobProto {field} holds {type_name(raw_type)} values; a blob's raw bytes can be "
                         f"{', '.join(type_name(t) for t in RAW_LAYOUTS)}")
    if len(raw) != count * layout.itemsize:
        raise FormatError(f"BlobProto {field} holds {len(raw)} bytes of {type_name(raw_type)}; its shape needs "
                         f"{count} values, {count * layout.itemsize} bytes")
    values = np.frombuffer(raw, layout, count)
    if raw_type == caffe_pb2.BFLOAT16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(layout.newbyteorder("="))


def encode_raw(array, raw_type):
    """The little-endian bytes of `array` as values of a Type (DOUBLE, FLOAT or FLOAT16)."""
    layout = RAW_LAYOUTS.get(raw_type)
    if layout is None or raw_type == caffe_pb2.BFLOAT16:
        raise ValueError(f"cannot write raw {type_name(raw_type)} values; "
                         "DOUBLE, FLOAT and FLOAT16 can be written")
    return np.ascontiguousarray(array, dtype=layout).tobytes()
