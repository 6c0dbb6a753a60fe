"""Snapshot files as BVLC Caffe writes and reads them.

Binary: `<prefix>_iter_N.caffemodel` (a NetParameter) and `.solverstate` (a
SolverState: iter, learned_net, current_step, one BlobProto per history
buffer).  HDF5 (snapshot_format: HDF5, needs h5py): `.caffemodel.h5` with a
group `data/<layer>/<i>` per parameter (Caffe's Net::ToHDF5, written by
Net.save_hdf5) and `.solverstate.h5` with datasets iter, learned_net,
current_step and a group history/<i>.  Every file is written to a temporary name and renamed into
place, so an interrupted snapshot never leaves a truncated file.
"""
import logging
import os

import numpy as np

from .. import backend
from ..io_utils import FormatError, MissingFileError, atomic_write, write_bytes_atomic
from ..proto.blobs import array_to_blob_proto, blob_proto_to_array
from ..proto.files import read_binary_proto, read_weights
from ..proto import caffe_pb2

log = logging.getLogger("pycaffe_lite.solver")


# ---------------------------------------------------------------------------
# binary protos
# ---------------------------------------------------------------------------
def write_proto(path, message):
    write_bytes_atomic(path, message.SerializeToString())


def make_state(iteration, learned_net, current_step, history, run_id=""):
    state = caffe_pb2.SolverState()
    state.iter = int(iteration)
    state.learned_net = learned_net
    state.current_step = int(current_step)
    if run_id:
        state.run_id = run_id
    for array in history:
        state.history.add().CopyFrom(array_to_blob_proto(array))
    return state


def read_state(path):
    state = read_binary_proto(os.fspath(path), caffe_pb2.SolverState())
    if not state.HasField("iter") and not state.history:
        raise FormatError(f"{path}: not a solver state (no iter, no history); "
                         "resume with the .solverstate file, not the .caffemodel")
    return state


def state_pair(path):
    """(learned_net or None, run id or '') of a .solverstate or .solverstate.h5."""
    path = os.fspath(path)
    if not path.endswith(".h5"):
        state = read_state(path)
        return (state.learned_net if state.HasField("learned_net") else None), state.run_id
    with require_h5py().File(path, "r") as f:
        return _hdf5_learned_net(f, path), hdf5_text(f.attrs.get("run_id", ""))


def hdf5_text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _hdf5_single(f, path, key):
    """The one value of dataset `key`, its size checked before it is read."""
    dataset = f[key]
    if dataset.size != 1:
        raise FormatError(f"{path}: '{key}' should hold one value, the file declares {dataset.shape}")
    return np.asarray(dataset[()]).ravel()[0]


def _hdf5_learned_net(f, path):
    if "learned_net" not in f:
        return None
    raw = _hdf5_single(f, path, "learned_net")   # Caffe's NUL-terminated string, or one without
    return raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else str(raw)


def history_array(blob_proto):
    return blob_proto_to_array(blob_proto)


def resolve_learned_net(learned_net, state_file):
    """Caffe reads learned_net relative to the current directory; also accept it beside the state file."""
    if not isinstance(learned_net, str):    # protobuf hands back a string that is not UTF-8 as bytes
        raise FormatError(f"{state_file}: its learned_net {learned_net!r} is not UTF-8 text", state_file)
    if os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_file)), os.path.basename(learned_net))
    if os.path.exists(beside):
        log.info("learned_net %s is not under the current directory; using %s beside the solver state",
                 learned_net, beside)
        return beside
    raise MissingFileError(learned_net, f"{state_file}: its learned_net",
                           f"Caffe reads it relative to the current directory, {os.getcwd()}, and so do we; "
                           "it is not beside the state file either")


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------
def read_trained_layers(path):
    """A weights file read once, to be copied into several nets: the parsed .caffemodel, or the
    path itself for an .h5 file (HDF5 is read a dataset at a time, as each net asks)."""
    path = os.fspath(path)
    return path if path.endswith(".h5") else read_weights(path)


def copy_weights(net, path, trained=None):
    """Trained layers from a .caffemodel, or Caffe's HDF5 layout for a .h5 file (Net.copy_from
    decides); `trained` is the file as read_trained_layers read it, so it is not read again."""
    net.copy_from(os.fspath(path) if trained is None else trained, origin=os.fspath(path))


def require_h5py():
    try:
        import h5py
    except Exception as exc:
        raise RuntimeError("snapshot_format HDF5 needs the h5py package (pip install h5py), which failed "
                           f"to import ({exc}); or use snapshot_format: BINARYPROTO") from None
    return h5py


# ---------------------------------------------------------------------------
# HDF5 solver state
# ---------------------------------------------------------------------------
def save_state_hdf5(path, iteration, learned_net, current_step, history, run_id=""):
    h5py = require_h5py()
    with atomic_write(path, "w+b") as handle, h5py.File(handle, "w") as f:
        if run_id:
            f.attrs["run_id"] = run_id
        f.create_dataset("iter", data=np.array([iteration], np.int32))
        save_string_hdf5(f, "learned_net", learned_net)
        f.create_dataset("current_step", data=np.array([current_step], np.int32))
        group = f.create_group("history")
        for i, array in enumerate(history):
            group.create_dataset(str(i), data=backend.to_numpy(array))


def save_string_hdf5(f, name, text):
    """A string dataset as Caffe's hdf5_save_string (H5LTmake_dataset_string) writes it: scalar,
    fixed-length ASCII of strlen + 1 bytes, NUL-terminated.  Caffe's hdf5_load_string reads
    `size` bytes and needs that NUL to find the end."""
    h5py = require_h5py()
    data = text.encode() + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(data))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    dataset = h5py.h5d.create(f.id, name.encode(), string_type, h5py.h5s.create(h5py.h5s.SCALAR))
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(data, dtype=f"S{len(data)}"), mtype=string_type)


def load_state_hdf5(path, check_sizes=None):
    """(iter, learned_net or None, current_step, [history arrays]).

    Sizes come from the file, so they are checked before anything is read:
    `iter`, `current_step` and `learned_net` must hold one value, and
    `check_sizes([values per history blob])` may refuse the history first."""
    h5py = require_h5py()
    with h5py.File(path, "r") as f:
        for key in ("iter", "current_step", "history"):
            if key not in f:
                raise FormatError(f"{path}: no '{key}' in this HDF5 file; not a Caffe solver state")
        iteration, current_step = int(_hdf5_single(f, path, "iter")), int(_hdf5_single(f, path, "current_step"))
        learned_net = _hdf5_learned_net(f, path)
        datasets = [f["history"][k] for k in sorted(f["history"], key=int)]
        if check_sizes is not None:
            check_sizes([int(d.size) for d in datasets])
        return iteration, learned_net, current_step, [np.asarray(d) for d in datasets]
