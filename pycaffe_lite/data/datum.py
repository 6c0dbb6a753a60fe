"""Datum records and mean files: Caffe's on-disk image formats.

A `Datum` holds one example: raw uint8 pixels in CHW order (`data`), or
float values (`float_data`), or a whole encoded JPEG/PNG file (`data` with
`encoded: true`), plus an integer `label`.  The helpers here convert between
Datums, NumPy arrays and image files with the exact semantics of BVLC Caffe's
`util/io.cpp` (`CVMatToDatum`, `ReadImageToDatum`, `DecodeDatumToCVMat`), so
that the bytes we write are the bytes `convert_imageset` writes.

Images outside a Datum are HWC NumPy arrays in OpenCV's channel order (BGR),
2-D for gray, as `cv2.imread` returns them.
"""
import os

import numpy as np

from ..io_utils import FormatError, read_file
from ..proto import caffe_pb2
from ..proto.blobs import blob_proto_to_array

# Ceiling on what a single record may claim (channels * height * width), so a
# corrupt header cannot make us allocate gigabytes.
MAX_DATUM_VALUES = 1 << 28


class DataError(FormatError, RuntimeError):
    """A data source failed: names the database (or list file) and the record key (a FormatError
    whose `file` is the source and `record` the key; a RuntimeError as it always was)."""

    def __init__(self, message, source=None, key=None):
        super().__init__(message, source, None, key)
        self.source = source
        self.key = key


def _cv2():
    import cv2  # imported lazily: tools that never touch images do not need OpenCV
    return cv2


def _key_text(key):
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).decode("utf-8", "backslashreplace")
    return str(key)


# --------------------------------------------------------------------------
# Datum <-> array
# --------------------------------------------------------------------------
def parse_datum(value, source=None, key=None):
    """Parse serialized Datum bytes; a DataError names the source and key."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(bytes(value))
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise DataError(f"record '{_key_text(key)}' of '{source}' is not a valid Datum "
                        f"({len(value)} bytes): {exc}", source, key) from exc
    return datum


def array_to_datum(array, label=0):
    """A Datum from a CHW (or HW) array: uint8 -> `data` bytes, otherwise `float_data`.

    Mirrors Caffe's CVMatToDatum field for field (channels, height, width,
    data, encoded=false), so serialized bytes match convert_imageset's.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"array_to_datum needs a CHW or HW array, got shape {array.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in array.shape)
    if array.dtype == np.uint8:
        datum.encoded = False
        datum.data = np.ascontiguousarray(array).tobytes()
    else:
        datum.float_data.extend(np.asarray(array, np.float32).ravel().tolist())
    datum.label = int(label)
    return datum


