"""pycaffe's conveniences over a Net (forward_all, set_input_arrays, ...).

`Net` inherits `NetHelpersMixin`, so every net, including the ones a solver
builds, has these methods, as pycaffe's monkey-patched `caffe.Net` does
(python/caffe/pycaffe.py).  They stay at the net floor rather than being
attached from the pycaffe surface: a Net then behaves the same whatever was
imported, and `Net.copy_from` reads HDF5 weights through `load_hdf5`.  They only use the Net's public surface
(`blobs`, `inputs`, `outputs`, `forward`, `backward`, `layers`, ...).

Arrays returned here are NumPy arrays, also in GPU mode, as pycaffe's are.
"""
import collections
import itertools
import logging
import os
import tempfile

import numpy as np

from . import backend
from .io_utils import FormatError

log = logging.getLogger("pycaffe_lite")


class NetHelpersMixin:
    """Methods pycaffe adds to caffe.Net (pycaffe.py) and the private ones of _caffe.cpp."""

    # ---- batched forward / backward (pycaffe.py) -----------------------------
    def forward_all(self, blobs=None, **kwargs):
        """Run the net forward over inputs of any length, one batch at a time.

        blobs: names of blobs to return besides the outputs.
        kwargs: input blob name -> array with any number of items (first axis).
        Returns {blob name: array} with one row per input item (padding dropped).
        """
        if not kwargs:
            raise ValueError("forward_all needs input arrays by keyword, e.g. "
                             f"net.forward_all({(self.inputs or ['data'])[0]}=array); "
                             "nets fed by data layers run with net.forward()")
        all_outs = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, out_blob in outs.items():
                all_outs[out].append(backend.to_numpy(out_blob).copy())
        for out in all_outs:
            all_outs[out] = np.concatenate(all_outs[out]) if all_outs[out] else np.zeros((0,))
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            for out in all_outs:
                all_outs[out] = all_outs[out][:-pad]
        return all_outs

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """Forward and backward over inputs (and output diffs) of any length, batch by batch.

        kwargs: input names (for forward) and output names (for backward) -> arrays.
        Returns (all_blobs, all_diffs), each {blob name: array}.
        """
        all_outs = {out: [] for out in set(self.outputs + list(blobs or []))}
        all_diffs = {diff: [] for diff in set(self.inputs + list(diffs or []))}
        forward_batches = self._batch({in_: kwargs[in_] for in_ in self.inputs if in_ in kwargs})
        backward_batches = self._batch({out: kwargs[out] for out in self.outputs if out in kwargs})
        for fb, bb in itertools.zip_longest(forward_batches, backward_batches, fillvalue={}):
            batch_blobs = self.forward(blobs=blobs, **fb)
            batch_diffs = self.backward(diffs=diffs, **bb)
            for out, value in batch_blobs.items():
                all_outs[out].append(backend.to_numpy(value).copy())
            for diff, value in batch_diffs.items():
                all_diffs[diff].append(backend.to_numpy(value).copy())
        for table in (all_outs, all_diffs):
            for name in table:
                table[name] = np.concatenate(table[name]) if table[name] else np.zeros((0,))
        if kwargs:
            pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
            if pad:
                for table in (all_outs, all_diffs):
                    for name in table:
                        table[name] = table[name][:-pad]
        return all_outs, all_diffs

    def _batch(self, blobs):
        """Yield {name: batch} dicts of the net's batch size; the last batch is zero-padded."""
        if not blobs:
            return
        lengths = {name: len(value) for name, value in blobs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays given for batching have different lengths: {lengths}")
        num = next(iter(lengths.values()))
        first = next(iter(blobs))
        batch_size = self.blobs[first].shape[0] if first in self.blobs else next(iter(self.blobs.values())).shape[0]
        if batch_size <= 0:
            raise ValueError(f"blob '{first}' has batch size {batch_size}; reshape it first")
        full, remainder = divmod(num, batch_size)
        for b in range(full):
            i = b * batch_size
            yield {name: value[i:i + batch_size] for name, value in blobs.items()}
        if remainder:
            padded = {}
            for name, value in blobs.items():
                value = np.asarray(value)
                padding = np.zeros((batch_size - remainder,) + value.shape[1:], dtype=value.dtype)
                padded[name] = np.concatenate([value[-remainder:], padding])
            yield padded

    # ---- MemoryData input (pycaffe.py / _caffe.cpp) ---------------------------
    def set_input_arrays(self, data, labels):
        """Give the MemoryData layer (the net's first layer) arrays to serve.

        data: (N, C, H, W) float32; labels: (N,) or (N, 1, 1, 1) float32; N a
        multiple of the layer's batch size.  The arrays are kept by reference, as
        in Caffe: keep them alive and unchanged while the net reads them.
        """
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        return self._set_input_arrays(data, labels)

    def _set_input_arrays(self, data, labels):
        layer = self.layers[0] if self.layers else None
        if layer is None or layer.type != "MemoryData":
            raise RuntimeError("set_input_arrays may only be called if the first layer is a MemoryData layer")
        for what, array in (("data", data), ("labels", labels)):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                raise ValueError(f"{what} must be a float32 NumPy array, got "
                                 f"{getattr(array, 'dtype', type(array).__name__)}")
            if not array.flags.c_contiguous:
                raise ValueError(f"{what} must be C contiguous")
            if array.ndim != 4:
                raise ValueError(f"{what} must be 4-d, got shape {array.shape}")
        if data.shape[0] != labels.shape[0]:
            raise ValueError(f"data and labels must have the same first dimension, got "
                             f"{data.shape[0]} and {labels.shape[0]}")
        if labels.shape[1:] != (1, 1, 1):
            raise ValueError(f"labels must have shape (N,) or (N, 1, 1, 1), got {labels.shape}")
        batch = getattr(layer, "batch_size", None)
        if batch is None:
            batch = layer.layer_param.memory_data_param.batch_size
        if batch and data.shape[0] % batch:
            raise ValueError(f"first dimensions of input arrays must be a multiple of batch size "
                             f"{batch}, got {data.shape[0]}")
        want = tuple(self.top_vecs[0][0].shape[1:])
        if want and tuple(data.shape[1:]) != want:
            raise ValueError(f"data must have shape (N,) + {want} for layer '{layer.name}', got {data.shape}")
        if hasattr(layer, "set_input_arrays"):
            return layer.set_input_arrays(data, labels)
        reset = getattr(layer, "Reset", None)
        if reset is None:
            raise RuntimeError(f"layer '{layer.name}' (MemoryData) has neither set_input_arrays(data, labels) "
                               "nor Reset(data, labels, n)")
        return reset(data, labels, data.shape[0])  # Caffe's MemoryDataLayer::Reset

    # ---- HDF5 weights (Net::ToHDF5 / CopyTrainedLayersFromHDF5) ----------------
    def save_hdf5(self, filename, write_diff=False, attributes=None):
        """Write the parameters as Caffe's HDF5 layout: /data/<layer>/<i> (and /diff/...).

        A parameter shared with an earlier layer is written once, under its owner; `attributes`
        go on the root group (a snapshot's run_id).
        """
        h5py = _h5py()
        filename = os.fspath(filename)
        directory = os.path.dirname(os.path.abspath(filename))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(filename)}.", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            seen = set()
            with h5py.File(tmp, "w") as handle:
                handle.attrs.update(attributes or {})
                data = handle.create_group("data")
                diff = handle.create_group("diff") if write_diff else None
                for name, layer in zip(self.layer_names, self.layers):
                    group = data.create_group(name)
                    diff_group = diff.create_group(name) if write_diff else None
                    for j, blob in enumerate(layer.blobs):
                        if id(blob) not in seen:   # only params that own themselves
                            seen.add(id(blob))
                            group.create_dataset(str(j), data=backend.to_numpy(blob.data))
                        if write_diff:
                            diff_group.create_dataset(str(j), data=backend.to_numpy(blob.diff))
            os.replace(tmp, filename)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_hdf5(self, filename):
        """Copy parameters by layer name from an HDF5 file written by save_hdf5 (or Caffe)."""
        h5py = _h5py()
        filename = os.fspath(filename)
        by_name = collections.OrderedDict(zip(self.layer_names, self.layers))
        owners, seen = set(), set()
        for layer in self.layers:
            for blob in layer.blobs:
                if id(blob) not in seen:
                    owners.add((id(layer), id(blob)))
                    seen.add(id(blob))
        try:
            handle = h5py.File(filename, "r")
        except OSError as exc:
            raise FileNotFoundError(f"cannot read HDF5 weights {filename}: {exc}") from None
        with handle:
            if "data" not in handle:
                raise FormatError(f"{filename}: no 'data' group; not a Caffe HDF5 weights file")
            for source_name, group in handle["data"].items():
                target = by_name.get(source_name)
                if target is None:
                    log.info("Ignoring source layer %s", source_name)
                    continue
                if len(group) > len(target.blobs):
                    raise FormatError(f"{filename}: incompatible number of blobs for layer '{source_name}': "
                                     f"source has {len(group)}, target {len(target.blobs)}")
                for j, blob in enumerate(target.blobs):
                    key = str(j)
                    if key not in group:
                        if (id(target), id(blob)) not in owners:
                            continue  # weight-shared in the target, written under its owner
                        raise FormatError(f"{filename}: incompatible number of blobs for layer "
                                         f"'{source_name}': param {j} is missing")
                    dataset = group[key]
                    if tuple(dataset.shape) != tuple(blob.shape):   # checked before reading a byte
                        raise FormatError(f"{filename}: cannot load param {j} of layer '{source_name}': "
                                         f"file shape {tuple(dataset.shape)}, net shape {blob.shape}")
                    blob.data[...] = blob._xp.asarray(dataset[()].astype(blob.dtype, copy=False))

    # ---- the private surface of _caffe.cpp, which some scripts use ------------
    def _forward(self, start, end):
        return self.forward_from_to(start, end)

    def _backward(self, start, end):
        return self.backward_from_to(start, end)

    @property
    def _blobs(self):
        return list(self.blobs.values())

    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def _blob_loss_weights(self):
        return list(self.blob_loss_weights.values())

    @property
    def _inputs(self):
        names = list(self.blobs)
        return [names.index(n) for n in self.inputs]

    @property
    def _outputs(self):
        names = list(self.blobs)
        return [names.index(n) for n in self.outputs]

    def _bottom_ids(self, i):
        names = list(self.blobs)
        return [names.index(n) for n in self.bottom_names[self.layer_names[i]]]

    def _top_ids(self, i):
        names = list(self.blobs)
        return [names.index(n) for n in self.top_names[self.layer_names[i]]]

    def _get_id_name(self, ids):
        """pycaffe's helper for blob ids -> names (used by top_names/bottom_names there)."""
        names = list(self.blobs)
        return [names[i] for i in ids]


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise RuntimeError(f"HDF5 weights need h5py (pip install h5py): {exc}") from exc
    return h5py
