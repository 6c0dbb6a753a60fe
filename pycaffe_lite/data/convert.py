"""Dataset tools with BVLC Caffe's semantics: convert_imageset, compute_image_mean,
convert_mnist_data (compute_pca_lighting, ours, is in pca.py).

Every writer is atomic: databases are built in a temporary directory and
renamed into place, files written to a temporary file and renamed, so a
failure or Ctrl-C leaves nothing half-written behind.
"""
import gzip
import logging
import os
import struct

import numpy as np

from ..proto import caffe_pb2
from .batches import list_file_lines, split_list_line
from .datum import DataError, decode_bytes, imdecode_flag, parse_datum, read_image_to_datum, save_mean_file
from .lmdb_io import LMDBWriter, iter_lmdb, lmdb_size

log = logging.getLogger("pycaffe_lite.data")


# --------------------------------------------------------------------------
# convert_imageset
# --------------------------------------------------------------------------
def read_imageset_list(list_file):
    """(name, label) for every line of the list, as convert_imageset reads it (std::getline): the
    label is atoi() of what follows the last space; a blank line is a line too (name '')."""
    return [split_list_line(line) for line in list_file_lines(list_file)]


def convert_imageset(root_folder, list_file, db_name, gray=False, shuffle=False, resize_height=0,
                     resize_width=0, check_size=False, encoded=False, encode_type="", backend="lmdb",
                     seed=None, overwrite=False, progress=None):
    """Caffe's convert_imageset: images listed in `list_file` -> an LMDB of Datums.

    Keys are "%08d_<name>" with the line index (after shuffling), values
    serialized Datums; unreadable images and blank lines are skipped (their
    index is not reused), exactly as Caffe's tool does.  Returns the number
    written.  progress(lines_done, lines_total) is called after each line.
    """
    if backend.lower() != "lmdb":
        raise ValueError(f"backend '{backend}' is not supported; pycaffe_lite writes lmdb")
    lines = read_imageset_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        order = np.random.default_rng(seed).permutation(len(lines))
        lines = [lines[i] for i in order]
    log.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
    encoded = encoded or bool(encode_type)
    resize_height, resize_width = max(0, int(resize_height)), max(0, int(resize_width))
    is_color = not gray
    count = 0
    data_size = None
    with LMDBWriter(db_name, overwrite=overwrite) as db:
        log.info("Opened lmdb %s", db_name)
        for line_id, (name, label) in enumerate(lines):
            if progress:
                progress(line_id, len(lines))
            if not name:            # a blank line: Caffe fails to read the image '' and goes on
                log.error("Could not open or find file %s", root_folder)
                continue
            enc = encode_type
            if encoded and not enc:
                # Guess the encoding from the file name, as Caffe does.
                base = os.path.basename(name)
                if "." not in base:
                    raise ValueError(f"cannot guess the encoding of '{name}': give --encode_type")
                enc = base.rsplit(".", 1)[1].lower()
            datum = read_image_to_datum(root_folder + name, label, resize_height, resize_width, is_color, enc)
            if datum is None:
                log.error("Could not open or find file %s", root_folder + name)
                continue
            if check_size:
                size = len(datum.data) if not datum.encoded else None
                if size is not None:
                    if data_size is None:
                        data_size = size
                    elif size != data_size:
                        raise ValueError(f"Incorrect data field size {size} for {name} (the first image "
                                         f"had {data_size})")
            db.put(f"{line_id:08d}_{name}".encode("utf-8"), datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                log.info("Processed %d files.", count)
    if progress:
        progress(len(lines), len(lines))
    if count % 1000 != 0:
        log.info("Processed %d files.", count)
    return count


# --------------------------------------------------------------------------
# compute_image_mean
# --------------------------------------------------------------------------
def _datum_values(datum, source, key):
    """A datum's values as a flat array (uint8 or float32), encoded ones decoded natively."""
    if datum.encoded:
        image = decode_bytes(datum.data, imdecode_flag(), source, key)
        chw = image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)
        return chw.shape, np.ascontiguousarray(chw).ravel()
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return shape, np.frombuffer(datum.data, np.uint8)
    return shape, np.asarray(datum.float_data, np.float32)


