"""convert (.caffemodel <-> .npz) and Caffe's upgrade tools."""
import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.proto.files import read_weights
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.zoo.convert import (caffemodel_to_npz, load_npz, npz_to_caffemodel, upgrade_net_proto_binary,
                                      upgrade_net_proto_text, upgrade_solver_proto_text, weights_to_arrays)
from pycaffe_lite.proto.text import parse_text, to_text

from conftest import fixture_path


def test_caffemodel_npz_round_trip(tmp_path):
    weights = fixture_path("weights", "lenet_iter_5000.caffemodel")
    npz = tmp_path / "lenet.npz"
    arrays = caffemodel_to_npz(weights, npz)
    with np.load(npz, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["conv1/0", "conv1/1", "conv2/0", "conv2/1",
                                         "ip1/0", "ip1/1", "ip2/0", "ip2/1"]
        assert archive["conv1/0"].shape == (20, 1, 5, 5) and archive["ip1/0"].shape == (500, 800)
    model = fixture_path("caffe", "examples", "mnist", "lenet_train_test.prototxt")
    back = tmp_path / "lenet.caffemodel"
    npz_to_caffemodel(npz, back, model=model)
    again = weights_to_arrays(back)
    assert list(again) == list(arrays)
    for name in arrays:
        for a, b in zip(arrays[name], again[name]):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # The layer definitions come from the model, as Caffe's net.save writes them.
    written = read_weights(str(back))
    assert [l.type for l in written.layer if l.blobs] == ["Convolution", "Convolution",
                                                          "InnerProduct", "InnerProduct"]
    # Without a model: names and blobs only, which is what copy_from reads.
    bare = tmp_path / "bare.caffemodel"
    main(["convert", str(npz), str(bare)])
    assert [l.name for l in read_weights(str(bare)).layer] == ["conv1", "conv2", "ip1", "ip2"]


def test_slashes_in_layer_names_and_float64(tmp_path):
    arrays = {"conv1/7x7_s2": [np.ones((2, 3, 1, 1), np.float64), np.zeros(2, np.float64)]}
    from pycaffe_lite.zoo.convert import arrays_to_weights, save_npz
    param = arrays_to_weights(arrays)
    save_npz(weights_to_arrays(param), tmp_path / "g.npz")
    loaded = load_npz(tmp_path / "g.npz")
    assert list(loaded) == ["conv1/7x7_s2"] and loaded["conv1/7x7_s2"][0].dtype == np.float64


def test_npz_with_pickles_or_bad_keys_is_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, **{"conv1/0": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="Object arrays cannot be loaded|not a NumPy"):
        load_npz(evil)
    odd = tmp_path / "odd.npz"
    np.savez(odd, weights=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="not '<layer>/<index>'"):
        load_npz(odd)
    gap = tmp_path / "gap.npz"
    np.savez(gap, **{"fc/1": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="expected 0..0"):
        load_npz(gap)
    ints = tmp_path / "ints.npz"
    np.savez(ints, **{"fc/0": np.ones(3, np.int64)})
    with pytest.raises(ValueError, match="weights are floats"):
        load_npz(ints)


def test_npz_to_caffemodel_needs_matching_layers(tmp_path):
    npz = tmp_path / "x.npz"
    np.savez(npz, **{"nonexistent/0": np.ones(3, np.float32)})
    model = fixture_path("caffe", "examples", "mnist", "lenet.prototxt")
    with pytest.raises(ValueError, match="no layer named 'nonexistent'"):
        npz_to_caffemodel(npz, tmp_path / "x.caffemodel", model=model)
    assert not (tmp_path / "x.caffemodel").exists()


def test_upgrade_net_proto_text_matches_caffe(tmp_path):
    legacy = fixture_path("legacy", "lenet_train_test_v1.prototxt")
    expected = fixture_path("legacy", "lenet_train_test_upgraded.prototxt").read_text()
    out = tmp_path / "upgraded.prototxt"
    assert main(["upgrade_net_proto_text", str(legacy), str(out)]) == 0
    assert out.read_text() == expected
    # Already current: written unchanged.
    again = tmp_path / "again.prototxt"
    assert upgrade_net_proto_text(out, again) is False
    assert again.read_text() == expected


def test_upgrade_net_proto_binary(tmp_path):
    legacy = parse_text(fixture_path("legacy", "lenet_train_test_v1.prototxt").read_text(),
                        caffe_pb2.NetParameter())
    blob = legacy.layers[2].blobs.add()          # conv1 with a legacy 4-D blob
    blob.num, blob.channels, blob.height, blob.width = 20, 1, 5, 5
    blob.data.extend(np.arange(500, dtype=np.float32))
    binary = tmp_path / "old.caffemodel"
    binary.write_bytes(legacy.SerializeToString())
    out = tmp_path / "new.caffemodel"
    assert main(["upgrade_net_proto_binary", str(binary), str(out)]) == 0
    upgraded = caffe_pb2.NetParameter()
    upgraded.ParseFromString(out.read_bytes())
    assert not upgraded.layers and upgraded.layer[2].type == "Convolution"
    assert list(upgraded.layer[2].blobs[0].data) == list(range(500))
    stripped = caffe_pb2.NetParameter()
    stripped.CopyFrom(upgraded)
    del stripped.layer[2].blobs[:]
    assert to_text(stripped) == fixture_path("legacy", "lenet_train_test_upgraded.prototxt").read_text()
    assert upgrade_net_proto_binary(out, tmp_path / "same.caffemodel") is False


def test_upgrade_solver_proto_text(tmp_path):
    old = tmp_path / "solver.prototxt"
    old.write_text('net: "x.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    out = tmp_path / "new.prototxt"
    assert main(["upgrade_solver_proto_text", str(old), str(out)]) == 0
    assert out.read_text() == 'base_lr: 0.01\nnet: "x.prototxt"\ntype: "Nesterov"\n'   # field order
    assert upgrade_solver_proto_text(out, tmp_path / "again.prototxt") is False


def test_convert_cli_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "a.caffemodel"), str(tmp_path / "b.caffemodel")]) == 2
    assert "one side must be .npz" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.caffemodel"), str(tmp_path / "b.npz")]) == 2
    assert "missing.caffemodel" in capsys.readouterr().err


