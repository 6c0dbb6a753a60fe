"""`pycaffe-lite train` / `test` as tools/caffe.cpp parses and applies its flags: gflags' single-dash
and `=` forms, and the solver's `weights` (comma lists trimmed, replaced by --weights, cleared by
--snapshot)."""
import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.proto.blobs import array_to_blob_proto
from pycaffe_lite.proto.files import read_weights
from pycaffe_lite.proto import caffe_pb2

# base_lr 0 keeps the weights as loaded, so the snapshot after the one iteration shows what was loaded.
NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -0.25 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "loss" }
'''
SOLVER = ('net: "net.prototxt" base_lr: 0 lr_policy: "fixed" max_iter: 1 display: 1 '
          'snapshot_prefix: "out/s" solver_mode: CPU\n')


def write_model(path, layers):
    """A .caffemodel holding the given layers, each weight and bias filled with one value."""
    model = caffe_pb2.NetParameter(name="w")
    for name, value in layers.items():
        layer = model.layer.add(name=name, type="InnerProduct")
        layer.blobs.add().CopyFrom(array_to_blob_proto(np.full((2, 3 if name == "ip" else 2), value, np.float32)))
        layer.blobs.add().CopyFrom(array_to_blob_proto(np.full((2,), value, np.float32)))
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "net.prototxt").write_text(NET)
    write_model(tmp_path / "A.caffemodel", {"ip": 1.0, "ip2": 2.0})
    write_model(tmp_path / "B.caffemodel", {"ip": 3.0})
    write_model(tmp_path / "C.caffemodel", {"ip2": 7.0})
    return tmp_path


def solver(workdir, extra="", name="solver.prototxt"):
    (workdir / name).write_text(SOLVER + extra)
    return name


def trained(path="out/s_iter_1.caffemodel"):
    """{layer: (first weight, first bias)} of a snapshot."""
    return {layer.name: tuple(float(blob.data[0]) for blob in layer.blobs)
            for layer in read_weights(path).layer if layer.blobs}


def test_solver_weights_entry_is_a_comma_list_trimmed(workdir):
    assert main(["train", "--solver", solver(workdir, 'weights: " A.caffemodel , B.caffemodel "\n')]) == 0
    assert trained() == {"ip": (3.0, 3.0), "ip2": (2.0, 2.0)}   # A, then B over it


def test_cli_weights_replace_the_solver_files_weights(workdir):
    assert main(["train", "--solver", solver(workdir, 'weights: "C.caffemodel"\n'), "--weights", "B.caffemodel"]) == 0
    assert trained() == {"ip": (3.0, 3.0), "ip2": (np.float32(0.1), 0.0)}   # C's ip2 = 7 is not loaded


def test_cli_weights_names_are_trimmed(workdir):
    assert main(["train", "--solver", solver(workdir), "--weights", "A.caffemodel, B.caffemodel"]) == 0
    assert trained() == {"ip": (3.0, 3.0), "ip2": (2.0, 2.0)}


def test_empty_name_in_a_weights_list_is_a_clear_error(workdir, capsys):
    assert main(["train", "--solver", solver(workdir), "--weights", "A.caffemodel,,B.caffemodel"]) == 2
    assert "weights 'A.caffemodel,,B.caffemodel': an empty file name in the list" in capsys.readouterr().err


def test_snapshot_ignores_the_solver_files_weights(workdir):
    assert main(["train", "--solver", solver(workdir, 'weights: "A.caffemodel"\n')]) == 0
    first = trained()
    # The resumed run must not load gone.caffemodel (Caffe clears `weights` when resuming).
    resume = solver(workdir, 'weights: "gone.caffemodel"\nmax_iter: 2\n', name="resume.prototxt")
    assert main(["train", "--solver", resume, "--snapshot", "out/s_iter_1.solverstate"]) == 0
    assert trained("out/s_iter_2.caffemodel") == first == {"ip": (1.0, 1.0), "ip2": (2.0, 2.0)}


@pytest.mark.parametrize("flags", [
    ["-solver", "solver.prototxt", "-weights", "A.caffemodel"],
    ["-solver=solver.prototxt", "-weights=A.caffemodel", "-gpu="],
    ["--solver=solver.prototxt", "--weights=A.caffemodel"],
    ["-solver", "solver.prototxt", "--weights", "A.caffemodel", "-level", "0", "-stage=", "-sigint_effect", "stop",
     "-sighup_effect=none", "-log", "train.log"],
])
def test_train_takes_gflags_style_flags(workdir, flags):
    solver(workdir)
    assert main(["train"] + flags) == 0
    assert trained() == {"ip": (1.0, 1.0), "ip2": (2.0, 2.0)}


def test_test_and_time_take_gflags_style_flags(workdir, capsys):
    assert main(["test", "-model", "net.prototxt", "-weights", "A.caffemodel", "-iterations", "2"]) == 0
    assert "Running for 2 iterations." in capsys.readouterr().err
    assert main(["time", "-model=net.prototxt", "-iterations=1", "-phase", "TRAIN"]) == 0
    assert "Testing for 1 iterations." in capsys.readouterr().err


def test_unknown_single_dash_flag_is_still_an_error(workdir, capsys):
    with pytest.raises(SystemExit):
        main(["train", "-solver", solver(workdir), "-no_such_flag", "1"])
    assert "-no_such_flag" in capsys.readouterr().err


def test_train_help_says_a_non_finite_loss_stops_training(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Unlike Caffe, which trains on through a NaN or infinite loss" in text
    assert "there is no switch to carry on" in text
