"""benchmarks/gpu.py without a GPU: it says why and exits 0; its CPU smoke run executes the
SGEMM and convolution parts (with the CUDA kernels' code run through the C++ emulator, checked
against the engine) so that the script is known to work before it reaches a device."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pycaffe_lite import backend

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_without_a_gpu_it_explains_and_exits_cleanly():
    if backend.gpu_available():
        pytest.skip("a GPU is available here: the script would measure it")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no GPU to measure" in out.stdout and "Nothing was run" in out.stdout


def test_cpu_smoke_run_of_the_sgemm_and_conv_parts(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--cpu-smoke", "--parts", "sgemm,conv", "--no-torch"]) == 0
    text = capsys.readouterr().out
    assert "## 1. SGEMM" in text and "## 2. Convolutions" in text and "| toy 3x3 | 1x4x10x9 | 6 |" in text
    assert backend.mode() == "cpu"
