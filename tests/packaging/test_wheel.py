"""The package as a pip user gets it: `python -m build` (sdist, then the wheel from the sdist), the
wheel's contents, and the wheel installed in a fresh virtualenv used from outside the source tree."""
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md")


def _version():
    import pycaffe_lite
    return pycaffe_lite.__version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(wheel, sdist) built from a copy of the source (the build writes egg-info and build/ where it runs).
    The copy's zoo holds a planted caffemodel and solverstate, as training in the clone leaves them."""
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "pycaffe_lite", src / "pycaffe_lite",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for planted in ("lenet_iter_20.caffemodel", "lenet_iter_20.solverstate"):
        (src / "pycaffe_lite" / "zoo" / "models" / "lenet" / planted).write_bytes(b"weights")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                   check=True, capture_output=True, text=True)
    version = _version()
    return out / f"pycaffe_lite-{version}-py3-none-any.whl", out / f"pycaffe_lite-{version}.tar.gz"


def test_wheel_holds_the_package_the_zoo_and_the_script(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"pycaffe_lite-{_version()}.dist-info/entry_points.txt").decode()
    outside = [n for n in names if not n.startswith(("pycaffe_lite/", f"pycaffe_lite-{_version()}.dist-info/"))]
    assert outside == []
    assert "pycaffe_lite/proto/caffe_pb2.py" in names
    zoo = REPO / "pycaffe_lite" / "zoo" / "models"
    shipped = sorted(str(p.relative_to(REPO)) for p in zoo.glob("*/*") if p.suffix in (".prototxt", ".md"))
    assert shipped and sorted(n for n in names if n.startswith("pycaffe_lite/zoo/models/")) == shipped
    assert not [n for n in names if n.endswith((".caffemodel", ".solverstate"))]
    assert "pycaffe-lite = pycaffe_lite.cli:main" in entry_points


def test_sdist_holds_nothing_from_outside_the_package(dist):
    _, sdist = dist
    with tarfile.open(sdist) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    top = {n.split("/")[0] for n in names}
    assert top <= {"pycaffe_lite", "pycaffe_lite.egg-info", "PKG-INFO", "setup.py", "setup.cfg",
                   "pyproject.toml", "MANIFEST.in", "README.md"}
    assert "pycaffe_lite/zoo/models/lenet/lenet_solver.prototxt" in names
    assert not [n for n in names if n.endswith(".caffemodel")]
