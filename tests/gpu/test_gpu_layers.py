"""Every layer's forward and backward on the GPU equals the NumPy path (float32, 1e-5 relative),
and BVLC Caffe's goldens pass in GPU mode."""
import glob
import os

import numpy as np
import pytest

from conftest import FIXTURES
from gpu_helpers import cp, gpu_mode, rel_err  # noqa: F401  (fixtures)
from layer_cases import CASES, run_case
from pycaffe_lite import backend

pytestmark = pytest.mark.gpu

TOLERANCE = 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if c.gpu and not c.shape_only], ids=lambda c: c.id)
def test_layer_on_gpu_equals_numpy(cp, case):
    ref, initial = run_case(case, np)
    ours, _ = run_case(case, cp, params=initial)
    assert sorted(ours) == sorted(ref)
    errors = {k: rel_err(ours[k], ref[k]) for k in ref}
    bad = {k: e for k, e in errors.items() if not e <= TOLERANCE}
    assert not bad, f"{case.id}: relative errors {bad}"


GOLDENS = sorted(glob.glob(os.path.join(str(FIXTURES), "goldens", "*.npz")))


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: os.path.basename(p)[:-4])
def test_golden_in_gpu_mode(gpu_mode, path, tmp_path):
    """BVLC Caffe's results again, with every blob on the device (inputs copied in at the edge)."""
    import pycaffe_lite as caffe
    case = np.load(path, allow_pickle=False)
    if "solver_prototxt" in case.files:
        pytest.skip("solver goldens run in test_gpu_training.py's solver test")
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(str(case["prototxt"]))
    phase = caffe.TRAIN if str(case["phase"]) == "TRAIN" else caffe.TEST
    try:
        net = caffe.Net(str(net_file), phase)
    except ValueError as exc:
        if "unknown layer type" in str(exc):
            pytest.skip(str(exc).split(";")[0])
        raise
    backend.check_net_on(net, "gpu:0")

    def split(key):
        body = key.split("/", 1)[1]
        return body[:body.rfind("/")], int(body[body.rfind("/") + 1:])

    for key in case.files:
        if key.startswith("param/"):
            layer, i = split(key)
            backend.copy_into(net.params[layer][i].data, case[key])
        elif key.startswith("in/"):
            backend.copy_into(net.blobs[key[3:]].data, case[key])
    net.forward()
    errors = []
    for key in case.files:
        if key.startswith("fwd/"):
            errors.append((key, rel_err(net.blobs[key[4:]].data, case[key])))
    if any(k.startswith("topdiff/") for k in case.files):
        for key in case.files:
            if key.startswith("topdiff/"):
                backend.copy_into(net.blobs[key[8:]].diff, case[key])
        if "bwd_start_layer" in case.files:
            net.backward(start=str(case["bwd_start_layer"]))
        else:
            net.backward()
        for key in case.files:
            if key.startswith("bwd/"):
                errors.append((key, rel_err(net.blobs[key[4:]].diff, case[key])))
            elif key.startswith("pgrad/"):
                layer, i = split(key)
                errors.append((key, rel_err(net.params[layer][i].diff, case[key])))
    bad = [(k, e) for k, e in errors if not e <= 1e-4]
    assert errors and not bad, bad
