"""LMDB and Datum I/O: round trips, encoded images, atomic writers, the conversion tools."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_helpers import REPO, fixture_path, make_lmdb, write_images
from pycaffe_lite.cli import main as cli
from pycaffe_lite.data import datum as dm
from pycaffe_lite.data.convert import compute_image_mean, convert_imageset, convert_mnist, mnist_datum, write_idx
from pycaffe_lite.data.lmdb_io import LMDBReader, LMDBWriter, iter_datums, iter_lmdb
from pycaffe_lite.proto import caffe_pb2


def test_raw_round_trip_keys_labels_images(tmp_path):
    list_file, paths = write_images(tmp_path, n=6, size=(9, 11), color=True)
    db = tmp_path / "db"
    assert convert_imageset(f"{tmp_path}/", str(list_file), str(db)) == 6
    records = list(iter_datums(db))
    assert [k for k, _ in records] == [f"{i:08d}_img/{i:03d}.png".encode() for i in range(6)]
    for i, (_, datum) in enumerate(records):
        assert datum.label == i % 5 and not datum.encoded
        assert (datum.channels, datum.height, datum.width) == (3, 9, 11)
        assert np.array_equal(dm.datum_to_array(datum), cv2.imread(str(paths[i])).transpose(2, 0, 1))


def test_gray_resized_round_trip(tmp_path):
    list_file, paths = write_images(tmp_path, n=3, size=(9, 11), color=True)
    db = tmp_path / "db"
    convert_imageset(f"{tmp_path}/", str(list_file), str(db), gray=True, resize_height=5, resize_width=6)
    for (_, datum), path in zip(iter_datums(db), paths):
        want = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (6, 5))
        assert np.array_equal(dm.datum_to_array(datum)[0], want)


def test_encoded_jpegs_keep_the_file_and_decode_like_opencv(tmp_path):
    list_file, paths = write_images(tmp_path, n=4, size=(16, 20), ext="jpg")
    db = tmp_path / "db"
    convert_imageset(f"{tmp_path}/", str(list_file), str(db), encoded=True)
    for (_, datum), path in zip(iter_datums(db), paths):
        assert datum.encoded and datum.data == path.read_bytes()       # Caffe's ReadFileToDatum
        image, layout = dm.decode_datum(datum)
        assert layout == "hwc" and np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    # Resizing forces a re-encode with OpenCV (encode_type implies --encoded).
    db2 = tmp_path / "db2"
    convert_imageset(f"{tmp_path}/", str(list_file), str(db2), encode_type="png", resize_height=8, resize_width=10)
    for (_, datum), path in zip(iter_datums(db2), paths):
        want = cv2.resize(cv2.imread(str(path)), (10, 8))
        assert datum.encoded and np.array_equal(dm.decode_datum(datum)[0], want)


def test_unreadable_images_are_skipped_keeping_line_indices(tmp_path):
    list_file, _ = write_images(tmp_path, n=3)
    list_file.write_text(list_file.read_text().replace("img/001.png", "img/missing.png"))
    db = tmp_path / "db"
    assert convert_imageset(f"{tmp_path}/", str(list_file), str(db)) == 2
    assert [k[:8] for k, _ in iter_lmdb(db)] == [b"00000000", b"00000002"]


def test_blank_lines_use_up_their_line_index(tmp_path):
    """Caffe reads the list with std::getline: a blank line is line '' (its image fails to load)."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "list.txt").write_bytes(b"a.png 0\r\n\r\n\nb.png 1\n")
    for encoded in (False, True):       # (with --encoded Caffe's guess of the encoding of '' aborts instead)
        db = tmp_path / f"db{encoded}"
        assert convert_imageset(f"{tmp_path}/", str(tmp_path / "list.txt"), str(db), encoded=encoded) == 2
        assert [k for k, _ in iter_lmdb(db)] == [b"00000000_a.png", b"00000003_b.png"]
    db = tmp_path / "cli_db"
    assert cli(["convert_imageset", f"{tmp_path}/", str(tmp_path / "list.txt"), str(db)]) == 0
    assert [k for k, _ in iter_lmdb(db)] == [b"00000000_a.png", b"00000003_b.png"]