def image_to_datum(image, label=0):
    """A raw Datum from an HWC/HW uint8 image (Caffe's CVMatToDatum)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Image data type must be unsigned byte, got {image.dtype}")
    chw = image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)
    return array_to_datum(chw, label)


def check_datum_size(datum, source=None, key=None):
    """channels/height/width of a raw Datum, checked against its payload."""
    c, h, w = datum.channels, datum.height, datum.width
    if c <= 0 or h <= 0 or w <= 0:
        raise DataError(f"record '{_key_text(key)}' of '{source}' has shape {c}x{h}x{w}: "
                        "channels, height and width must be positive", source, key)
    count = c * h * w
    if count > MAX_DATUM_VALUES:
        raise DataError(f"record '{_key_text(key)}' of '{source}' claims {c}x{h}x{w} values, "
                        f"more than the limit of {MAX_DATUM_VALUES}", source, key)
    have = len(datum.data) if datum.data else len(datum.float_data)
    if have != count:
        what = "data bytes" if datum.data else "float_data values"
        raise DataError(f"record '{_key_text(key)}' of '{source}' has {have} {what} for shape "
                        f"{c}x{h}x{w} ({count} expected)", source, key)
    return c, h, w


def datum_to_array(datum, source=None, key=None):
    """The CHW array of a raw (not encoded) Datum: uint8 from `data`, float32 from `float_data`."""
    if datum.encoded:
        raise FormatError("datum_to_array needs a raw Datum; decode encoded ones with decode_datum")
    c, h, w = check_datum_size(datum, source, key)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(c, h, w)
    return np.asarray(datum.float_data, np.float32).reshape(c, h, w)


def imdecode_flag(force_color=False, force_gray=False):
    """OpenCV's read flag for Caffe's decode: colour, gray, or unchanged (native)."""
    cv2 = _cv2()
    if force_color and force_gray:
        raise ValueError("cannot set both force_color and force_gray")
    if force_color:
        return cv2.IMREAD_COLOR
    if force_gray:
        return cv2.IMREAD_GRAYSCALE
    return cv2.IMREAD_UNCHANGED  # DecodeDatumToCVMatNative: imdecode(buf, -1)


def decode_bytes(payload, flag, source=None, key=None):
    """Decode an encoded image (JPEG, PNG, ...) to an HWC/HW array, or raise DataError."""
    cv2 = _cv2()
    buf = np.frombuffer(payload, np.uint8)
    image = cv2.imdecode(buf, flag) if buf.size else None
    if image is None:
        raise DataError(f"record '{_key_text(key)}' of '{source}': could not decode the "
                        f"encoded image ({len(payload)} bytes)", source, key)
    return image


def decode_datum(datum, force_color=False, force_gray=False, source=None, key=None):
    """A Datum's image as (array, layout): ('hwc', HWC/HW uint8) when encoded, else ('chw', CHW).

    Encoded Datums are decoded as Caffe's DataTransformer does: colour with
    force_color, gray with force_gray, otherwise in their native channels.
    """
    if datum.encoded:
        image = decode_bytes(datum.data, imdecode_flag(force_color, force_gray), source, key)
        if image.dtype != np.uint8:
            raise DataError(f"record '{_key_text(key)}' of '{source}': decoded image has "
                            f"type {image.dtype}; Caffe needs 8-bit images", source, key)
        return image, "hwc"
    return datum_to_array(datum, source, key), "chw"


# --------------------------------------------------------------------------
# Image files (convert_imageset's ReadImageToDatum)
# --------------------------------------------------------------------------
def read_image(path, height=0, width=0, is_color=True):
    """cv2.imread as colour or gray, resized to (height, width) when both are > 0.

    Caffe's ReadImageToCVMat; returns None when the file cannot be read.
    """
    cv2 = _cv2()
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    if height > 0 and width > 0:
        image = cv2.resize(image, (width, height))  # Caffe: cv::resize, INTER_LINEAR
    return image


def _match_ext(filename, encoding):
    ext = os.path.splitext(filename)[1].lower()
    enc = "." + encoding.lower()
    return ext == enc or (enc == ".jpg" and ext == ".jpeg")


def read_image_to_datum(path, label, height=0, width=0, is_color=True, encoding=""):
    """Caffe's ReadImageToDatum: a Datum for one image file, or None if unreadable.

    With `encoding` ("jpg", "png", ...) the Datum holds an encoded image: the
    file's own bytes when nothing would change them (same colour mode, no
    resize, matching extension), else the image re-encoded by OpenCV.
    """
    image = read_image(path, height, width, is_color)
    if image is None:
        return None
    if encoding:
        channels = 1 if image.ndim == 2 else image.shape[2]
        if (channels == 3) == is_color and not height and not width and _match_ext(os.fspath(path), encoding):
            with open(path, "rb") as handle:
                payload = handle.read()
        else:
            ok, buf = _cv2().imencode("." + encoding, image)
            if not ok:
                raise ValueError(f"OpenCV could not encode {path} as {encoding}")
            payload = buf.tobytes()
        datum = caffe_pb2.Datum()
        datum.data = payload
        datum.label = int(label)
        datum.encoded = True
        return datum
    return image_to_datum(image, label)


# --------------------------------------------------------------------------
# Mean files (.binaryproto BlobProto)
# --------------------------------------------------------------------------
def blob_proto_array(proto):
    """The values of a BlobProto as a float32 array of its shape (legacy 4-D or `shape`)."""
    return blob_proto_to_array(proto).astype(np.float32, copy=False)


def load_mean_file(path):
    """A Caffe mean file (.binaryproto, BlobProto 1xCxHxW) as a float32 CHW array."""
    path = os.fspath(path)
    payload = read_file(path, what="mean file")
    proto = caffe_pb2.BlobProto()
    try:
        proto.ParseFromString(payload)
        array = blob_proto_array(proto)
    except Exception as exc:
        raise FormatError(f"mean file '{path}' is not a BlobProto: {exc}", path) from exc
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise FormatError(f"mean file '{path}' has shape {array.shape}; expected 1xCxHxW")
    return array


def mean_blob_proto(mean):
    """A BlobProto (legacy num/channels/height/width fields, as compute_image_mean writes) for a CHW mean."""
    mean = np.asarray(mean, np.float32)
    if mean.ndim == 3:
        mean = mean[np.newaxis]
    proto = caffe_pb2.BlobProto()
    proto.num, proto.channels, proto.height, proto.width = (int(s) for s in mean.shape)
    proto.data.extend(mean.ravel().tolist())
    return proto


def save_mean_file(path, mean):
    """Write a CHW mean as a .binaryproto, atomically."""
    from ..io_utils import write_bytes_atomic
    write_bytes_atomic(path, mean_blob_proto(mean).SerializeToString())