def compute_image_mean(db_name, output_file=None, progress=None):
    """Caffe's compute_image_mean: the per-pixel mean of an LMDB's images (1 x C x H x W).

    Sums in float32, record by record, and divides by the count in float32,
    as Caffe's tool does, so the .binaryproto it writes is bit-identical.
    Returns the mean as a CHW float32 array.  progress(records_done, records_total)
    is called after each record.
    """
    source = os.fspath(db_name)
    records = lmdb_size(source) if progress else None
    total = None
    shape = None
    count = 0
    for key, value in iter_lmdb(source):
        datum = parse_datum(value, source, key)
        dshape, values = _datum_values(datum, source, key)
        if total is None:
            shape = dshape
            total = np.zeros(values.size, np.float32)
            log.info("Starting iteration")
        if values.size != total.size:
            raise DataError(f"record '{key.decode(errors='replace')}' of '{source}': Incorrect data field size "
                            f"{values.size} (expected {total.size})", source, key)
        total += values
        count += 1
        if progress:
            progress(count, records)
        if count % 10000 == 0:
            log.info("Processed %d files.", count)
    if count == 0:
        raise DataError(f"LMDB '{source}' has no records", source)
    if count % 10000 != 0:
        log.info("Processed %d files.", count)
    mean = (total / np.float32(count)).astype(np.float32).reshape(shape)
    if output_file:
        log.info("Write to %s", output_file)
        save_mean_file(output_file, mean)
    channels = shape[0]
    log.info("Number of channels: %d", channels)
    for c in range(channels):
        log.info("mean_value channel [%d]: %g", c, float(mean[c].sum(dtype=np.float64) / mean[c].size))
    return mean


# --------------------------------------------------------------------------
# convert_mnist_data
# --------------------------------------------------------------------------
def _open_maybe_gz(path):
    path = os.fspath(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path, magic):
    """The header dims and payload of an IDX file (MNIST's format), checked before allocating."""
    with _open_maybe_gz(path) as handle:
        payload = handle.read()
    if len(payload) < 8:
        raise ValueError(f"'{path}' is too short to be an IDX file")
    (found,) = struct.unpack(">i", payload[:4])
    if found != magic:
        raise ValueError(f"Incorrect {'image' if magic == 2051 else 'label'} file magic in '{path}': "
                         f"{found} (expected {magic})")
    ndim = 3 if magic == 2051 else 1
    dims = struct.unpack(">" + "i" * ndim, payload[4:4 + 4 * ndim])
    header = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64))
    if any(d < 0 for d in dims) or len(payload) - header != expected:
        raise ValueError(f"'{path}': header says {dims} ({expected} bytes) but {len(payload) - header} "
                         "bytes follow")
    return dims, np.frombuffer(payload, np.uint8, offset=header)


def mnist_datum(pixels, rows, cols, label):
    """A Datum as convert_mnist_data writes it (channels, height, width, data, label; no `encoded`)."""
    datum = caffe_pb2.Datum()
    datum.channels = 1
    datum.height = rows
    datum.width = cols
    datum.data = pixels.tobytes()
    datum.label = int(label)
    return datum


def convert_mnist(image_file, label_file, db_name, backend="lmdb", overwrite=False):
    """Caffe's convert_mnist_data: IDX image and label files -> LMDB with keys "%08d"."""
    if backend.lower() != "lmdb":
        raise ValueError(f"backend '{backend}' is not supported; pycaffe_lite writes lmdb")
    (num_items, rows, cols), images = read_idx(image_file, 2051)
    (num_labels,), labels = read_idx(label_file, 2049)
    if num_items != num_labels:
        raise ValueError(f"{image_file} has {num_items} images but {label_file} {num_labels} labels")
    log.info("A total of %d items.", num_items)
    log.info("Rows: %d Cols: %d", rows, cols)
    images = images.reshape(num_items, rows * cols)
    with LMDBWriter(db_name, overwrite=overwrite) as db:
        for item in range(num_items):
            db.put(f"{item:08d}".encode(), mnist_datum(images[item], rows, cols, labels[item]).SerializeToString())
    log.info("Processed %d files.", num_items)
    return num_items


def write_idx(path, array, magic):
    """Write an IDX file (for tests and for re-exporting data sets)."""
    array = np.ascontiguousarray(array, np.uint8)
    header = struct.pack(">i", magic) + struct.pack(">" + "i" * array.ndim, *array.shape)
    from ..io_utils import write_bytes_atomic
    payload = header + array.tobytes()
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload)
    write_bytes_atomic(path, payload)
