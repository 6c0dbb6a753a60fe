"""Snapshots against crashes and mistakes: kill -9 while snapshotting, a full disk, two trainings on
one snapshot_prefix, a .solverstate paired with another run's .caffemodel, a symlink where the write
probe goes, and what resume picks when a pair is incomplete."""
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toy_layers import quadratic_layer, write_solver

from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver
from pycaffe_lite.solvers.snapshots import (
    PrefixLock,
    SnapshotPrefixLocked,
    latest_snapshot,
)

REPO = Path(__file__).resolve().parents[2]
SOLVER = ('base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 0 max_iter: {max_iter} '
          'snapshot_prefix: "{prefix}" {extra}\n')


def make(tmp_path, max_iter=6, extra="", shapes=((3, 4), (5,)), folder="snap"):
    prefix = tmp_path / folder / "toy"
    prefix.parent.mkdir(exist_ok=True)
    solver_file = write_solver(tmp_path, SOLVER.format(max_iter=max_iter, prefix=prefix, extra=extra),
                               quadratic_layer(shapes=shapes))
    return get_solver(str(solver_file), allow_python=True), prefix


def test_stale_temporaries_of_this_prefix_are_removed_and_no_others(tmp_path):
    solver, prefix = make(tmp_path)
    folder = prefix.parent
    stale = [".toy_iter_3.caffemodel.k2j3h.tmp", ".toy_iter_3.solverstate.a8s7d.tmp", "toy_iter_0.tempfile"]
    kept = [".other_iter_3.caffemodel.k2j3h.tmp", ".toy_extra_iter_3.caffemodel.x.tmp", "toy_iter_3.caffemodel",
            "notes.tmp"]
    for name in stale + kept:
        (folder / name).write_bytes(b"x")
    solver.step(1)
    names = set(os.listdir(folder))
    assert not names & set(stale), names
    assert set(kept) <= names


def test_a_second_training_on_the_same_prefix_is_refused(tmp_path):
    solver, prefix = make(tmp_path)
    with subprocess.Popen(     # `with`: the pipe is closed after the holder is waited for
            [sys.executable, "-c", "import sys, time; from pycaffe_lite.solvers.snapshots import PrefixLock; "
             "PrefixLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(prefix)],
            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(SnapshotPrefixLocked, match=f"pid {holder.pid}"):
                solver.step(1)
            assert solver.iter == 0
        finally:
            holder.kill()
            holder.wait()
    solver.step(1)   # the kernel dropped the dead holder's lock
    assert solver.iter == 1 and not (prefix.parent / "toy.lock").exists()


def test_solvers_of_one_process_share_the_prefix(tmp_path):
    first, prefix = make(tmp_path)
    with contextlib.ExitStack() as stack:
        lock = PrefixLock(prefix).acquire()
        stack.callback(lock.release)
        first.step(1)
        assert (prefix.parent / "toy.lock").exists()
    assert not (prefix.parent / "toy.lock").exists()


def test_a_pair_from_two_runs_is_refused_on_resume(tmp_path):
    run_a, _ = make(tmp_path)
    run_a.step(2)
    run_a.snapshot()
    run_b, _ = make(tmp_path)
    run_b.step(2)
    _, state_b = run_b.snapshot()   # the same names: run b overwrote run a's pair
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(state_b).read_bytes())
    mixed = tmp_path / "mixed.solverstate"
    state.run_id = run_a.run_id
    mixed.write_bytes(state.SerializeToString())
    fresh, _ = make(tmp_path)
    with pytest.raises(ValueError, match="not a pair"):
        fresh.restore(str(mixed))
    assert fresh.iter == 0
    fresh.restore(state_b)   # the pair as written
    assert fresh.iter == 2


def test_resume_picks_the_newest_complete_pair(tmp_path):
    solver, prefix = make(tmp_path, max_iter=12)
    for _ in range(3):
        solver.step(3)
        solver.snapshot()                                  # pairs at 3, 6, 9
    os.remove(f"{prefix}_iter_9.caffemodel")               # 9: a solverstate without its caffemodel
    solver.step(3)
    solver.snapshot()
    os.remove(f"{prefix}_iter_12.solverstate")             # 12: a caffemodel without its solverstate
    other, _ = make(tmp_path, folder="snap")               # 15: a state paired with another run's weights
    other.iter = 15
    other.snapshot()
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(f"{prefix}_iter_15.solverstate").read_bytes())
    state.run_id = solver.run_id
    Path(f"{prefix}_iter_15.solverstate").write_bytes(state.SerializeToString())
    assert latest_snapshot(str(prefix)) == f"{prefix}_iter_6.solverstate"
    assert latest_snapshot(str(tmp_path / "snap" / "none")) is None


def test_the_write_probe_never_follows_a_symlink(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "snap").mkdir()
    os.symlink(target, tmp_path / "snap" / "toy_iter_0.tempfile")   # the name Caffe's probe opens
    make(tmp_path, extra="snapshot: 2")
    assert target.read_text() == "keep me"


def _kill_run(workdir, delay):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "solvers")]))
    with subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                           "--allow-python", "--snapshot", "auto"], cwd=workdir, env=env,
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as process:
        try:
            seen = ""
            while "Snapshotting" not in seen:
                line = process.stderr.readline()
                if not line:
                    break
                seen = line
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()


def test_kill_9_while_snapshotting_then_auto_resume_finishes(tmp_path):
    """Snapshots of ~8 MB every iteration, killed at random moments after the first one starts."""
    (tmp_path / "snap").mkdir()
    solver_text = SOLVER.format(max_iter=8, prefix="snap/toy", extra="snapshot: 1 solver_mode: CPU")
    write_solver(tmp_path, solver_text, quadratic_layer(shapes=((1000, 1000),)))
    rng = random.Random(21)
    for _ in range(4):
        _kill_run(tmp_path, rng.uniform(0.0, 0.3))
    newest = latest_snapshot(str(tmp_path / "snap" / "toy"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "solvers")]))
    done = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "solver.prototxt",
                           "--allow-python", "--snapshot", "auto"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    if newest:
        assert f"Resuming from snap/{os.path.basename(newest)}" in done.stderr
    assert "Optimization Done." in done.stderr
    names = os.listdir(tmp_path / "snap")
    assert not [n for n in names if n.endswith((".tmp", ".lock"))], names
    assert "toy_iter_8.solverstate" in names


def _mount_tmpfs(path, size):
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")


def test_a_full_disk_leaves_the_earlier_snapshots_intact(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        prefix = disk / "toy"
        text = SOLVER.format(max_iter=10, prefix=prefix, extra="")
        solver = get_solver(str(write_solver(tmp_path, text, quadratic_layer(shapes=((300, 300),)))),
                            allow_python=True)   # 360 KB per file: one pair fits in 1 MB, not two
        solver.step(1)
        first = solver.snapshot()
        saved = [Path(f).read_bytes() for f in first]
        solver.step(1)
        with pytest.raises(OSError):
            solver.snapshot()
        assert [Path(f).read_bytes() for f in first] == saved
        assert sorted(os.listdir(disk)) == sorted(os.path.basename(f) for f in first), "temporaries left"
        resumed = get_solver(str(tmp_path / "solver.prototxt"), allow_python=True)
        resumed.restore(first[1])
        assert resumed.iter == 1
        np.testing.assert_array_equal(resumed.net.learnable_params[0].data.shape, (300, 300))
    finally:
        subprocess.run(["umount", str(disk)], check=False)
