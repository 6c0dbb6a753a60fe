"""models/lenet: the solver builds its nets from the repository root (where the README runs it) and
trains a step on the embedded digits; every variant names its solver type and the same net; the
deploy net classifies."""
from pathlib import Path

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.solvers import get_solver, read_solver_file, solver_class

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "models" / "lenet"
SOLVERS = sorted(p.name for p in LENET.glob("lenet_solver*.prototxt"))
TYPES = {"lenet_solver.prototxt": "SGD", "lenet_solver_adam.prototxt": "Adam",
         "lenet_solver_rmsprop.prototxt": "RMSProp", "lenet_solver_adadelta.prototxt": "AdaDelta",
         "lenet_solver_nesterov.prototxt": "Nesterov"}


def test_all_variants_are_there():
    assert sorted(TYPES) == SOLVERS


@pytest.mark.parametrize("name", SOLVERS)
def test_solver_variants(name):
    param = read_solver_file(LENET / name)
    assert param.type == TYPES[name] and solver_class(param.type).type == TYPES[name]
    assert param.net == "models/lenet/lenet_train_test.prototxt" and list(param.test_iter) == [3]
    assert param.snapshot_prefix.startswith("models/lenet/lenet")


@pytest.fixture(scope="module")
def lenet_tree(tmp_path_factory):
    """models/lenet beside freshly built digits LMDBs, laid out as the repository is."""
    import shutil
    import subprocess
    import sys
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(LENET, root / "models" / "lenet", ignore=shutil.ignore_patterns("snapshots", "*.caffemodel",
                                                                                   "*.solverstate"))
    subprocess.run([sys.executable, str(REPO / "data" / "digits" / "build.py"), "--out",
                    str(root / "data" / "digits")], check=True, capture_output=True)
    return root


def test_lenet_solver_trains_a_step(monkeypatch, lenet_tree):
    monkeypatch.chdir(lenet_tree)
    solver = get_solver("models/lenet/lenet_solver.prototxt")
    try:
        assert solver.test_nets[0].blobs["data"].shape == (99, 1, 28, 28)   # 3 x 99 = the 297 test digits
        solver.step(2)
        assert np.isfinite(solver.net.blobs["loss"].data).all()
    finally:
        for net in [solver.net] + solver.test_nets:
            net.close()


def test_deploy_net_outputs_probabilities():
    net = caffe.Net(str(LENET / "deploy.prototxt"), caffe.TEST)
    out = net.forward(data=np.zeros((64, 1, 28, 28), np.float32))["prob"]
    assert out.shape == (64, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
