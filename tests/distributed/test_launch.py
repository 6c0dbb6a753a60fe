"""`pycaffe-lite train --gpu 0,1`: one process per GPU, and its errors without CuPy / NCCL / devices."""
import subprocess
import sys
import time

import dist_helpers as h
import pytest

from pycaffe_lite.distributed import launch


def cupy_usable():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001  (no CuPy, or no driver: either way no GPU here)
        return False


@pytest.mark.skipif(cupy_usable(), reason="CuPy and a GPU are present: the error cases do not arise")
@pytest.mark.parametrize("flag", ["0,1", "all"])
def test_gpu_list_without_cupy_is_one_clear_message(tmp_path, flag):
    h.make_db(tmp_path / "db", n=8)
    (tmp_path / "net.prototxt").write_text(h.net_text(tmp_path / "db", 2))
    (tmp_path / "solver.prototxt").write_text(h.solver_text(tmp_path / "net.prototxt", max_iter=1))
    run = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "train",
                          "--solver", str(tmp_path / "solver.prototxt"), "--gpu", flag],
                         capture_output=True, text=True, timeout=60, env=h.rank_env(), check=False)
    assert run.returncode == 2
    assert "pycaffe-lite train: error: GPU mode needs CuPy and a CUDA device" in run.stderr
    assert "Traceback" not in run.stderr


def test_one_failed_child_ends_the_others():
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    children = [subprocess.Popen(sleeper), subprocess.Popen(failing), subprocess.Popen(sleeper)]
    started = time.monotonic()
    assert launch._wait_children(children, poll=0.05) == 3       # the failure, not the SIGTERMs it caused
    assert time.monotonic() - started < 10
    assert [c.returncode for c in children] == [-15, 3, -15]


def test_children_that_succeed_give_zero():
    children = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2)]
    assert launch._wait_children(children, poll=0.05) == 0


def test_rank_from_the_launcher_environment(monkeypatch):
    for name in launch.RANK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert launch.env_rank() == 0
    monkeypatch.setenv("PMI_RANK", "3")
    assert launch.env_rank() == 3
