"""train --tensorboard / Solver.add_tensorboard: the event files, read back with TensorBoard's own reader."""
import subprocess
import sys

import pytest
from conftest import REPO
from toy_training import NET, SOLVER

from pycaffe_lite.analysis.parse_log import parse_log
from pycaffe_lite.solvers import get_solver

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SOLVER = SOLVER.replace("display: 1", "display: 2")


def _events(logdir):
    accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def _series(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_train_tensorboard_writes_loss_test_outputs_and_lr_at_caffes_iterations(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    run = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                          "--log", "train.log", "--tensorboard", "runs", "--tensorboard_histograms", "2"],
                         check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-2000:]
    events = _events(tmp_path / "runs")
    scalars = set(events.Tags()["scalars"])
    assert {"solver/loss", "solver/smoothed_loss", "solver/lr", "train/loss", "test0/accuracy",
            "test0/loss"} <= scalars
    assert [step for step, _ in _series(events, "solver/loss")] == list(range(6))
    lr = _series(events, "solver/lr")          # step policy: gamma 0.5 every 3 iterations
    assert [step for step, _ in lr] == list(range(6))
    assert [value for _, value in lr] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05], rel=1e-6)
    # the test passes and the displays, at the iterations the log gives them, with the log's values
    train_rows, test_rows = parse_log(str(tmp_path / "train.log"))
    accuracy = _series(events, "test0/accuracy")
    assert [step for step, _ in accuracy] == [0, 3, 6] == [row["NumIters"] for row in test_rows]
    assert [value for _, value in accuracy] == pytest.approx([row["accuracy"] for row in test_rows], rel=1e-5)
    assert [step for step, _ in _series(events, "solver/smoothed_loss")] == [0, 2, 4]
    train_loss = _series(events, "train/loss")      # the train net's output `loss`, as displayed
    logged = {int(row["NumIters"]): row["loss"] for row in train_rows}
    assert [step for step, _ in train_loss] == [0, 2, 4]
    assert [value for _, value in train_loss] == pytest.approx([logged[s] for s, _ in train_loss], rel=1e-5)
    # every 2 iterations: the inner product's weights and bias, norms and histograms
    for tag in ("weight_norm/ip_0", "grad_norm/ip_0", "weight_norm/ip_1", "grad_norm/ip_1"):
        assert [step for step, _ in _series(events, tag)] == [0, 2, 4]
    histograms = events.Tags()["histograms"]
    assert {"weights/ip_0", "gradients/ip_0", "weights/ip_1", "gradients/ip_1"} <= set(histograms)
    assert [event.step for event in events.Histograms("weights/ip_0")] == [0, 2, 4]
    assert events.Histograms("weights/ip_0")[0].histogram_value.num == 12     # 3 x 4 weights


def test_add_tensorboard_from_python_norms_match_the_blobs_and_a_non_root_rank_writes_nothing(tmp_path, monkeypatch):
    import numpy as np
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    solver = get_solver("solver.prototxt")
    writer = solver.add_tensorboard(tmp_path / "root", histograms_every=1)
    solver.step(1)
    weights = solver.net.params["ip"][0].data.copy()
    solver.step(1)           # iteration 1's norm is of the weights after iteration 0's update
    writer.close()
    norms = _series(_events(tmp_path / "root"), "weight_norm/ip_0")
    assert [step for step, _ in norms] == [0, 1]
    assert norms[1][1] == pytest.approx(float(np.linalg.norm(weights.astype(np.float64))), rel=1e-6)

    other = get_solver("solver.prototxt")
    monkeypatch.setattr(type(other), "is_root", property(lambda self: False))   # a rank other than 0
    other.add_tensorboard(tmp_path / "other", histograms_every=1)
    other.solve()
    assert not (tmp_path / "other").exists()


def test_tensorboard_histograms_without_tensorboard_is_an_error(tmp_path):
    from pycaffe_lite.cli import main
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER.replace('"net.prototxt"', f'"{tmp_path / "net.prototxt"}"'))
    assert main(["train", "--solver", str(tmp_path / "solver.prototxt"), "--tensorboard_histograms", "5"]) == 2
