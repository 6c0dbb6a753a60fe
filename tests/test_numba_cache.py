"""Installed read-only for a user without a writable home, the Numba kernels still compile: their cache
goes to a private folder under $TMPDIR (kernels/_cache.py) instead of failing with 'no locator available'."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("numba")

RUN_KERNELS = ("import numpy as np; from pycaffe_lite.kernels import HAVE_NUMBA, elementwise; "
               "x = np.linspace(-1, 1, 1 << 18).astype(np.float32); y = np.empty_like(x); "
               "elementwise._relu(x, y, 0.0) if HAVE_NUMBA else None; "
               "print('HAVE_NUMBA', HAVE_NUMBA, float(y.max()) if HAVE_NUMBA else ''); "
               "import sys; print(elementwise.__file__, file=sys.stderr)")


def _read_only_copy(tmp_path):
    """The package copied under tmp_path/ro, with a home inside it, bind-mounted read-only."""
    if os.geteuid() != 0:
        pytest.skip("a read-only install is simulated with a read-only bind mount, which needs root")
    ro = tmp_path / "ro"
    shutil.copytree(REPO / "pycaffe_lite", ro / "pycaffe_lite",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    (ro / "pycaffe_lite" / "__init__.py").write_text("")   # the kernels and the ground floor, not every layer
    (ro / "home").mkdir()
    for args in (["mount", "--bind", str(ro), str(ro)], ["mount", "-o", "remount,ro,bind", str(ro)]):
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", str(ro)], check=False, capture_output=True)
            pytest.skip(f"cannot make a read-only bind mount here ({done.stderr.strip()})")
    return ro


def test_kernels_compile_when_nothing_numba_knows_is_writable(tmp_path):
    ro = _read_only_copy(tmp_path)
    try:
        tmpdir = tmp_path / "tmp"
        tmpdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
        env.update(PYTHONPATH=str(ro), HOME=str(ro / "home"), TMPDIR=str(tmpdir))
        done = subprocess.run([sys.executable, "-c", RUN_KERNELS], env=env, capture_output=True, text=True,
                              timeout=300, check=False, cwd=tmpdir)   # not the repository's folder
        assert done.returncode == 0, done.stderr
        assert "no locator available" not in done.stderr
        assert done.stdout.split() == ["HAVE_NUMBA", "True", "1.0"], done.stdout
        cache = tmpdir / f"pycaffe_lite-numba-{os.getuid()}"
        assert cache.is_dir(), done.stderr
        assert (cache.stat().st_mode & 0o777) == 0o700
        assert list(cache.rglob("*.nbi")), "nothing was cached"
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_a_cache_folder_that_is_not_ours_is_not_used(tmp_path, monkeypatch):
    from pycaffe_lite.kernels import _cache
    monkeypatch.setattr(_cache.tempfile, "gettempdir", lambda: str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / f"pycaffe_lite-numba-{os.getuid()}")   # planted by another user
    with pytest.raises(PermissionError, match="not a private folder"):
        _cache._private_dir()
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_cache, "_writable", lambda path: False)
    assert _cache.ensure_cache_locator() is False   # the NumPy versions, not a failure
