"""Every output path replaces a symlink at its name and leaves the link's target alone: the --log file,
HDF5Output's file and the atomic writer (the snapshot probe is in tests/solvers/test_snapshot_faults.py)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pycaffe_lite.io_utils import atomic_write, open_fresh

sys.path.insert(0, str(Path(__file__).resolve().parent / "solvers"))
from toy_layers import quadratic_layer, write_solver


@pytest.fixture
def precious(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    return target


def _link(tmp_path, name, target):
    link = tmp_path / name
    os.symlink(target, link)
    return link


@pytest.mark.parametrize("opener", ["open_fresh", "atomic_write"])
def test_writers_replace_a_symlink(tmp_path, precious, opener):
    link = _link(tmp_path, "out.txt", precious)
    if opener == "open_fresh":
        with open_fresh(link, "w") as f:
            f.write("new")
    else:
        with atomic_write(link, "w") as f:
            f.write("new")
    assert precious.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "precious.txt"]


def test_train_log_replaces_a_symlink(tmp_path, precious, monkeypatch):
    from pycaffe_lite.cli import main
    monkeypatch.chdir(tmp_path)
    solver = write_solver(Path("."), 'base_lr: 0.1 lr_policy: "fixed" max_iter: 2 display: 1 solver_mode: CPU '
                          'snapshot_after_train: false\n', quadratic_layer())
    link = _link(tmp_path, "train.log", precious)
    assert main(["train", "--solver", str(solver), "--allow-python", "--log", "train.log"]) == 0
    assert precious.read_text() == "keep me"
    assert not link.is_symlink() and "Optimization Done." in link.read_text()


def test_hdf5_output_replaces_a_symlink(tmp_path, precious):
    h5py = pytest.importorskip("h5py")
    from google.protobuf import text_format

    from pycaffe_lite.blob import Blob
    from pycaffe_lite.layer import create_layer
    from pycaffe_lite.proto import caffe_pb2
    link = _link(tmp_path, "out.h5", precious)
    param = text_format.Parse(f'name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
                              f'hdf5_output_param {{ file_name: "{link}" }}', caffe_pb2.LayerParameter())
    bottoms = [Blob((2, 3)), Blob((2,))]
    bottoms[0].data[...] = np.arange(6).reshape(2, 3)
    layer = create_layer(param)
    layer.SetUp(bottoms, [])
    layer.Forward(bottoms, [])
    with h5py.File(link, "r") as h:   # readable while the layer still has it open
        assert h["data"].shape == (2, 3, 1, 1)
    layer.close()
    assert precious.read_text() == "keep me" and not link.is_symlink()
    with h5py.File(link, "r") as h:
        np.testing.assert_array_equal(h["data"][:, :, 0, 0], np.arange(6).reshape(2, 3))
