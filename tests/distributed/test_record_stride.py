"""Each rank reads its own records, as Caffe 1.0's DataLayer / HDF5DataLayer Skip(): the
records whose offset is the rank modulo the solver count (over wraps too)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import dist_helpers as h
from data_helpers import build_layer, write_images

from pycaffe_lite import data as data_config
from pycaffe_lite.proto import caffe_pb2


@pytest.fixture
def ranks():
    def set_ranks(count, rank):
        data_config.set_solver_count(count)
        data_config.set_solver_rank(rank)
    yield set_ranks
    set_ranks(1, 0)


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_data_layer_rank_reads_every_nth_record(tmp_path, ranks, phase):
    db = h.make_db(tmp_path / "db", n=7, classes=7)          # label == record index
    seen = {}
    for rank in range(2):
        ranks(2, rank)
        layer, tops = build_layer(f'name: "d" type: "Data" top: "data" top: "label" '
                                  f'data_param {{ source: "{db}" batch_size: 4 }}', phase=phase)
        seen[rank] = []
        try:
            for _ in range(2):
                layer.Forward([], tops)
                seen[rank].append(tops[1].data.tolist())
        finally:
            layer.close()
    # 7 records: offsets 0..15 over two passes; rank 0 keeps the even offsets, rank 1 the odd
    assert seen[0] == [[0, 2, 4, 6], [1, 3, 5, 0]]
    assert seen[1] == [[1, 3, 5, 0], [2, 4, 6, 1]]


def test_hdf5_data_rank_reads_every_nth_row(tmp_path, ranks):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["label"] = np.arange(5, dtype=np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path}/a.h5\n")
    rows = {}
    for rank in range(2):
        ranks(2, rank)
        layer, tops = build_layer(f'name: "h" type: "HDF5Data" top: "label" '
                                  f'hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 3 }}', num_tops=1)
        layer.Forward([], tops)
        rows[rank] = tops[0].data.tolist()
    assert rows == {0: [0, 2, 4], 1: [1, 3, 0]}


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_image_data_splits_its_list_only_for_tests(tmp_path, ranks, phase):
    """Caffe 1.0's ImageData gives every solver the whole list (TRAIN); the ranks' test nets,
    which split the test iterations, read a stride each."""
    list_file, _ = write_images(tmp_path, n=5, size=(4, 4))
    labels = {}
    for rank in range(2):
        ranks(2, rank)
        layer, tops = build_layer(f'name: "i" type: "ImageData" top: "data" top: "label" '
                                  f'image_data_param {{ source: "{list_file}" root_folder: "{tmp_path}/" '
                                  f'batch_size: 3 }}', phase=phase)
        try:
            layer.Forward([], tops)
            labels[rank] = tops[1].data.tolist()
        finally:
            layer.close()
    # write_images labels line i with i % 5: the label is the line
    if phase == caffe_pb2.TRAIN:
        assert labels == {0: [0, 1, 2], 1: [0, 1, 2]}
    else:
        assert labels == {0: [0, 2, 4], 1: [1, 3, 0]}
