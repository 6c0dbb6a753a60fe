"""kernels/jit_log: the first Numba compile is announced, and its count and time reported once."""
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("numba")

SCRIPT = """
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
from numba import njit
from pycaffe_lite.kernels import jit_log
jit_log.watch_jit_compiles()
jit_log.watch_jit_compiles()            # twice: still one listener
add_one = njit(lambda x: x + 1)
add_one(1)
add_one(2.0)                            # a second signature: a second compile
print(jit_log.report_jit_compiles())
print(jit_log.report_jit_compiles())    # once only
"""


def test_compiles_are_announced_then_reported_once():
    run = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("Compiling the Numba CPU kernels") == 1
    assert run.stderr.count("Compiled 2 Numba kernels in ") == 1
    first, second = run.stdout.split("\n")[:2]
    assert first.startswith("(2, ") and second == "None"
