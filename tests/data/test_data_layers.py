"""ImageData, MemoryData, HDF5Data and HDF5Output; Data through a Net on the digits set."""
import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from data_helpers import build_layer, wait_no_prefetch_threads, write_images
from pycaffe_lite.data.datum import image_to_datum
from pycaffe_lite.proto import caffe_pb2


def _image_data(list_file, root, batch=3, extra="", transform="", phase=None):
    return build_layer(f'name: "img" type: "ImageData" top: "data" top: "label" '
                       f'transform_param {{ {transform} }} '
                       f'image_data_param {{ source: "{list_file}" root_folder: "{root}/" '
                       f'batch_size: {batch} {extra} }}',
                       phase)


def test_image_data_reads_resizes_and_wraps(tmp_path):
    list_file, paths = write_images(tmp_path, n=4, size=(10, 12), vary=True)
    layer, tops = _image_data(list_file, tmp_path, extra="new_height: 6 new_width: 7 is_color: false")
    try:
        assert tops[0].shape == (3, 1, 6, 7)
        layer.Forward([], tops)
        layer.Forward([], tops)     # items 3, 0, 1: wraps around the list
        want = [cv2.resize(cv2.imread(str(paths[i]), cv2.IMREAD_GRAYSCALE), (7, 6)) for i in (3, 0, 1)]
        assert np.array_equal(tops[0].data[:, 0], np.stack(want).astype(np.float32))
        assert list(tops[1].data) == [3, 0, 1]
    finally:
        layer.close()


def test_image_data_shuffle_is_seeded(tmp_path):
    list_file, _ = write_images(tmp_path, n=9, size=(6, 6))

    def labels(seed):
        layer, tops = _image_data(list_file, tmp_path, batch=9, extra="shuffle: true", transform=f"seed: {seed}")
        try:
            layer.Forward([], tops)
            first = tops[0].data.copy()
            layer.Forward([], tops)      # second epoch: reshuffled
            return first, tops[0].data.copy()
        finally:
            layer.close()

    a1, a2 = labels(1)
    b1, _ = labels(1)
    c1, _ = labels(2)
    assert np.array_equal(a1, b1) and not np.array_equal(a1, c1) and not np.array_equal(a1, a2)
    assert sorted(a1.reshape(9, -1).sum(1)) == sorted(a2.reshape(9, -1).sum(1))   # same images, new order


@pytest.mark.parametrize("text, want", [
    ("7", 7), ("2.7", 2), (" -3x", -3), ("+4", 4), ("\t12\r", 12), ("abc", 0), ("", 0), ("- 1", 0),
    ("img/0.png", 0), ("4294967298", 2), ("99999999999999999999999", -1),     # glibc: strtol, cast to int
])
def test_caffe_atoi(text, want):
    from pycaffe_lite.data.batches import caffe_atoi
    assert caffe_atoi(text) == want


def test_list_lines_split_at_the_last_space_with_atoi_labels(tmp_path):
    """Caffe: pos = line.find_last_of(' '); name = line.substr(0, pos); label = atoi(line.substr(pos + 1))."""
    from pycaffe_lite.data.batches import read_list_file, split_list_line
    assert split_list_line("a b.png 3") == ("a b.png", 3)
    assert split_list_line("img/0.png") == ("img/0.png", 0)         # no space: all name, atoi(line)
    assert split_list_line("img/0.png 2.7") == ("img/0.png", 2)
    assert split_list_line("img/0.png ") == ("img/0.png", 0)
    assert split_list_line("img/0.png\t5") == ("img/0.png\t5", 0)    # only a space separates
    source = tmp_path / "list.txt"
    source.write_bytes(b"a.png 1\r\nb.png\r\n\nc.png -2\n")
    assert read_list_file(source) == [(1, "a.png", 1), (2, "b.png", 0), (4, "c.png", -2)]


@pytest.mark.parametrize("labels, want", [(["", "", ""], [0, 0, 0]), ([" 1.0", " 2.7", " 3"], [1, 2, 3])])
def test_image_data_reads_lists_as_caffe_does(tmp_path, labels, want):
    write_images(tmp_path, n=3, size=(4, 5))
    list_file = tmp_path / "odd.txt"
    list_file.write_text("".join(f"img/{i:03d}.png{label}\n" for i, label in enumerate(labels)))
    layer, tops = _image_data(list_file, tmp_path)
    try:
        layer.Forward([], tops)
        assert tops[1].data.tolist() == want
    finally:
        layer.close()


