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


def fixture_params(found, what, ids=str):
    """pytest params, one per fixture file found under ../shared/fixtures: one skipped param
    saying why when ../shared is absent, one param of None when it is present but `what` holds
    none (the test then fails through require_found)."""
    if not FIXTURES.exists():
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(
            reason=f"{FIXTURES} is absent (BVLC Caffe's files live in ../shared/fixtures)"))]
    return [pytest.param(f, id=ids(f)) for f in found] or [pytest.param(None, id=f"no-{what}")]


def require_found(value, what):
    """A fixture_params value, or fail: ../shared is present but holds no `what`."""
    assert value is not None, f"no {what} under {FIXTURES} although it is present"
    return value


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
