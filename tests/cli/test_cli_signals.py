"""Signals during `pycaffe-lite train` (a real process): SIGHUP snapshots and training goes on;
SIGINT stops after a complete snapshot, from which training resumes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "solvers"))
from toy_layers import quadratic_layer, write_solver  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs POSIX signals")

SOLVER = ('base_lr: 0.01 lr_policy: "fixed" display: 1 max_iter: {max_iter} snapshot_prefix: "snap/toy" '
          'solver_mode: CPU\n')


def start(workdir, *flags):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "solvers")]))
    return subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                             "--allow-python", *flags], cwd=workdir, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def wait_for(process, pattern, lines, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if pattern in line:
            return line
    process.kill()
    raise AssertionError(f"never saw {pattern!r}; log:\n" + "".join(lines[-20:]))


def drive(workdir, steps, *flags):
    """Start training; for each step wait for a log line (a str) or send a signal; then (exit status,
    the whole log, the lines waited for)."""
    process, lines, seen = start(workdir, *flags), [], []
    try:
        for step in steps:
            if isinstance(step, str):
                seen.append(wait_for(process, step, lines))
            else:
                process.send_signal(step)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, "".join(lines) + rest, seen


def _long_training(tmp_path):
    (tmp_path / "snap").mkdir()
    write_solver(tmp_path, SOLVER.format(max_iter=100000), quadratic_layer(extra={"sleep": 0.02}))


def test_sighup_snapshots_and_sigint_stops_with_a_resumable_snapshot(tmp_path):
    _long_training(tmp_path)
    code, log, (_, snap_line, _) = drive(tmp_path, ["] Iteration 3 (", signal.SIGHUP,
                                                    "Snapshotting solver state to binary proto file",
                                                    "] Iteration", signal.SIGINT])   # and training goes on
    assert code == 0, log
    assert "Optimization stopped early." in log and "Traceback" not in log
    hup_state = snap_line.strip().rsplit(" ", 1)[1]
    assert os.path.exists(tmp_path / hup_state)
    states = sorted((tmp_path / "snap").glob("toy_iter_*.solverstate"), key=lambda p: int(p.stem.split("_")[-1]))
    last = states[-1]
    stopped_at = int(last.stem.split("_")[-1])
    assert len(states) == 2 and stopped_at > int(Path(hup_state).stem.split("_")[-1])
    assert (tmp_path / "snap" / f"toy_iter_{stopped_at}.caffemodel").exists()
    assert not [p for p in (tmp_path / "snap").iterdir() if p.name.startswith(".")], "temporary files left"
    # the snapshot is complete: training resumes from it and finishes
    write_solver(tmp_path, SOLVER.format(max_iter=stopped_at + 2), quadratic_layer())
    resumed = start(tmp_path, "--snapshot", f"snap/{last.name}")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert f"Resuming from snap/{last.name}" in err and f"] Iteration {stopped_at + 1} (" in err
    assert "Optimization Done." in err and (tmp_path / "snap" / f"toy_iter_{stopped_at + 2}.solverstate").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_the_net_is_built_is_one_line_and_exit_130(tmp_path, signum):
    from toy_layers import slow_setup_layer
    write_solver(tmp_path, SOLVER.format(max_iter=10), slow_setup_layer() + quadratic_layer())
    code, log, _ = drive(tmp_path, ["SlowSetup: building", signum])
    assert code == 130, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "interrupted" in log.lower(), log


def test_sigterm_snapshots_and_stops_as_sigint_does(tmp_path):
    _long_training(tmp_path)
    code, log, _ = drive(tmp_path, ["] Iteration 3 (", signal.SIGTERM])
    assert code == 0, log
    assert "Optimization stopped early." in log and "Traceback" not in log
    assert list((tmp_path / "snap").glob("toy_iter_*.solverstate")), log


def test_sigterm_effect_none_keeps_training(tmp_path):
    _long_training(tmp_path)
    code, log, _ = drive(tmp_path, ["] Iteration 3 (", signal.SIGTERM, "] Iteration 12 (", signal.SIGINT],
                         "--sigterm_effect", "none")   # still training at iteration 12
    assert code == 0 and "Optimization stopped early." in log


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="watches /proc/PID/maps for NumPy's import")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_the_package_imports_is_one_line_and_exit_130(tmp_path, signum):
    """The signal arrives once NumPy is loaded, while the layers, Numba and the kernels still import."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt"],
                               cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            with open(f"/proc/{process.pid}/maps") as maps:
                if "_multiarray_umath" in maps.read():
                    break
            time.sleep(0.005)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.strip() == "pycaffe-lite: interrupted", err
