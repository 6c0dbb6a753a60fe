"""The data pipeline: LMDB/Datum I/O, Caffe's transformer, augmentation, prefetch.

    from pycaffe_lite.data import LMDBWriter, iter_datums, DataTransformer

Modules: datum (Datum <-> arrays, mean files), lmdb_io (readers, atomic
writers), transformer (Caffe's crop/mirror/mean/scale), augment (our
augmentation), batches (batch loaders), prefetch (the background thread),
tta (test-time augmentation), pca (lighting statistics), windows (R-CNN window
files and the WindowData sampler), convert (the
convert_imageset / compute_image_mean / convert_mnist tools).
"""

# Caffe::solver_count / solver_rank: with several solvers (ranks) training one
# net, each TRAIN Data layer keeps every solver_count-th record from its rank.
_SOLVERS = {"count": 1, "rank": 0}


def set_solver_count(count):
    _SOLVERS["count"] = max(1, int(count))


def set_solver_rank(rank):
    _SOLVERS["rank"] = int(rank)


def solver_count():
    return _SOLVERS["count"]


def solver_rank():
    return _SOLVERS["rank"]


from .datum import (DataError, array_to_datum, datum_to_array, decode_datum,  # noqa: E402
                    image_to_datum, load_mean_file, read_image_to_datum, save_mean_file)
from .lmdb_io import LMDBReader, LMDBWriter, iter_datums, iter_lmdb, lmdb_size  # noqa: E402
from .transformer import DataTransformer  # noqa: E402

__all__ = ["DataError", "DataTransformer", "LMDBReader", "LMDBWriter", "array_to_datum", "datum_to_array",
           "decode_datum", "image_to_datum", "iter_datums", "iter_lmdb", "lmdb_size", "load_mean_file",
           "read_image_to_datum", "save_mean_file", "set_solver_count", "set_solver_rank", "solver_count",
           "solver_rank"]