def test_image_data_skips_blank_lines_and_names_the_line_of_a_missing_image(tmp_path, caplog):
    from pycaffe_lite.data.datum import DataError
    write_images(tmp_path, n=2, size=(4, 5))
    list_file = tmp_path / "gaps.txt"
    list_file.write_text("img/000.png 0\n\nimg/001.png 1\nimg/gone.png 2\n")
    with caplog.at_level("WARNING"):
        layer, tops = _image_data(list_file, tmp_path, batch=3)
    try:
        assert "skipped 1 blank line(s) (line 2)" in caplog.text
        with pytest.raises(DataError, match=r"Could not load '.*img/gone.png' \(list file '.*gaps.txt', line 4\)"):
            layer.Forward([], tops)
    finally:
        layer.close()


def test_image_data_needs_both_sizes(tmp_path):
    list_file, _ = write_images(tmp_path, n=2)
    with pytest.raises(ValueError, match="new_height and new_width"):
        _image_data(list_file, tmp_path, extra="new_height: 6")


def test_memory_data_batches_and_checks():
    layer, tops = build_layer('name: "m" type: "MemoryData" top: "data" top: "label" '
                              'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }')
    with pytest.raises(RuntimeError, match="set_input_arrays"):
        layer.Forward([], tops)
    data = np.arange(4 * 6, dtype=np.float64).reshape(4, 1, 2, 3)
    layer.set_input_arrays(data, np.arange(4).reshape(4, 1, 1, 1))
    seen = []
    for _ in range(3):
        layer.Forward([], tops)
        assert tops[0].data.dtype == np.float32 and tops[0].shape == (2, 1, 2, 3)
        seen.append(tops[1].data.copy())
    assert [list(s) for s in seen] == [[0, 1], [2, 3], [0, 1]]
    with pytest.raises(ValueError, match="multiple of batch_size"):
        layer.set_input_arrays(data[:3], np.arange(3))
    with pytest.raises(ValueError, match="same first dimension"):
        layer.set_input_arrays(data, np.arange(2))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 2, 3\)"):
        layer.set_input_arrays(data.reshape(4, 2, 1, 3), np.arange(4))


def test_memory_data_add_mat_vector_transforms():
    layer, tops = build_layer('name: "m" type: "MemoryData" top: "data" top: "label" '
                              'transform_param { crop_size: 2 scale: 0.5 } '
                              'memory_data_param { batch_size: 1 channels: 3 height: 2 width: 2 }', caffe_pb2.TEST)
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    layer.add_mat_vector([image], [7])
    layer.Forward([], tops)
    assert np.array_equal(tops[0].data[0], image[1:3, 1:3].transpose(2, 0, 1) * np.float32(0.5))
    assert tops[1].data[0] == 7
    layer.add_datum_vector([image_to_datum(image, 4)])
    layer.Forward([], tops)
    assert tops[1].data[0] == 4


def test_hdf5_data_and_output(tmp_path):
    h5py = pytest.importorskip("h5py")
    files = []
    for f in range(2):
        path = tmp_path / f"part{f}.h5"
        with h5py.File(path, "w") as h:
            h["data"] = np.arange(3 * 4, dtype=np.float64).reshape(3, 4) + 100 * f
            h["label"] = np.arange(3) + 10 * f
        files.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(files) + "\n")
    layer, tops = build_layer(f'name: "h" type: "HDF5Data" top: "data" top: "label" '
                              f'hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 4 }}')
    assert tops[0].shape == (4, 4) and tops[1].shape == (4,)
    layer.Forward([], tops)
    assert list(tops[1].data) == [0, 1, 2, 10]               # crosses into the second file
    layer.Forward([], tops)
    assert list(tops[1].data) == [11, 12, 0, 1]
    from data_helpers import layer_param
    from pycaffe_lite.layer import create_layer
    out = create_layer(layer_param(f'name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
                                   f'hdf5_output_param {{ file_name: "{tmp_path}/out.h5" }}'))
    out.SetUp(tops, [])
    out.Forward(tops, [])
    out.Forward(tops, [])       # appends (Caffe's second forward fails a CHECK)
    out.close()
    with h5py.File(tmp_path / "out.h5", "r") as h:
        assert h["data"].shape == (8, 4, 1, 1) and h["label"].shape == (8, 1, 1, 1)
        assert h["label"][:4].ravel().tolist() == [11, 12, 0, 1]


def test_hdf5_source_lists_whitespace_separated_names(tmp_path):
    """Caffe reads the source with `source_file >> name`: several names may share a line."""
    h5py = pytest.importorskip("h5py")
    from pycaffe_lite.data.datum import DataError
    for f in range(3):
        with h5py.File(tmp_path / f"f{f}.h5", "w") as h:
            h["label"] = np.full(2, f, np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path}/f0.h5 {tmp_path}/f1.h5\n\n\t{tmp_path}/f2.h5  \n")
    layer, tops = build_layer(f'name: "h" type: "HDF5Data" top: "label" '
                              f'hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 6 }}', num_tops=1)
    layer.Forward([], tops)
    assert tops[0].data.tolist() == [0, 0, 1, 1, 2, 2]
    (tmp_path / "list.txt").write_text(f"{tmp_path}/f0.h5\n{tmp_path}/f1.h5 {tmp_path}/gone.h5\n")
    layer, tops = build_layer(f'name: "h" type: "HDF5Data" top: "label" '
                              f'hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 6 }}', num_tops=1)
    with pytest.raises(DataError, match=r"cannot read HDF5 file '.*gone.h5' \(line 2 of source list '.*list.txt'\)"):
        layer.Forward([], tops)


