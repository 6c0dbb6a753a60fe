"""`pycaffe-lite example`: a zoo model and its embedded data written where a pip user asks."""
import os
from pathlib import Path

import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.proto.files import read_net_param, read_solver_param
from pycaffe_lite.zoo.example import main_solver, write_example
from pycaffe_lite.zoo.manifest import PACKAGE_ZOO


def test_example_writes_the_clone_layout_whose_paths_resolve_from_dest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["example", "lenet", "work"]) == 0
    printed = capsys.readouterr().out
    assert "cd work && pycaffe-lite train --solver models/lenet/lenet_solver.prototxt" in printed
    work = tmp_path / "work"
    for source in (PACKAGE_ZOO / "lenet").iterdir():
        if source.suffix in (".prototxt", ".md"):
            assert (work / "models" / "lenet" / source.name).read_bytes() == source.read_bytes()
    assert not list((work / "models" / "lenet").glob("*.caffemodel"))
    os.chdir(work)     # the written solver and net read their files relative to the working directory
    solver = read_solver_param("models/lenet/lenet_solver.prototxt")
    sources = [layer.data_param.source for layer in read_net_param(solver.net).layer if layer.type == "Data"]
    assert sources and all((Path(s) / "data.mdb").is_file() for s in sources)


def test_example_leaves_identical_files_and_refuses_to_overwrite_a_changed_one(tmp_path):
    write_example("lenet", tmp_path)
    solver = tmp_path / "models" / "lenet" / "lenet_solver.prototxt"
    made = write_example("lenet", tmp_path)       # identical files: nothing to do
    assert made.solver == "models/lenet/lenet_solver.prototxt"
    solver.write_text(solver.read_text() + "# mine\n")
    with pytest.raises(FileExistsError, match="lenet_solver.prototxt exists and differs"):
        write_example("lenet", tmp_path)
    assert solver.read_text().endswith("# mine\n")
    write_example("lenet", tmp_path, force=True)
    assert solver.read_bytes() == (PACKAGE_ZOO / "lenet" / "lenet_solver.prototxt").read_bytes()


def test_a_model_without_embedded_data_is_copied_and_says_so(tmp_path, capsys):
    assert main(["example", "cifar10_quick", str(tmp_path)]) == 0
    assert "data the package does not embed" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()
    assert main_solver(tmp_path / "models" / "cifar10_quick").name == "solver.prototxt"
