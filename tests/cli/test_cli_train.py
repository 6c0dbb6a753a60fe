"""`pycaffe-lite train | test | time | device_query` on a tiny net: flags, Caffe's log wording, --log,
resuming, a NaN stop, and clear errors."""
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))
from toy_layers import counter_layer, quadratic_layer, write_solver  # noqa: E402

from pycaffe_lite import backend  # noqa: E402
from pycaffe_lite.cli import main  # noqa: E402
from pycaffe_lite.proto.files import read_weights  # noqa: E402

SOLVER = ('base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3 display: 1 max_iter: {max_iter} '
          'test_iter: 2 test_interval: 2 snapshot: {snapshot} snapshot_prefix: "snap/toy" solver_mode: CPU {extra}\n')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "snap").mkdir()
    return tmp_path


def write(workdir, max_iter=6, snapshot=3, extra="", net=None, name="solver.prototxt"):
    text = SOLVER.format(max_iter=max_iter, snapshot=snapshot, extra=extra)
    solver = write_solver(Path("."), text, net or quadratic_layer() + counter_layer(), name)
    return str(solver)


def losses(log_text):
    return {int(i): float(v) for i, v in re.findall(r"\] Iteration (\d+) \(.*\), loss = (\S+)", log_text)}


def test_train_writes_caffes_log_and_snapshots(workdir, capsys):
    assert main(["train", "--solver", write(workdir), "--allow-python", "--log", "train.log"]) == 0
    text = Path("train.log").read_text()
    assert text == capsys.readouterr().err   # the same lines on stderr and in the file
    prefix = r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+\.py:\d+\] "
    for line in ("Use CPU.", r"Iteration 0, Testing net \(#0\)",
                 r"Iteration 2 \(\S+ iter/s, \S+s/1 iters\), loss = \S+",
                 r"    Train net output #0: quad_loss = \S+ \(\* 1 = \S+ loss\)", r"Iteration 3, lr = 0.05",
                 r"    Test net output #1: score = 1.5", "Snapshotting to binary proto file snap/toy_iter_3.caffemodel",
                 "Snapshotting solver state to binary proto file snap/toy_iter_3.solverstate",
                 r"Iteration 6, loss = \S+", "Optimization Done."):
        assert re.search(prefix + line + "$", text, re.M), line
    assert sorted(os.listdir("snap")) == ["toy_iter_3.caffemodel", "toy_iter_3.solverstate",
                                          "toy_iter_6.caffemodel", "toy_iter_6.solverstate"]


def test_resume_from_snapshot_matches_the_straight_run(workdir):
    assert main(["train", "--solver", write(workdir), "--allow-python", "--log", "full.log"]) == 0
    full = read_weights("snap/toy_iter_6.caffemodel")
    os.rename("snap/toy_iter_6.caffemodel", "full_6.caffemodel")
    assert main(["train", "--solver", "solver.prototxt", "--snapshot", "snap/toy_iter_3.solverstate",
                 "--allow-python", "--log", "resume.log"]) == 0
    resumed = read_weights("snap/toy_iter_6.caffemodel")
    for a, b in zip(full.layer, resumed.layer):
        for x, y in zip(a.blobs, b.blobs):
            np.testing.assert_array_equal(np.asarray(x.data), np.asarray(y.data))
    first, second = losses(Path("full.log").read_text()), losses(Path("resume.log").read_text())
    assert sorted(second) == [3, 4, 5]
    assert all(second[i] == first[i] for i in second)
    assert "SGDSolver: restoring history" in Path("resume.log").read_text()


def test_weights_finetune_and_bad_flag_combinations(workdir, capsys):
    solver = write(workdir, max_iter=3, snapshot=0)
    assert main(["train", "--solver", solver, "--allow-python", "--log", "a.log"]) == 0
    assert main(["train", "--solver", solver, "--allow-python", "--weights", "snap/toy_iter_3.caffemodel",
                 "--log", "b.log"]) == 0
    text = Path("b.log").read_text()
    assert "Finetuning from snap/toy_iter_3.caffemodel" in text
    assert main(["train", "--solver", solver, "--weights", "x.caffemodel", "--snapshot", "y.solverstate"]) == 2
    assert "Give a snapshot to resume training or weights to finetune but not both." in capsys.readouterr().err


def test_python_layers_need_permission(workdir, capsys, monkeypatch):
    monkeypatch.delenv("PYCAFFE_LITE_ALLOW_PYTHON_LAYERS", raising=False)
    assert main(["train", "--solver", write(workdir)]) == 2
    assert "--allow-python" in capsys.readouterr().err


