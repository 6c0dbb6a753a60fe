"""Snapshots and resumes: file names and schema as BVLC Caffe writes them, exact continuation,
HDF5 snapshots, and resuming from a .solverstate written by Caffe itself."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_path
from pycaffe_lite.proto.files import read_weights
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver
from toy_layers import quadratic_layer, write_solver

SOLVER = ('type: "{type}" base_lr: 0.05 momentum: {momentum} lr_policy: "multistep" gamma: 0.5 '
          'stepvalue: 2 stepvalue: 5 weight_decay: 0.001 max_iter: {max_iter} display: 0 '
          'snapshot_prefix: "{prefix}" {extra}\n')


def make(tmp_path, solver_type="SGD", max_iter=8, extra="", momentum=0.9):
    prefix = tmp_path / "snap" / "toy"
    prefix.parent.mkdir(exist_ok=True)
    text = SOLVER.format(type=solver_type, momentum=momentum if solver_type != "RMSProp" else 0,
                         max_iter=max_iter, prefix=prefix, extra=extra)
    net = quadratic_layer("quad", seed=1) + quadratic_layer("quad2", shapes=((2, 3, 2),), seed=2,
                                                            lr_mult=(1,), decay_mult=(1,))
    solver_file = write_solver(tmp_path, text, net)
    return get_solver(str(solver_file), allow_python=True), prefix


def weights(solver):
    return [p.data.copy() for p in solver.net.learnable_params]


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_resume_continues_exactly(tmp_path, solver_type):
    straight, prefix = make(tmp_path, solver_type)
    straight.step(8)
    first, _ = make(tmp_path, solver_type)
    first.step(4)
    first.snapshot()
    assert first.current_step == 1
    resumed, _ = make(tmp_path, solver_type)
    resumed.restore(f"{prefix}_iter_4.solverstate")
    assert (resumed.iter, resumed.current_step) == (4, 1)
    resumed.step(4)
    assert resumed.current_step == 2
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(straight.history, resumed.history):
        np.testing.assert_array_equal(a, b)


def test_snapshot_files_and_schema(tmp_path):
    solver, prefix = make(tmp_path, max_iter=6, extra="snapshot: 3")
    solver.solve()
    names = sorted(os.listdir(prefix.parent))
    assert names == ["toy_iter_3.caffemodel", "toy_iter_3.solverstate",
                     "toy_iter_6.caffemodel", "toy_iter_6.solverstate"], names   # no temporary files left
    state = caffe_pb2.SolverState()
    state.ParseFromString((prefix.parent / "toy_iter_6.solverstate").read_bytes())
    assert state.iter == 6 and state.current_step == 2
    assert state.learned_net == f"{prefix}_iter_6.caffemodel"
    assert [tuple(h.shape.dim) for h in state.history] == [(3, 4), (5,), (2, 3, 2)]
    for proto, ours in zip(state.history, solver.history):
        np.testing.assert_array_equal(np.asarray(proto.data, np.float32).reshape(ours.shape), ours)
    model = read_weights(state.learned_net)
    saved = {layer.name: [np.asarray(b.data).reshape(tuple(b.shape.dim)) for b in layer.blobs]
             for layer in model.layer}
    for name, blobs in solver.net.params.items():
        for blob, value in zip(blobs, saved[name]):
            np.testing.assert_array_equal(blob.data, value)


def test_snapshot_after_train_can_be_disabled(tmp_path):
    solver, prefix = make(tmp_path, max_iter=2, extra="snapshot_after_train: false")
    solver.solve()
    assert os.listdir(prefix.parent) == []


def test_hdf5_snapshot_round_trip(tmp_path):
    pytest.importorskip("h5py")
    solver, prefix = make(tmp_path, "Adam", extra="snapshot_format: HDF5")
    solver.step(3)
    model_file, state_file = solver.snapshot()
    assert (model_file, state_file) == (f"{prefix}_iter_3.caffemodel.h5", f"{prefix}_iter_3.solverstate.h5")
    solver.step(2)
    resumed, _ = make(tmp_path, "Adam", extra="snapshot_format: HDF5")
    resumed.restore(state_file)
    resumed.step(2)
    for a, b in zip(weights(solver), weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_hdf5_learned_net_is_written_as_caffes_nul_terminated_string(tmp_path):
    """H5LTmake_dataset_string: scalar, fixed-length ASCII of strlen + 1 bytes, NUL-terminated.
    Caffe's hdf5_load_string reads exactly that many bytes and needs the NUL to end the string."""
    h5py = pytest.importorskip("h5py")
    solver, prefix = make(tmp_path, extra="snapshot_format: HDF5")
    solver.step(1)
    model_file, state_file = solver.snapshot()
    with h5py.File(state_file, "r") as f:
        dataset = f["learned_net"].id
        string_type = dataset.get_type()
        assert string_type.get_class() == h5py.h5t.STRING
        assert string_type.get_size() == len(model_file.encode()) + 1
        assert string_type.get_strpad() == h5py.h5t.STR_NULLTERM
        assert string_type.get_cset() == h5py.h5t.CSET_ASCII
        assert dataset.get_space().get_simple_extent_type() == h5py.h5s.SCALAR
        raw = np.zeros((), f"S{string_type.get_size()}")
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=string_type)
        assert raw.tobytes() == model_file.encode() + b"\0"


