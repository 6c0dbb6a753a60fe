"""parse_log and plot_training_log over BVLC Caffe's own training log and one written by
`pycaffe-lite train`."""
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pycaffe_lite.analysis.parse_log import parse_log, parse_log_lines, read_csv, terminal_text
from pycaffe_lite.analysis.plot import plot_chart, plot_training_log
from pycaffe_lite.cli import main as cli_main
from conftest import REPO, fixture_path
from toy_training import NET, SOLVER

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def caffe_log():
    return fixture_path("caffe_e2e", "caffe_train.log")


def test_parse_log_reads_caffes_log_as_its_reference(caffe_log):
    reference = json.loads(fixture_path("caffe_e2e", "reference.json").read_text())
    train, test = parse_log(str(caffe_log))
    assert [row["NumIters"] for row in train] == list(range(60))
    assert [row["loss"] for row in train] == pytest.approx(reference["train"]["train_net_output_loss"])
    # Caffe's rule: a row carries the last "lr =" logged before it, and "Iteration N, lr" comes
    # after iteration N's outputs, so the rate shows one row late where it changes.
    lr = reference["train"]["lr"]
    assert [row["LearningRate"] for row in train] == pytest.approx([lr[0]] + lr[:59])
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert [(r["NumIters"], r["accuracy"], r["loss"]) for r in test] == [
        (t["iteration"], pytest.approx(t["accuracy"]), pytest.approx(t["loss"])) for t in reference["test"]]
    seconds = [row["Seconds"] for row in train]
    assert seconds == sorted(seconds) and 0 < seconds[-1] < 5      # seconds since "Solving"