def test_nan_loss_stops_training_naming_the_iteration(workdir):
    solver = write(workdir, max_iter=50, snapshot=0, net=quadratic_layer(extra={"nan_at": 5}))
    assert main(["train", "--solver", solver, "--allow-python", "--log", "nan.log"]) == 1
    text = Path("nan.log").read_text()
    assert re.search(r"^E\d{4} .*\] Iteration 4: loss = nan; training stopped\. .*snap/toy_iter_4\.caffemodel",
                     text, re.M)
    assert os.path.exists("snap/toy_iter_4.solverstate")


def test_test_command_averages_outputs(workdir):
    write(workdir, max_iter=1, snapshot=0)
    assert main(["train", "--solver", "solver.prototxt", "--allow-python", "--log", "t.log"]) == 0
    assert main(["test", "--model", "net.prototxt", "--weights", "snap/toy_iter_1.caffemodel",
                 "--iterations", "3", "--allow-python", "--log", "test.log"]) == 0
    text = Path("test.log").read_text()
    for line in ("Running for 3 iterations.", "Batch 0, score = 1", "Batch 2, score = 6", r"Loss: \S+",
                 r"quad_loss = (\S+) \(\* 1 = \1 loss\)", "score = 2", "score = 4"):
        assert re.search(r"\] " + line + "$", text, re.M), line


def test_time_command_reports_layers_and_passes(workdir):
    write(workdir)
    assert main(["time", "--model", "net.prototxt", "--iterations", "2", "--allow-python", "--log", "time.log"]) == 0
    text = Path("time.log").read_text()
    for line in ("Performing Forward", r"Initial loss: \S+", "Performing Backward", r"\*\*\* Benchmark begins \*\*\*",
                 "Testing for 2 iterations.", r"Iteration: 2 forward-backward time: \S+ ms.",
                 r"      quad\tforward: \S+ ms.", r"      quad\tbackward: \S+ ms.", r"Average Forward pass: \S+ ms.",
                 r"Average Backward pass: \S+ ms.", r"Average Forward-Backward: \S+ ms.", r"Total Time: \S+ ms.",
                 r"\*\*\* Benchmark ends \*\*\*"):
        assert re.search(r"\] " + line + "$", text, re.M), line


def _no_gpu():
    try:
        backend.cupy_module()
        return False
    except RuntimeError:
        return True


@pytest.mark.skipif(not _no_gpu(), reason="a GPU is usable here")
@pytest.mark.parametrize("command", [["train", "--solver", "solver.prototxt", "--allow-python", "--gpu", "0"],
                                     ["time", "--model", "net.prototxt", "--gpu", "0", "--allow-python"],
                                     ["device_query"]])
def test_gpu_without_cupy_is_a_clear_error(workdir, capsys, command):
    write(workdir)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "GPU mode needs CuPy and a CUDA device" in err and "importing cupy failed" in err


def test_bad_gpu_flag(workdir, capsys):
    write(workdir)
    assert main(["train", "--solver", "solver.prototxt", "--gpu", "first"]) == 2
    assert "--gpu takes device ids separated by ',' or 'all', got 'first'" in capsys.readouterr().err


def test_level_and_stage_select_layers_of_the_train_net(workdir):
    extra = quadratic_layer("extra").replace('loss_weight: 1',
                                             'loss_weight: 1 include { phase: TRAIN stage: "big" min_level: 2 }')
    solver = write(workdir, max_iter=1, snapshot=0, net=quadratic_layer() + extra)
    assert main(["train", "--solver", solver, "--allow-python", "--log", "plain.log"]) == 0
    assert "extra_loss" not in Path("plain.log").read_text()
    assert main(["train", "--solver", solver, "--allow-python", "--stage", "big", "--level", "2",
                 "--log", "big.log"]) == 0
    assert re.search(r"Train net output #0: extra_loss = ", Path("big.log").read_text())


def test_time_runs_backward_of_layers_no_loss_reaches(tmp_path):
    from pycaffe_lite.cli.train import _time_net
    from pycaffe_lite.net import Net
    path = tmp_path / "deploy.prototxt"
    path.write_text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }
    ''')
    net = Net(str(path), phase=1)
    assert not net.layer_need_backward[1]
    calls = []
    layer = net.layers[1]
    original = layer.backward
    layer.backward = lambda top, down, bottom: (calls.append(list(down)), original(top, down, bottom))
    _time_net(net, 3)
    # Caffe's time() calls every layer's Backward: parameter gradients are timed, bottoms get none
    assert calls == [[False]] * 3
