"""Data layers: Data (LMDB), ImageData (list file), MemoryData (arrays from Python),
HDF5Data and HDF5Output.

Data and ImageData prefetch: a background thread reads, decodes and
transforms batches into a bounded queue (`data_param.prefetch` batches ahead)
while the net computes, so `forward` only takes a ready batch.  Call
`close()` (Net.close does it for every layer) to stop the thread; it is a
daemon and also stops when the layer is garbage-collected or the interpreter
exits.

    layer {
      name: "mnist" type: "Data" top: "data" top: "label"
      include { phase: TRAIN }
      transform_param { scale: 0.00390625 mirror: false crop_size: 0 }
      data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
    }

Tops: data (batch, C, H, W) in the net's dtype, and label (batch,) when a
second top is given.  On the GPU (CuPy tops) batches are built in pinned
memory and copied on their own stream (pycaffe_lite.gpu.staging).  Errors in the reader (a corrupt record, an image that
does not decode) reach `forward` as a DataError naming the database and key.
"""
import logging
import os
import re
import weakref

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..data import solver_count, solver_rank
from ..data.batches import BatchLoader, ImageList, LMDBRecords, item_rng
from ..data.datum import DataError
from ..data.lmdb_io import check_lmdb_path
from ..data.prefetch import Prefetcher, stager_for
from ..io_utils import FormatError, open_fresh, read_file
from ..data.transformer import DataTransformer
from ..layer import Layer, register
from ..proto import caffe_pb2

log = logging.getLogger(__name__)

_C_SPACES = re.compile(r"[ \t\n\v\f\r]+")     # what C's isspace() calls whitespace


def layer_seed(layer_param, needed):
    """transform_param.seed when given; else one draw from the global generator, only if needed."""
    tp = layer_param.transform_param
    if tp.HasField("seed"):
        return int(tp.seed)
    if not needed:
        return 0
    return int(backend.rng().integers(1 << 62))


class BasePrefetchingDataLayer(Layer):
    """Shared by Data and ImageData: a BatchLoader run by a Prefetcher."""
    num_bottom = (0, 0)
    num_top = (1, 2)

    _prefetcher = None
    _loader = None

    def make_records(self, transformer, seed):
        raise NotImplementedError

    def batch_size(self):
        raise NotImplementedError

    def setup(self, bottom, top):
        self.output_labels = len(top) > 1
        where = f"layer '{self.name}' (type {self.type})"
        self.transformer = DataTransformer(self.layer_param.transform_param, self.phase, where=where)
        self.seed = layer_seed(self.layer_param, self.transformer.needs_rng or self.needs_seed())
        stager = stager_for(top[0].data)
        records = self.make_records(self.transformer, self.seed)
        try:
            self._loader = BatchLoader(records, self.transformer, self.batch_size(), dtype=top[0].dtype,
                                       output_labels=self.output_labels, seed=self.seed,
                                       num_threads=self.layer_param.transform_param.num_threads,
                                       alloc=stager.empty, name=self.name)
        except BaseException:
            records.close()
            raise
        self.batch_shape = (self.batch_size(),) + self._loader.item_shape
        log.info("output data size: %s", ",".join(str(s) for s in self.batch_shape))
        self._shaped = False
        depth = self.layer_param.data_param.prefetch
        self._prefetcher = Prefetcher(self._loader.next_batch, depth=depth, name=self.name, stager=stager,
                                      cleanup=self._loader.close)
        # Stop the thread if the layer is dropped without close() (it holds no reference to us).
        self._finalizer = weakref.finalize(self, self._prefetcher.close)
        self._prefetcher.start()

    def needs_seed(self):
        return False

    def reshape(self, bottom, top):
        # Shapes come from the first record at set-up; afterwards each batch reshapes the tops in
        # forward (Caffe's BasePrefetchingDataLayer::Reshape is empty too), so Net.reshape()
        # leaves whatever shape the user gave the tops.
        if not self._shaped:
            top[0].reshape(self.batch_shape)
            if self.output_labels:
                top[1].reshape((self.batch_shape[0],))
            self._shaped = True

    def forward(self, bottom, top):
        """Hand the prefetched batch to the tops without a copy, as Caffe's data layers swap the
        pointer: the loader allocates a fresh array for every batch and keeps no reference to it,
        so the top owns it.  A view a user took of the previous batch keeps that batch's values
        (the exception to HACKING.md's rule that a blob's arrays stay put: a data top's array is
        replaced, not written into)."""
        if self._prefetcher is None:
            raise RuntimeError(self.error("is not set up"))
        batch = self._prefetcher.get()
        data, label = batch
        top[0].reshape(data.shape)
        top[0].set_data(data)
        if self.output_labels:
            top[1].reshape(label.shape)
            top[1].set_data(label)
            top[1].record_keys = getattr(batch, "keys", None)   # a bad label is named by its record

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        """Stop and join the prefetch thread (idempotent)."""
        if self._prefetcher is not None:
            self._prefetcher.close()

    @property
    def prefetcher(self):
        return self._prefetcher


