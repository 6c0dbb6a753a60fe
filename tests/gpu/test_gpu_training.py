"""Training on the GPU follows the CPU: LeNet's loss curve on BVLC Caffe's e2e fixture (data read
from its LMDB through the prefetch thread and the device stager), and the solver goldens."""
import glob
import json
import os
import shutil
import stat

import numpy as np
import pytest

from conftest import FIXTURES, fixture_path
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


GOLDEN_SOLVERS = sorted(glob.glob(os.path.join(str(FIXTURES), "goldens", "solver_*.npz"))
                        + glob.glob(os.path.join(str(FIXTURES), "goldens", "lenet_train_step_*.npz")))


@pytest.mark.parametrize("path", GOLDEN_SOLVERS, ids=lambda p: os.path.basename(p)[:-4])
def test_solver_golden_on_gpu(gpu_mode, path, tmp_path):
    import pycaffe_lite as caffe
    case = np.load(path, allow_pickle=False)
    if "solver_prototxt" not in case.files:
        pytest.skip("not a solver case")
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(str(case["prototxt"]))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net_file}"\n' + str(case["solver_prototxt"]))
    try:
        solver = caffe.get_solver(str(solver_file))
    except ValueError as exc:
        if "unknown layer type" in str(exc):
            pytest.skip(str(exc).split(";")[0])
        raise
    net = solver.net
    backend.check_net_on(net, "gpu:0")
    for key in case.files:
        if key.startswith("param/"):
            body = key[6:]
            layer, i = body[:body.rfind("/")], int(body[body.rfind("/") + 1:])
            backend.copy_into(net.params[layer][i].data, case[key])
        elif key.startswith("in/"):
            backend.copy_into(net.blobs[key[3:]].data, case[key])
    errors = []
    for step in range(1, int(case["num_steps"]) + 1):
        solver.step(1)
        for key in case.files:
            if key.startswith(f"step{step}/"):
                body = key[len(f"step{step}/"):]
                layer, i = body[:body.rfind("/")], int(body[body.rfind("/") + 1:])
                ours = backend.to_numpy(net.params[layer][i].data).astype(np.float64)
                ref = case[key].astype(np.float64)
                err = np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-8)
                if not err <= 1e-4:
                    errors.append(f"step {step} {layer}[{i}]: {err:.2e}")
    assert not errors, errors
