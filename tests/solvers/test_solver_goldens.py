"""BVLC Caffe's own solver runs (../shared/fixtures/goldens/solver_*.npz, lenet_train_step_sgd.npz),
driven the way pycaffe drives them (get_solver, set params and inputs, step(1)): the parameters after
every step, the loss of every step, and the logged learning rate and loss, within 1e-4."""
import logging
import re

import numpy as np
import pytest

from conftest import fixture_path
from pycaffe_lite.solvers import get_solver

CASES = ["solver_SGD", "solver_Nesterov", "solver_AdaGrad", "solver_RMSProp", "solver_AdaDelta",
         "solver_Adam", "lenet_train_step_sgd"]


def rel(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64).reshape(np.shape(ours))
    return float(np.abs(ours - theirs).max() / (np.abs(theirs).max() + 1e-8))


def split(key):
    body = key.split("/", 1)[1]
    layer, _, index = body.rpartition("/")
    return layer, int(index)


@pytest.mark.parametrize("case_name", CASES)
def test_golden_solver_case(tmp_path, case_name, caplog):
    case = np.load(fixture_path("goldens", f"{case_name}.npz"), allow_pickle=False)
    prototxt = str(case["prototxt"])
    (tmp_path / "net.prototxt").write_text(prototxt)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}"\n' + str(case["solver_prototxt"]))
    solver = get_solver(str(tmp_path / "solver.prototxt"))
    net = solver.net
    for key in case.files:
        if key.startswith("param/"):
            layer, i = split(key)
            net.params[layer][i].data[...] = case[key]
        elif key.startswith("in/"):
            net.blobs[key[3:]].data[...] = case[key]
    loss_blob = next(name for name, w in net.blob_loss_weights.items() if w)
    errors = []
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        for step in range(1, int(case["num_steps"]) + 1):
            solver.step(1)
            if rel(net.blobs[loss_blob].data, case["loss"][step - 1]) > 1e-4:
                errors.append(f"step {step} loss")
            for key in case.files:
                if key.startswith(f"step{step}/"):
                    layer, i = split(key)
                    err = rel(net.params[layer][i].data, case[key])
                    if err > 1e-4:
                        errors.append(f"step {step} {layer}[{i}] error {err:.1e}")
    assert not errors, errors
    logged_lr = [float(x) for x in re.findall(r"Iteration \d+, lr = (\S+)", caplog.text)]
    logged_loss = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = (\S+)", caplog.text)]
    np.testing.assert_allclose(logged_lr, case["lr"], rtol=1e-5)
    np.testing.assert_allclose(logged_loss, case["logged_loss"], rtol=1e-4)