def test_hdf5_state_without_nul_in_learned_net_still_restores(tmp_path):
    """Files written before learned_net had its NUL (a plain fixed-length string) still resume."""
    h5py = pytest.importorskip("h5py")
    solver, prefix = make(tmp_path, extra="snapshot_format: HDF5")
    solver.step(2)
    model_file, state_file = solver.snapshot()
    with h5py.File(state_file, "r+") as f:
        del f["learned_net"]
        f.create_dataset("learned_net", data=np.bytes_(model_file))
    resumed, _ = make(tmp_path, extra="snapshot_format: HDF5")
    resumed.restore(state_file)
    assert resumed.iter == 2
    for a, b in zip(weights(solver), weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_hdf5_without_h5py_is_a_clear_error(tmp_path, monkeypatch):
    solver, _ = make(tmp_path, extra="snapshot_format: HDF5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(RuntimeError, match=r"snapshot_format HDF5 needs the h5py package .*BINARYPROTO"):
        solver.snapshot()


def test_wrong_history_length_is_refused_and_changes_nothing(tmp_path):
    sgd, prefix = make(tmp_path, "SGD")
    sgd.step(2)
    sgd.snapshot()
    adam, _ = make(tmp_path, "Adam")
    before = weights(adam)
    with pytest.raises(ValueError, match="Incorrect length of history blobs: the state holds 3, a Adam "
                                         "solver for this net needs 6"):
        adam.restore(f"{prefix}_iter_2.solverstate")
    assert adam.iter == 0
    for a, b in zip(before, weights(adam)):
        np.testing.assert_array_equal(a, b)


def test_caffemodel_is_not_a_solverstate(tmp_path):
    solver, prefix = make(tmp_path)
    solver.snapshot()
    with pytest.raises(ValueError, match="not a solver state"):
        solver.restore(f"{prefix}_iter_0.caffemodel")


def test_snapshot_prefix_must_be_writable(tmp_path):
    text = f'base_lr: 0.1 lr_policy: "fixed" snapshot: 5 snapshot_prefix: "{tmp_path}/missing/dir/x"\n'
    solver_file = write_solver(tmp_path, text, quadratic_layer())
    with pytest.raises(ValueError, match="Cannot write to snapshot prefix .*missing/dir/x'.  Make sure that "
                                         "the directory exists and is writeable."):
        get_solver(str(solver_file), allow_python=True)


def test_snapshot_prefix_defaults_to_the_solver_file(tmp_path):
    solver_file = write_solver(tmp_path, 'base_lr: 0.1 lr_policy: "fixed"\n', quadratic_layer(), "my_solver.prototxt")
    solver = get_solver(str(solver_file), allow_python=True)
    assert solver.snapshot()[0] == f"{tmp_path}/my_solver_iter_0.caffemodel"


LENET = {"conv1": ((20, 1, 5, 5), (20,)), "conv2": ((50, 20, 5, 5), (50,)),
         "ip1": ((500, 800), (500,)), "ip2": ((10, 500), (10,))}


def test_resume_from_caffes_lenet_solverstate(tmp_path, monkeypatch):
    state_file = fixture_path("weights", "lenet_iter_5000.solverstate")
    caffe_state = caffe_pb2.SolverState()
    caffe_state.ParseFromString(state_file.read_bytes())
    # A net with LeNet's parameter layers (names and shapes) is all a solver state needs.
    net = "".join(quadratic_layer(name, shapes=shapes) for name, shapes in LENET.items())
    text = ('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75 '
            f'display: 0 max_iter: 10000 snapshot_prefix: "{tmp_path}/lenet"\n')
    solver = get_solver(str(write_solver(tmp_path, text, net)), allow_python=True)
    monkeypatch.chdir(tmp_path)   # learned_net is examples/mnist/...: found beside the state file
    solver.restore(str(state_file))
    assert solver.iter == 5000 and solver.current_step == 0
    for proto, ours in zip(caffe_state.history, solver.history):
        np.testing.assert_array_equal(ours, np.asarray(proto.data, np.float32).reshape(ours.shape))
    model = read_weights(str(fixture_path("weights", "lenet_iter_5000.caffemodel")))
    for layer in model.layer:
        if layer.name in LENET:
            for blob, proto in zip(solver.net.params[layer.name], layer.blobs):
                np.testing.assert_array_equal(blob.data, np.asarray(proto.data, np.float32).reshape(blob.shape))
    # What we write back parses with the same schema and holds the same values.
    _, ours_file = solver.snapshot()
    ours = caffe_pb2.SolverState()
    ours.ParseFromString(Path(ours_file).read_bytes())
    assert (ours.iter, ours.current_step, len(ours.history)) == (5000, 0, 8)
    assert ours.learned_net == f"{tmp_path}/lenet_iter_5000.caffemodel"
    for a, b in zip(ours.history, caffe_state.history):
        assert tuple(a.shape.dim) == tuple(b.shape.dim)
        np.testing.assert_array_equal(np.asarray(a.data, np.float32), np.asarray(b.data, np.float32))
    # Caffe's fields, and ours: the run id (field 1030) that pairs it with its .caffemodel
    assert {f.name for f, _ in ours.ListFields()} == {f.name for f, _ in caffe_state.ListFields()} | {"run_id"}
    assert caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["run_id"].number == 1030


def test_hdf5_sizes_are_checked_before_reading(tmp_path):
    """A few-KB HDF5 file may declare terabytes (chunked, never written): the declared shapes are
    compared with the net's before a byte is read, so the refusal is a clear error, not a MemoryError."""
    h5py = pytest.importorskip("h5py")
    solver, prefix = make(tmp_path, "SGD", extra="snapshot_format: HDF5")
    solver.step(1)
    model_file, state_file = solver.snapshot()
    huge = (1 << 40,)                                      # 4 TiB of float32, declared only
    with h5py.File(model_file, "a") as f:
        layer = next(iter(f["data"]))
        del f["data"][layer]["0"]
        f["data"][layer].create_dataset("0", shape=huge, dtype="f4", chunks=(1 << 20,))
    with pytest.raises(ValueError, match=r"file shape \(1099511627776,\)"):
        solver.net.copy_from(model_file)
    with h5py.File(state_file, "a") as f:
        del f["history"]["0"]
        f["history"].create_dataset("0", shape=huge, dtype="f4", chunks=(1 << 20,))
    with pytest.raises(ValueError, match="history blob 0 holds 1099511627776 values"):
        solver.restore(state_file)
    with h5py.File(state_file, "a") as f:
        del f["iter"]
        f.create_dataset("iter", shape=huge, dtype="i4", chunks=(1 << 20,))
    with pytest.raises(ValueError, match="'iter' should hold one value"):
        solver.restore(state_file)


def test_finetuning_weights_are_read_once_for_every_net(tmp_path, monkeypatch):
    from pycaffe_lite.solvers import state
    trained, _ = make(tmp_path)
    trained.step(2)
    model_file, _ = trained.snapshot()
    reads = []
    real = state.read_weights
    monkeypatch.setattr(state, "read_weights", lambda path: reads.append(path) or real(path))
    # two test nets beside the train net, all given the same weights
    solver, _ = make(tmp_path, extra=f'weights: "{model_file}" test_iter: 1 test_iter: 1 test_interval: 100')
    assert reads == [model_file] and len(solver.test_nets) == 2
    for net in [solver.net] + solver.test_nets:
        for a, b in zip(weights(trained), [p.data for p in net.learnable_params]):
            np.testing.assert_array_equal(a, b)
