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