def test_parse_log_command_writes_caffes_csv_files(caffe_log, tmp_path, capsys):
    assert cli_main(["parse_log", str(caffe_log), str(tmp_path)]) == 0
    assert "60 train rows, 4 test rows" in capsys.readouterr().out
    train_csv = tmp_path / "caffe_train.log.train"
    test_csv = tmp_path / "caffe_train.log.test"
    assert train_csv.read_text().splitlines()[0] == "NumIters,Seconds,LearningRate,loss"
    assert test_csv.read_text().splitlines()[0] == "NumIters,Seconds,LearningRate,accuracy,loss"
    rows = read_csv(test_csv)
    assert rows[-1]["NumIters"] == 60 and rows[-1]["accuracy"] == pytest.approx(0.9)
    script = subprocess.run([sys.executable, str(REPO / "tools" / "parse_log.py"), str(caffe_log),
                             str(tmp_path / "tool"), "--delimiter", ";"], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0, script.stderr
    assert (tmp_path / "tool" / "caffe_train.log.train").read_text().startswith("NumIters;Seconds")


def test_timestamp_layouts_and_logs_without_them():
    lines = [
        "I1231 23:59:59.500000 1 solver.cpp:1] Solving LeNet",
        "I1231 23:59:59.900000 1 solver.cpp:1] Iteration 0, loss = 2",
        "I1231 23:59:59.900000 1 solver.cpp:1]     Train net output #0: loss = 2 (* 1 = 2 loss)",
        "I1231 23:59:59.950000 1 solver.cpp:1] Iteration 0, lr = 0.5",
        "I0101 00:00:00.500000 1 solver.cpp:1] Iteration 1, loss = 1e-3",
        "I0101 00:00:00.500000 1 solver.cpp:1]     Train net output #0: loss = 1e-3 (* 1 = 0.001 loss)",
        "I0101 00:00:00.600000 1 solver.cpp:1] Iteration 1, lr = 0.25",
        "I0101 00:00:00.700000 1 solver.cpp:1] Iteration 2, loss = nan",
        "I0101 00:00:00.700000 1 solver.cpp:1]     Train net output #0: loss = nan (* 1 = nan loss)",
    ]
    train, test = parse_log_lines(lines, year=2025)     # the short glog stamps wrap into 2026
    assert [r["Seconds"] for r in train[:2]] == pytest.approx([0.4, 1.0])
    assert [r["LearningRate"] for r in train[:2]] == [0.5, 0.5]
    assert train[1]["loss"] == 1e-3 and math.isnan(train[2]["loss"]) and test == []
    long_stamps = [line.replace("I1231 ", "I20251231 ").replace("I0101 ", "I20260101 ") for line in lines]
    assert [r["Seconds"] for r in parse_log_lines(long_stamps)[0][:2]] == pytest.approx([0.4, 1.0])
    bare = [line.split("] ", 1)[1] for line in lines]
    train, _ = parse_log_lines(bare)
    assert [r["loss"] for r in train[:2]] == [2, 1e-3] and math.isnan(train[0]["Seconds"])


def test_plot_training_log_writes_pngs(caffe_log, tmp_path):
    out = plot_training_log([str(caffe_log), str(fixture_path("caffe_e2e", "caffe_resume.log"))],
                            tmp_path / "curves.png")
    data = Path(out).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert plot_training_log(str(caffe_log), tmp_path / "seconds.png", x="seconds")
    assert Path(plot_chart(0, tmp_path / "acc.png", [str(caffe_log)])).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="not a valid chart type"):
        plot_chart(8, tmp_path / "x.png", [str(caffe_log)])
    # Caffe's command line form: chart type, png, logs (the script run in-process: matplotlib is slow to import)
    spec = importlib.util.spec_from_file_location("plot_training_log_tool", REPO / "tools" / "plot_training_log.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["6", str(tmp_path / "train_loss.png"), str(caffe_log)]) == 0
    assert (tmp_path / "train_loss.png").read_bytes()[:8] == PNG_MAGIC


def test_log_written_by_pycaffe_lite_train_parses_and_plots(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    run = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                          "--log", "train.log", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-2000:]
    train, test = parse_log(str(tmp_path / "train.log"))
    assert [row["NumIters"] for row in train] == list(range(6))
    assert [row["LearningRate"] for row in train] == [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]   # one row late
    assert [row["NumIters"] for row in test] == [0, 3, 6]
    assert all(0 <= row["accuracy"] <= 1 and row["loss"] > 0 for row in test)
    png = plot_training_log(str(tmp_path / "train.log"), tmp_path / "train.png", x="seconds")
    assert Path(png).read_bytes()[:8] == PNG_MAGIC


def test_a_terminal_transcript_of_a_run_with_its_progress_bar_parses(tmp_path):
    """`pycaffe-lite train` on a terminal draws tqdm's bar between its log lines; the transcript (what
    `script` or a terminal's scrollback keeps) holds the bar's redraws ended by carriage returns,
    never inside a log line, and parse_log reads it as it reads the --log file."""
    import os

    from pty_run import run_in_pty
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="2")
    status, screen = run_in_pty([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                                 "--log", "train.log"], tmp_path, env)
    assert status == 0, screen[-3000:]
    assert re.search(r"train: +\d+%\|.*\| \d/6 \[", screen), screen[-3000:]       # the bar was drawn
    for line in screen.split("\n"):   # each log line the terminal shows is whole: no bar after its start
        shown = terminal_text(line)
        if "net output #" in shown or "Iteration" in shown:
            assert re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} ", shown) and "|" not in shown, repr(line)
    (tmp_path / "screen.log").write_text(screen)
    from_screen, from_file = parse_log(str(tmp_path / "screen.log")), parse_log(str(tmp_path / "train.log"))
    assert [row["NumIters"] for row in from_screen[0]] == list(range(6))
    assert [row["NumIters"] for row in from_screen[1]] == [0, 3, 6]
    for ours, theirs in zip(from_screen, from_file):
        assert [{k: v for k, v in row.items() if k != "Seconds"} for row in ours] == \
               [{k: v for k, v in row.items() if k != "Seconds"} for row in theirs]
    assert "\r" not in (tmp_path / "train.log").read_text()      # the --log file never holds a bar