_rand_skip_warned = False


def _warn_rand_skip_ignored():
    """Caffe 1.0's DataLayer never reads data_param.rand_skip (DEPRECATED in caffe.proto); say so once."""
    global _rand_skip_warned
    if not _rand_skip_warned:
        _rand_skip_warned = True
        log.warning("data_param.rand_skip is deprecated and ignored (as in Caffe 1.0): the Data layer "
                    "starts at the first record")


def record_stride():
    """(solver_count, solver_rank): with several solvers each reader keeps the records whose
    offset is its rank modulo the count (Caffe 1.0's DataLayer / HDF5DataLayer Skip()).  Caffe
    applies it to TRAIN only, testing on rank 0; here the ranks split the test iterations too
    (distributed/parallel.py), so TEST readers take their stride as well."""
    ranks = solver_count()
    return ranks, (solver_rank() if ranks > 1 else 0)


@register("Data", v1="DATA")
class DataLayer(BasePrefetchingDataLayer):
    """Datum records from an LMDB (data_param { source batch_size backend prefetch }).

    The first batch is records 0 .. batch_size-1, as in Caffe 1.0, whose Data
    layer ignores the deprecated data_param.rand_skip (a warning says so once).
    """

    def batch_size(self):
        return self.layer_param.data_param.batch_size

    def make_records(self, transformer, seed):
        dp = self.layer_param.data_param
        if not dp.batch_size:
            raise ValueError(self.error("needs data_param.batch_size > 0"))
        if not dp.source:
            raise ValueError(self.error("needs data_param.source (the LMDB to read)"))
        try:
            check_lmdb_path(dp.source, f"layer '{self.name}' (type Data): LMDB")
        except DataError as exc:
            leveldb = dp.backend == caffe_pb2.DataParameter.LEVELDB
            if leveldb and not os.path.exists(os.path.join(dp.source, "data.mdb")):
                raise DataError(f"{exc} (data_param.backend is LEVELDB, which pycaffe_lite does not read: "
                                "convert the database to LMDB and set backend: LMDB)", dp.source) from None
            raise
        ranks, rank = record_stride()
        if dp.rand_skip:
            _warn_rand_skip_ignored()
        return LMDBRecords(dp.source, transformer, rank=rank, num_ranks=ranks)


@register("ImageData", v1="IMAGE_DATA")
class ImageDataLayer(BasePrefetchingDataLayer):
    """Images listed in a text file of "path label" lines, read with OpenCV.

    image_data_param { source batch_size shuffle new_height new_width is_color root_folder rand_skip }
    """

    def batch_size(self):
        return self.layer_param.image_data_param.batch_size

    def needs_seed(self):
        ip = self.layer_param.image_data_param
        return ip.shuffle or ip.rand_skip > 0

    def make_records(self, transformer, seed):
        ip = self.layer_param.image_data_param
        if not ip.source:
            raise ValueError(self.error("needs image_data_param.source (a list file of 'path label' lines)"))
        if (ip.new_height > 0) != (ip.new_width > 0):
            raise ValueError(self.error("needs new_height and new_width set together, got "
                                        f"{ip.new_height} and {ip.new_width}"))
        if self.phase == caffe_pb2.TRAIN and solver_rank() > 0 and not ip.shuffle and not ip.rand_skip:
            # Caffe 1.0 splits no list file over solvers: each rank reads every line, in its own
            # shuffled order when shuffle is on (random_seed + rank)
            log.warning("Shuffling or skipping recommended for multi-GPU")
        # TEST readers stride, as the ranks split the test iterations (TRAIN: Caffe's, no split)
        ranks, rank = record_stride() if self.phase == caffe_pb2.TEST else (1, 0)
        return ImageList(ip.source, transformer, root_folder=ip.root_folder, new_height=ip.new_height,
                         new_width=ip.new_width, is_color=ip.is_color, shuffle=ip.shuffle, seed=seed,
                         rand_skip=ip.rand_skip, rank=rank, num_ranks=ranks)