@pytest.mark.parametrize("labels, want", [(["", "", ""], [0, 0, 0]), ([" 1.0", " 2.7", " -3"], [1, 2, -3])])
def test_list_labels_are_read_with_atoi(tmp_path, labels, want):
    """The label is atoi() of what follows the last space; a line without one is all name, label 0."""
    write_images(tmp_path, n=3, size=(4, 5))
    list_file = tmp_path / "odd.txt"
    list_file.write_text("".join(f"img/{i:03d}.png{label}\n" for i, label in enumerate(labels)))
    db = tmp_path / "db"
    assert convert_imageset(f"{tmp_path}/", str(list_file), str(db)) == 3
    records = list(iter_datums(db))
    assert [k for k, _ in records] == [f"{i:08d}_img/{i:03d}.png".encode() for i in range(3)]
    assert [d.label for _, d in records] == want


def test_writers_are_atomic(tmp_path, monkeypatch):
    list_file, _ = write_images(tmp_path, n=5)
    import pycaffe_lite.data.convert as conv
    real, calls = conv.read_image_to_datum, []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt        # Ctrl-C in the middle of the conversion
        return real(*args, **kw)

    monkeypatch.setattr(conv, "read_image_to_datum", failing)
    with pytest.raises(KeyboardInterrupt):
        convert_imageset(f"{tmp_path}/", str(list_file), str(tmp_path / "db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "list.txt"]   # nothing left behind


def test_existing_database_is_refused_and_overwrite_replaces_it(tmp_path):
    db = tmp_path / "db"
    with LMDBWriter(db) as w:
        w.put(b"a", b"1")
    with pytest.raises(FileExistsError, match="already exists"):
        LMDBWriter(db)
    with LMDBWriter(db, overwrite=True) as w:
        w.put(b"b", b"2")
    assert list(iter_lmdb(db)) == [(b"b", b"2")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_map_grows_when_full(tmp_path):
    with LMDBWriter(tmp_path / "db", map_size=1 << 16, commit_every=50) as w:
        for i in range(300):
            w.put(f"{i:08d}", bytes(4000))
    assert len(list(iter_lmdb(tmp_path / "db"))) == 300


def test_reader_wraps_and_splits_ranks(tmp_path):
    with LMDBWriter(tmp_path / "db") as w:
        for i in range(5):
            w.put(f"{i:08d}", str(i).encode())
    with LMDBReader(tmp_path / "db") as r:
        assert [r.next()[1] for _ in range(7)] == [b"0", b"1", b"2", b"3", b"4", b"0", b"1"]
    with LMDBReader(tmp_path / "db", rank=1, num_ranks=2) as r, LMDBReader(tmp_path / "db", rank=0, num_ranks=2) as r0:
        assert [r.next()[1] for _ in range(3)] == [b"1", b"3", b"0"]     # offsets 1, 3, 5 (wrapped)
        assert [r0.next()[1] for _ in range(3)] == [b"0", b"2", b"4"]


def test_compute_image_mean_is_the_float32_mean(tmp_path):
    db = make_lmdb(tmp_path, n=7, size=(6, 5))
    out = tmp_path / "mean.binaryproto"
    assert cli(["compute_image_mean", str(db), str(out)]) == 0
    stack = np.stack([dm.datum_to_array(d) for _, d in iter_datums(db)]).astype(np.float32)
    total = np.zeros(stack.shape[1:], np.float32)
    for image in stack:                      # Caffe: float32 running sum, then / count
        total += image
    mean = dm.load_mean_file(out)
    assert mean.shape == (3, 6, 5) and np.array_equal(mean, total / np.float32(7))
    proto = caffe_pb2.BlobProto.FromString(out.read_bytes())
    assert (proto.num, proto.channels, proto.height, proto.width) == (1, 3, 6, 5)
    assert np.array_equal(compute_image_mean(str(db)), mean)


def test_convert_mnist_from_idx_files(tmp_path):
    ref = np.load(fixture_path("weights", "mnist_t10k_first1000.npz"))
    images, labels = ref["images"][:50, 0], ref["labels"][:50]
    write_idx(tmp_path / "img-idx3-ubyte.gz", images, 2051)
    write_idx(tmp_path / "lab-idx1-ubyte", labels, 2049)
    assert cli(["convert_mnist", str(tmp_path / "img-idx3-ubyte.gz"), str(tmp_path / "lab-idx1-ubyte"),
                str(tmp_path / "mnist_lmdb")]) == 0
    records = list(iter_lmdb(tmp_path / "mnist_lmdb"))
    assert [k for k, _ in records] == [f"{i:08d}".encode() for i in range(50)]
    for i, (_, value) in enumerate(records):
        datum = caffe_pb2.Datum.FromString(value)
        assert not datum.HasField("encoded")          # Caffe's convert_mnist_data never sets it
        assert value == mnist_datum(images[i].ravel(), 28, 28, labels[i]).SerializeToString()
        assert np.array_equal(dm.datum_to_array(datum)[0], images[i]) and datum.label == labels[i]


def test_idx_sizes_are_checked_before_allocating(tmp_path):
    import struct
    (tmp_path / "bad").write_bytes(struct.pack(">iiii", 2051, 1000000, 28, 28) + bytes(10))
    write_idx(tmp_path / "lab", np.zeros(3, np.uint8), 2049)
    with pytest.raises(ValueError, match="header says"):
        convert_mnist(tmp_path / "bad", tmp_path / "lab", tmp_path / "db")
    assert not (tmp_path / "db").exists()


def test_gflags_style_flags(tmp_path):
    list_file, _ = write_images(tmp_path, n=2)
    assert cli(["convert_imageset", "-gray", "-resize_height=4", "--resize_width", "5", "--shuffle=false",
                f"{tmp_path}/", str(list_file), str(tmp_path / "a")]) == 0
    datum = next(iter_datums(tmp_path / "a"))[1]
    assert (datum.channels, datum.height, datum.width) == (1, 4, 5)
    assert cli(["convert_imageset", "--gray=false", f"{tmp_path}/", str(list_file), str(tmp_path / "b")]) == 0
    assert next(iter_datums(tmp_path / "b"))[1].channels == 3
    assert cli(["convert_imageset", f"{tmp_path}/", str(list_file), str(tmp_path / "b")]) == 2   # exists


def test_tools_scripts_run(tmp_path):
    list_file, _ = write_images(tmp_path, n=2)
    run = subprocess.run([sys.executable, str(REPO / "tools" / "convert_imageset.py"), "--encoded",
                          f"{tmp_path}/", str(list_file), str(tmp_path / "db")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Processed 2 files." in run.stderr
    assert next(iter_datums(tmp_path / "db"))[1].encoded


def test_ranks_in_other_processes_read_one_database(tmp_path):
    """Several processes (ranks) read one LMDB at once; a forked child opens its own environment."""
    import multiprocessing
    with LMDBWriter(tmp_path / "db") as w:
        for i in range(6):
            w.put(f"{i:08d}", str(i).encode())
    with LMDBReader(tmp_path / "db") as parent:          # open in the parent before forking
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            got = pool.starmap(_read_rank, [(str(tmp_path / "db"), r) for r in range(2)])
        assert parent.next()[1] == b"0"
    assert got == [[b"0", b"2", b"4"], [b"1", b"3", b"5"]]


def _read_rank(path, rank):
    with LMDBReader(path, rank=rank, num_ranks=2) as reader:
        return [reader.next()[1] for _ in range(3)]


@pytest.mark.parametrize("with_split", [False, True])
def test_a_label_out_of_the_nets_range_names_its_record(tmp_path, with_split):
    """Labels are i % 5; with 3 classes the first bad one is record 3's (through a Split too)."""
    import pycaffe_lite as caffe
    list_file, _ = write_images(tmp_path, n=6, size=(4, 5), color=False)
    db = tmp_path / "db"
    convert_imageset(f"{tmp_path}/", str(list_file), str(db), gray=True)
    accuracy = 'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }' if with_split else ""
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{db}" batch_size: 6 '
        'backend: LMDB } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }\n'
        f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}\n{accuracy}\n')
    net = caffe.Net(str(net_file), caffe.TRAIN)
    try:
        with pytest.raises(ValueError, match=r"got label 3 in record '00000003_img/003.png' of the batch"):
            net.forward()
    finally:
        net.close()