def test_npz_to_caffemodel_checks_blob_shapes_against_the_model(tmp_path, capsys):
    arrays = caffemodel_to_npz(fixture_path("weights", "lenet_iter_5000.caffemodel"), tmp_path / "good.npz")
    deploy = fixture_path("caffe", "examples", "mnist", "lenet.prototxt")
    bad = dict(arrays, ip1=[np.ones((10, 800), np.float32), arrays["ip1"][1]])
    np.savez(tmp_path / "bad.npz", **{f"{k}/{i}": a for k, v in bad.items() for i, a in enumerate(v)})
    out = tmp_path / "bad.caffemodel"
    assert main(["convert", str(tmp_path / "bad.npz"), str(out), "--model", str(deploy)]) == 2
    err = capsys.readouterr().err
    assert ("Cannot copy param 0 weights from layer 'ip1'; shape mismatch. Source param shape is (10, 800); "
            "target param shape is (500, 800)") in err and "bad.npz" in err
    assert not out.exists()
    # One blob too few.
    np.savez(tmp_path / "few.npz", **{"conv1/0": arrays["conv1"][0]})
    with pytest.raises(ValueError, match="incompatible number of blobs for layer 'conv1': source has 1"):
        npz_to_caffemodel(tmp_path / "few.npz", tmp_path / "few.caffemodel", model=deploy)
    assert not (tmp_path / "few.caffemodel").exists()
    # A train_test net whose LMDBs are not here: the shapes its definitions fix are still checked.
    train = fixture_path("caffe", "examples", "mnist", "lenet_train_test.prototxt")
    with pytest.raises(ValueError, match=r"Source param shape is \(10, 800\); target param shape is \(500, \?\)"):
        npz_to_caffemodel(tmp_path / "bad.npz", out, model=train)
    assert not out.exists()
    # The right shapes convert, and Caffe's copy_from takes them.
    npz_to_caffemodel(tmp_path / "good.npz", tmp_path / "good.caffemodel", model=deploy)
    assert weights_to_arrays(tmp_path / "good.caffemodel")["ip1"][0].shape == (500, 800)