@register("MemoryData", v1="MEMORY_DATA")
class MemoryDataLayer(Layer):
    """Batches cut from arrays handed in from Python.

        layer.set_input_arrays(data, labels)   # data (N, C, H, W), labels (N,); N % batch_size == 0

    Each forward hands out the next batch_size rows (no copy on the CPU),
    wrapping at the end.  As in Caffe, set_input_arrays does not apply
    transform_param; add_mat_vector / add_datum_vector do.
    """
    num_bottom = (0, 0)
    num_top = (2, 2)

    def setup(self, bottom, top):
        mp = self.layer_param.memory_data_param
        self.batch_size_ = mp.batch_size
        self.channels, self.height, self.width = mp.channels, mp.height, mp.width
        if self.batch_size_ * self.channels * self.height * self.width <= 0:
            raise ValueError(self.error("needs batch_size, channels, height and width in memory_data_param, "
                                        f"all positive; got {self.batch_size_}, {self.channels}, "
                                        f"{self.height}, {self.width}"))
        self.dtype = top[0].dtype
        self._data = self._labels = None
        self._pos = 0
        self.has_new_data = False
        self._transformer = None

    def reshape(self, bottom, top):
        top[0].reshape(self.batch_size_, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size_)

    @property
    def batch_size(self):
        return self.batch_size_

    def set_batch_size(self, batch_size):
        if self.has_new_data:
            raise RuntimeError(self.error("can't change batch_size until the added data is consumed"))
        self.batch_size_ = int(batch_size)

    def set_input_arrays(self, data, labels):
        """Use `data` (N, C, H, W) and `labels` (N,) or (N, 1, 1, 1) as the source (Caffe's Reset)."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        want = (self.channels, self.height, self.width)
        if data.ndim != 4 or tuple(data.shape[1:]) != want:
            raise ValueError(self.error(f"needs data of shape (N, {', '.join(map(str, want))}), got {data.shape}"))
        labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels
        if labels.ndim != 1 and labels.shape[1] != 1:
            raise ValueError(self.error(f"needs one label per item, got labels of shape {labels.shape}"))
        labels = labels.reshape(-1)
        if len(labels) != len(data):
            raise ValueError(self.error(f"data and labels must have the same first dimension, got "
                                        f"{len(data)} and {len(labels)}"))
        if len(data) == 0 or len(data) % self.batch_size_:
            raise ValueError(self.error(f"needs a number of items that is a positive multiple of batch_size "
                                        f"{self.batch_size_}, got {len(data)}"))
        if self.layer_param.HasField("transform_param"):
            log.warning("%s does not transform array data on set_input_arrays()", self.type)
        self._data = np.ascontiguousarray(data, dtype=self.dtype)
        self._labels = np.ascontiguousarray(labels, dtype=self.dtype)
        self._pos = 0

    reset = set_input_arrays

    def _transformed(self, images, layouts, labels):
        if self._transformer is None:
            self._transformer = DataTransformer(self.layer_param.transform_param, self.phase,
                                                where=f"layer '{self.name}' (type {self.type})")
        n = len(images)
        if n == 0 or n % self.batch_size_:
            raise ValueError(self.error(f"the added data must be a positive multiple of batch_size "
                                        f"{self.batch_size_}, got {n}"))
        seed = layer_seed(self.layer_param, self._transformer.needs_rng)
        out = np.empty((n, self.channels, self.height, self.width), self.dtype)
        for i, (image, layout) in enumerate(zip(images, layouts)):
            rng = item_rng(seed, i) if self._transformer.needs_rng else None
            self._transformer.transform(image, layout, out[i], rng)
        self.set_input_arrays(out, np.asarray(labels))
        self.has_new_data = True

    def add_mat_vector(self, images, labels):
        """Transform HWC images (as cv2 reads them) with transform_param and use them as the source."""
        if self.has_new_data:
            raise RuntimeError(self.error("can't add data until the current data has been consumed"))
        self._transformed(list(images), ["hwc"] * len(images), labels)

    def add_datum_vector(self, datums):
        """Transform Datums with transform_param and use them as the source."""
        if self.has_new_data:
            raise RuntimeError(self.error("can't add data until the current data has been consumed"))
        if self._transformer is None:
            self._transformer = DataTransformer(self.layer_param.transform_param, self.phase)
        decoded = [self._transformer.decode(d) for d in datums]
        self._transformed([d[0] for d in decoded], [d[1] for d in decoded], [d.label for d in datums])

    def forward(self, bottom, top):
        if self._data is None:
            raise RuntimeError(self.error("needs set_input_arrays(data, labels) before forward"))
        b = self.batch_size_
        xp = get_array_module(top[0].data)
        top[0].reshape(b, self.channels, self.height, self.width)
        top[1].reshape(b)
        top[0].data = xp.asarray(self._data[self._pos:self._pos + b])
        top[1].data = xp.asarray(self._labels[self._pos:self._pos + b])
        self._pos = (self._pos + b) % len(self._data)
        if self._pos == 0:
            self.has_new_data = False

    def backward(self, top, propagate_down, bottom):
        pass


def _h5py(layer):
    try:
        import h5py
    except ImportError as exc:
        raise RuntimeError(layer.error(f"needs h5py (pip install h5py): {exc}")) from exc
    return h5py


@register("HDF5Data", v1="HDF5_DATA")
class HDF5DataLayer(Layer):
    """Rows of HDF5 datasets named like the tops, from the .h5 files listed in `source`.

    hdf5_data_param { source batch_size shuffle }: the source lists file
    names separated by any whitespace (Caffe reads it with `>>`, so several
    names may share a line); shuffle permutes the files and the rows within
    each file, anew every pass.
    """
    num_bottom = (0, 0)
    num_top = (1, None)

    def setup(self, bottom, top):
        hp = self.layer_param.hdf5_data_param
        if not hp.batch_size:
            raise ValueError(self.error("needs hdf5_data_param.batch_size > 0"))
        self.h5py = _h5py(self)
        try:
            lines = read_file(hp.source, binary=False, what="HDF5 source list").split("\n")
        except (OSError, FormatError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise DataError(self.error(f"cannot read source list '{hp.source}': {reason}"), hp.source) from None
        # Every whitespace-separated token names a file (Caffe's `source_file >> name`); keep its line.
        listed = [(name, number) for number, line in enumerate(lines, 1) for name in _C_SPACES.split(line) if name]
        self.files = [name for name, _ in listed]
        self.file_lines = [number for _, number in listed]
        if not self.files:
            raise DataError(self.error(f"source list '{hp.source}' names no HDF5 files"), hp.source)
        self.top_names = list(self.layer_param.top)
        self.dtype = top[0].dtype
        self.seed = layer_seed(self.layer_param, hp.shuffle)
        self._ranks, self._rank = record_stride()
        self._offset = 0          # rows passed since the start (Caffe's offset_)
        self._passes = 0
        self._file_order = self._permutation(len(self.files), "files")
        self._file_index = 0
        self._load(self._file_order[0])

    def _permutation(self, n, what):
        if not self.layer_param.hdf5_data_param.shuffle:
            return np.arange(n)
        tag = 0 if what == "files" else 1
        self._passes += 1
        return np.random.default_rng([self.seed, tag, self._passes]).permutation(n)

    def _load(self, index):
        path = self.files[index]
        where = f"'{path}' (line {self.file_lines[index]} of source list '{self.layer_param.hdf5_data_param.source}')"
        try:
            with self.h5py.File(path, "r") as f:
                arrays = []
                for name in self.top_names:
                    if name not in f:
                        raise DataError(self.error(f"HDF5 file {where} has no dataset '{name}' "
                                                   f"(it has {sorted(f.keys())})"), path, name)
                    arrays.append(np.asarray(f[name][()], self.dtype))
        except OSError as exc:
            raise DataError(self.error(f"cannot read HDF5 file {where}: {exc}"), path) from None
        rows = {a.shape[0] if a.ndim else 0 for a in arrays}
        if len(rows) != 1 or 0 in rows:
            raise DataError(self.error(f"datasets of {where} need the same, non-zero number of rows; got "
                                       + ", ".join(f"{n}: {a.shape}" for n, a in zip(self.top_names, arrays))), path)
        self.arrays = arrays
        self.rows = rows.pop()
        self._row_order = self._permutation(self.rows, "rows")
        self._row = 0

    def reshape(self, bottom, top):
        b = self.layer_param.hdf5_data_param.batch_size
        for blob, array in zip(top, self.arrays):
            blob.reshape((b,) + array.shape[1:])

    def _next(self):
        self._offset += 1
        self._row += 1
        if self._row == self.rows:
            if len(self.files) > 1:
                self._file_index += 1
                if self._file_index == len(self.files):
                    self._file_index = 0
                    self._file_order = self._permutation(len(self.files), "files")
                self._load(self._file_order[self._file_index])
            else:
                self._row_order = self._permutation(self.rows, "rows")
            self._row = 0

    def forward(self, bottom, top):
        b = self.layer_param.hdf5_data_param.batch_size
        out = [np.empty((b,) + a.shape[1:], self.dtype) for a in self.arrays]
        for i in range(b):
            while self._offset % self._ranks != self._rank:
                self._next()
            for o, a in zip(out, self.arrays):
                o[i] = a[self._row_order[self._row]]
            self._next()
        for blob, o in zip(top, out):
            xp = get_array_module(blob.data)
            blob.reshape(o.shape)
            blob.data = xp.asarray(o)

    def backward(self, top, propagate_down, bottom):
        pass


@register("HDF5Output", v1="HDF5_OUTPUT")
class HDF5OutputLayer(Layer):
    """Writes its two bottoms to datasets "data" and "label" of hdf5_output_param.file_name.

    As in Caffe, each bottom is written 4-D, (num, channels, height, width),
    missing axes counted as 1: a (N, 5) bottom becomes (N, 5, 1, 1), a label
    (N,) becomes (N, 1, 1, 1); a bottom of more than 4 axes and bottoms of
    different num are errors, as Caffe's checks are.  The file is created
    (truncated) at set-up.

    Repeated forwards: Caffe's layer creates the datasets on the first forward
    and its second forward fails a CHECK (the datasets already exist); here
    each forward appends its rows to the datasets instead, so the file holds
    every batch written.  The file is flushed after each forward and closed
    by close().
    """
    num_bottom = (2, 2)
    num_top = (0, 0)

    def setup(self, bottom, top):
        self.h5py = _h5py(self)
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise ValueError(self.error("needs hdf5_output_param.file_name"))
        # a fresh file (io_utils.open_fresh): a symlink at file_name is replaced, its target left alone
        self._stream = open_fresh(self.file_name, "w+b")
        self._file = self.h5py.File(self._stream, "w")
        self._finalizer = weakref.finalize(self, _close_all, self._file, self._stream)

    def reshape(self, bottom, top):
        pass

    def _legacy_4d(self, name, values):
        """Caffe's (num(), channels(), height(), width()) view of a bottom."""
        if values.ndim > 4:
            raise ValueError(self.error(f"writes 4-D datasets (num, channels, height, width) as Caffe does; "
                                        f"bottom '{name}' has shape {values.shape} (more than 4 axes)"))
        return values.reshape(values.shape + (1,) * (4 - values.ndim))

    def forward(self, bottom, top):
        arrays = [self._legacy_4d(name, backend.to_numpy(blob.data))
                  for name, blob in zip(("data", "label"), bottom)]
        if arrays[0].shape[0] != arrays[1].shape[0]:
            raise ValueError(self.error(f"needs data and label of the same num, got shapes {arrays[0].shape} "
                                        f"and {arrays[1].shape}"))
        for name, values in zip(("data", "label"), arrays):
            if name not in self._file:
                self._file.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:],
                                          chunks=True)
            else:
                ds = self._file[name]
                if ds.shape[1:] != values.shape[1:]:
                    raise ValueError(self.error(f"bottom '{name}' changed shape from {ds.shape[1:]} to "
                                                f"{values.shape[1:]}"))
                n = ds.shape[0]
                ds.resize(n + values.shape[0], axis=0)
                ds[n:] = values
        self._file.flush()
        self._stream.flush()

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        if self._file is not None:
            _close_all(self._file, self._stream)
            self._file = None


def _close_all(*files):
    for f in files:
        f.close()


__all__ = ["DataLayer", "ImageDataLayer", "MemoryDataLayer", "HDF5DataLayer", "HDF5OutputLayer"]
