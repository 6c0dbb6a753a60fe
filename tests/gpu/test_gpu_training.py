"""Training on the GPU follows the CPU: LeNet's loss curve on BVLC Caffe's e2e fixture (data read
from its LMDB through the prefetch thread and the device stager), and the solver goldens."""
import json
import os
import shutil
import stat

import numpy as np
import pytest

from conftest import fixture_path
from goldens import case_from, golden_params, solver_errors
from gpu_helpers import cp, cpu_mode, gpu_mode  # noqa: F401  (fixtures)
from pycaffe_lite import backend
from pycaffe_lite.layer import layer_type_list

pytestmark = pytest.mark.gpu

NEEDED = ("Data", "Convolution", "Pooling", "InnerProduct", "ReLU", "SoftmaxWithLoss", "Accuracy")


def _copy_e2e(tmp_path):
    source = fixture_path("caffe_e2e")
    missing = [t for t in NEEDED if t not in layer_type_list()]
    if missing:
        pytest.skip(f"layer types not available yet: {', '.join(missing)}")
    target = tmp_path / "caffe_e2e"
    shutil.copytree(source, target)
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    return target


def _train(folder, iterations, gpu):
    """Losses of `iterations` SGD steps from init.caffemodel, in CPU or GPU mode."""
    import pycaffe_lite as caffe
    if gpu:
        backend.set_device(0)
        backend.set_mode_gpu()
    else:
        backend.set_mode_cpu()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        solver = caffe.get_solver("solver.prototxt")
        solver.param.snapshot = 0
        solver.load_weights("init.caffemodel")
        if gpu:
            backend.check_net_on(solver.net, "gpu:0")
        losses = []
        for _ in range(iterations):
            solver.step(1)
            losses.append(float(backend.to_numpy(solver.smoothed_loss)))
        solver.net.close()
        for net in solver.test_nets:
            net.close()
        return np.array(losses)
    finally:
        os.chdir(cwd)
        backend.set_mode_cpu()


def test_lenet_loss_curve_on_gpu_matches_cpu(cp, tmp_path):
    folder = _copy_e2e(tmp_path)
    reference = json.loads((folder / "reference.json").read_text())
    cpu = _train(folder, 60, gpu=False)
    gpu = _train(folder, 60, gpu=True)
    # float32 on both; summation orders differ (cuBLAS vs OpenBLAS), so the curves drift apart
    # slowly: tight at the start, looser after 60 momentum steps.
    np.testing.assert_allclose(gpu[:10], cpu[:10], rtol=1e-4)
    np.testing.assert_allclose(gpu, cpu, rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(gpu[:10], reference["train"]["loss_float32"][:10], rtol=1e-4)
    assert gpu[-10:].mean() < 0.5 * gpu[:10].mean()


@pytest.mark.parametrize("path", golden_params(solver=True))
def test_solver_golden_on_gpu(gpu_mode, path, tmp_path):
    import pycaffe_lite as caffe
    case = case_from(path)
    solver = caffe.get_solver(case.write_solver(tmp_path))
    backend.check_net_on(solver.net, "gpu:0")
    errors = solver_errors(solver, case)
    assert not errors, errors