def _hdf5_output(tmp_path, shapes):
    from data_helpers import layer_param
    from pycaffe_lite.blob import Blob
    from pycaffe_lite.layer import create_layer
    bottoms = [Blob(shape) for shape in shapes]
    for i, blob in enumerate(bottoms):
        blob.data[...] = np.arange(blob.data.size).reshape(blob.shape) + 100 * i
    out = create_layer(layer_param(f'name: "o" type: "HDF5Output" bottom: "x" bottom: "y" '
                                   f'hdf5_output_param {{ file_name: "{tmp_path}/out.h5" }}'))
    out.SetUp(bottoms, [])
    return out, bottoms


def test_hdf5_output_writes_4d_datasets_as_caffe(tmp_path):
    """Caffe reshapes each bottom to (num, channels, height, width) before writing it."""
    h5py = pytest.importorskip("h5py")
    out, bottoms = _hdf5_output(tmp_path, [(2, 5), (2,)])
    out.Forward(bottoms, [])
    out.close()
    with h5py.File(tmp_path / "out.h5", "r") as h:
        assert h["data"].shape == (2, 5, 1, 1) and h["data"].dtype == np.float32
        assert h["label"].shape == (2, 1, 1, 1) and h["label"].dtype == np.float32
        assert np.array_equal(h["data"][()].reshape(2, 5), bottoms[0].data)
        assert h["label"][()].ravel().tolist() == [100, 101]
    for shapes, message in ((((2, 1, 1, 1, 3), (2,)), "more than 4 axes"), (((2, 3), (3,)), "same num")):
        out, bottoms = _hdf5_output(tmp_path, shapes)
        with pytest.raises(ValueError, match=message):
            out.Forward(bottoms, [])
        out.close()


def test_data_layer_ignores_the_deprecated_rand_skip(tmp_path, monkeypatch, caplog):
    """Caffe 1.0's data_layer.cpp never reads data_param.rand_skip: the first batch is records 0.."""
    from data_helpers import make_lmdb
    from pycaffe_lite.layers import data as data_layers
    monkeypatch.setattr(data_layers, "_rand_skip_warned", False)
    db = make_lmdb(tmp_path, n=8, size=(4, 5))
    batches = []
    with caplog.at_level("WARNING"):
        for skip, seed in ((0, 1), (7, 1), (7, 2)):
            layer, tops = build_layer(f'name: "d" type: "Data" top: "data" top: "label" '
                                      f'transform_param {{ seed: {seed} }} '
                                      f'data_param {{ source: "{db}" batch_size: 3 rand_skip: {skip} }}')
            try:
                layer.Forward([], tops)
                batches.append((tops[0].data.copy(), tops[1].data.tolist()))
            finally:
                layer.close()
    assert [labels for _, labels in batches] == [[0, 1, 2]] * 3
    assert all(np.array_equal(data, batches[0][0]) for data, _ in batches)
    assert caplog.text.count("rand_skip is deprecated and ignored") == 1


def test_data_layer_on_the_digits_set_through_a_net(tmp_path):
    from pycaffe_lite.data import digits as build
    train, test = build.build(tmp_path)
    net_text = f"""
    layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
             transform_param {{ scale: 0.00390625 }} data_param {{ source: "{train}" batch_size: 64 backend: LMDB }} }}
    layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
             transform_param {{ scale: 0.00390625 }} data_param {{ source: "{test}" batch_size: 100 backend: LMDB }} }}
    """
    from google.protobuf import text_format
    param = text_format.Parse(net_text, caffe_pb2.NetParameter())
    images, labels = build.digits_images()
    for phase, offset, batch in ((caffe.TRAIN, 0, 64), (caffe.TEST, build.NUM_TRAIN, 100)):
        net = caffe.Net(param, phase)
        try:
            net.forward()
            assert net.blobs["data"].shape == (batch, 1, 28, 28)
            want = images[offset:offset + batch, None].astype(np.float32) * np.float32(0.00390625)
            assert np.array_equal(net.blobs["data"].data, want)
            assert np.array_equal(net.blobs["label"].data, labels[offset:offset + batch])
        finally:
            net.close()
    assert not wait_no_prefetch_threads()
