"""Shared test fixtures: where BVLC Caffe's files live, and small builders."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("PYCAFFE_LITE_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture_path(*parts):
    """Path under ../shared/fixtures, or skip the test with the reason."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (BVLC Caffe's files live in ../shared/fixtures)")
    return path


@pytest.fixture
def fixtures():
    return fixture_path()


def require_cupy():
    """The cupy module, or skip the test saying what is missing (GPU tests and the harness's CuPy runs)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'pycaffe-lite[gpu]')")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver
        pytest.skip(f"CuPy is installed but CUDA is unusable: {exc}")
    if count < 1:
        pytest.skip("CuPy is installed but no CUDA device is visible")
    return cupy
