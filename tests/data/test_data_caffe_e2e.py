"""Our Data layer and convert_imageset against BVLC Caffe's own files (fixtures/caffe_e2e)."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
import pycaffe_lite.layers  # noqa: F401
from data_helpers import fixture_path, wait_no_prefetch_threads
from pycaffe_lite.proto import caffe_pb2


def _data_only_net(prototxt):
    """The fixture's net with only its Data layers (the rest of LeNet is not this test's business)."""
    net = text_format.Parse(prototxt.read_text(), caffe_pb2.NetParameter())
    keep = [layer for layer in net.layer if layer.type == "Data"]
    del net.layer[:]
    net.layer.extend(keep)
    return net


@pytest.fixture
def e2e(monkeypatch):
    folder = fixture_path("caffe_e2e")
    monkeypatch.chdir(folder)           # the prototxt's sources are relative, as in Caffe
    return folder


@pytest.mark.parametrize("phase,prefix", [(caffe.TRAIN, "train"), (caffe.TEST, "test")])
def test_first_batches_match_caffe(e2e, phase, prefix):
    ref = np.load(e2e / "data_layer_ref.npz")
    net = caffe.Net(_data_only_net(e2e / "train_test.prototxt"), phase)
    try:
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        assert data.dtype == np.float32 and data.shape == ref[f"{prefix}_data"].shape
        assert np.array_equal(data, ref[f"{prefix}_data"])          # bit for bit
        assert np.array_equal(label, ref[f"{prefix}_label"])
    finally:
        net.close()
    assert not wait_no_prefetch_threads()


def test_rand_skip_is_ignored_like_caffe(e2e):
    """Caffe 1.0's Data layer never reads the deprecated data_param.rand_skip."""
    ref = np.load(e2e / "data_layer_ref.npz")
    param = _data_only_net(e2e / "train_test.prototxt")
    for layer in param.layer:
        layer.data_param.rand_skip = 100
    for seed in (1, 2):
        caffe.set_random_seed(seed)
        net = caffe.Net(param, caffe.TRAIN)
        try:
            net.forward()
            assert np.array_equal(net.blobs["data"].data, ref["train_data"])
            assert np.array_equal(net.blobs["label"].data, ref["train_label"])
        finally:
            net.close()


def test_train_reader_wraps_like_caffe(e2e):
    """200 records, batch 20: batch 10 is batch 0 again (README "Data order")."""
    ref = np.load(e2e / "data_layer_ref.npz")
    net = caffe.Net(_data_only_net(e2e / "train_test.prototxt"), caffe.TRAIN)
    try:
        first_labels = []
        for _ in range(11):
            net.forward()
            first_labels.append(net.blobs["label"].data.copy())
        assert np.array_equal(net.blobs["data"].data, ref["train_data"])
        assert np.array_equal(first_labels[10], first_labels[0])
    finally:
        net.close()


def test_train_and_test_nets_read_independently(e2e):
    ref = np.load(e2e / "data_layer_ref.npz")
    param = _data_only_net(e2e / "train_test.prototxt")
    train, test = caffe.Net(param, caffe.TRAIN), caffe.Net(param, caffe.TEST)
    try:
        for _ in range(3):
            train.forward()
        test.forward()
        assert np.array_equal(test.blobs["data"].data, ref["test_data"])
        other = caffe.Net(param, caffe.TRAIN)         # a second reader of the same database
        try:
            other.forward()
            assert np.array_equal(other.blobs["data"].data, ref["train_data"])
        finally:
            other.close()
    finally:
        train.close()
        test.close()


def test_full_lenet_prototxt(e2e):
    ref = np.load(e2e / "data_layer_ref.npz")
    net = caffe.Net(str(e2e / "train_test.prototxt"), caffe.TEST)
    try:
        net.forward()
        assert np.array_equal(net.blobs["data"].data, ref["test_data"])
    finally:
        net.close()


def test_convert_imageset_gray_writes_caffes_keys_and_bytes(e2e, tmp_path):
    from pycaffe_lite.cli import main
    from pycaffe_lite.data.lmdb_io import iter_lmdb
    out = tmp_path / "train_lmdb"
    assert main(["convert_imageset", "--gray", "--backend=lmdb", "./", "train.txt", str(out)]) == 0
    ours = list(iter_lmdb(out))
    caffes = list(iter_lmdb(e2e / "train_lmdb"))
    assert len(ours) == len(caffes) == 200
    assert [k for k, _ in ours] == [k for k, _ in caffes]
    assert ours[0][0] == b"00000000_images/00000.png"
    assert all(a == b for (_, a), (_, b) in zip(ours, caffes))


def test_digits_builder_reproduces_the_fixture_images(e2e):
    """data/digits/build.py renders sklearn's digits exactly as the fixture's PNGs (digits 0..299)."""
    import cv2

    from pycaffe_lite.data import digits as build
    images, labels = build.digits_images()
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    for i in range(0, 300, 7):
        png = cv2.imread(str(e2e / "images" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(images[i], png), i
    listed = dict(line.split() for line in (e2e / "train.txt").read_text().splitlines())
    assert int(listed["images/00007.png"]) == labels[7]
