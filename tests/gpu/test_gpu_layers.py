"""Every layer's forward and backward on the GPU equals the NumPy path (float32, 1e-5 relative),
and BVLC Caffe's goldens pass in GPU mode."""
import numpy as np
import pytest

from goldens import case_from, golden_params, net_errors
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


@pytest.mark.parametrize("path", golden_params(solver=False))
def test_golden_in_gpu_mode(gpu_mode, path, tmp_path):
    """BVLC Caffe's results again, with every blob on the device (inputs copied in at the edge)."""
    import pycaffe_lite as caffe
    case = case_from(path)
    net = caffe.Net(case.write_net(tmp_path), case.phase)
    backend.check_net_on(net, "gpu:0")
    errors = net_errors(net, case)
    assert not errors, errors
