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


def _clean_env(venv):
    """The environment of a user of the venv: no PYTHONPATH pointing at a source tree."""
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYCAFFE_LITE_MODELS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _run(args, cwd, env, timeout=300):
    done = subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_in_a_fresh_virtualenv_trains_lenet_from_outside_the_source_tree(dist, tmp_path):
    """A pip user's session: install the wheel (dependencies from this interpreter's site-packages, so
    nothing is downloaded), list the zoo, import the package, write the LeNet example and train it."""
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = _clean_env(venv)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "--no-index", str(wheel)], tmp_path, env)
    user = tmp_path / "user"
    user.mkdir()

    listed = _run(["pycaffe-lite", "zoo", "list"], user, env).stdout
    assert "lenet" in listed and "bvlc_alexnet" in listed
    script = ("import pycaffe_lite as caffe, pycaffe_lite.zoo; print(caffe.__file__); print(caffe.__version__); "
              "print(caffe.zoo.default_root())")
    where = _run([python, "-c", script], user, env).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == _version()
    assert Path(where[2]).is_relative_to(venv)

    made = _run(["pycaffe-lite", "example", "lenet", "work"], user, env).stdout
    command = "cd work && pycaffe-lite train --solver models/lenet/lenet_solver.prototxt"
    assert command in made
    work = user / "work"
    solver = work / "models" / "lenet" / "lenet_solver.prototxt"
    text = solver.read_text().replace("max_iter: 1000", "max_iter: 20").replace("test_interval: 500",
                                                                                  "test_interval: 20")
    assert "max_iter: 20" in text
    solver.write_text(text + "display: 10\n")
    trained = _run(["pycaffe-lite", "train", "--solver", "models/lenet/lenet_solver.prototxt"], work, env)
    assert "Iteration 20" in trained.stderr and "Test net output #0: accuracy" in trained.stderr
    assert (work / "models" / "lenet" / "lenet_iter_20.caffemodel").is_file()
