"""Every result BVLC Caffe 1.0 computed in ../shared/fixtures/goldens, reproduced through the
pycaffe-style API, one test per case (tests/goldens.py reads them): forward blobs, statistics
updated by a forward, input diffs and parameter gradients after backward, and for a solver case
the parameters and loss after each step and the learning rates and losses the solver logged."""
import pytest

import pycaffe_lite as caffe
from goldens import case_from, golden_params, net_errors, solver_errors, solver_log


@pytest.mark.parametrize("path", golden_params())
def test_golden_case_matches_bvlc_caffe(path, tmp_path, caplog):
    case = case_from(path)
    # A solver case also holds one forward/backward at the initial parameters.
    errors = net_errors(caffe.Net(case.write_net(tmp_path), case.phase), case)
    if case.is_solver:
        with solver_log(caplog):
            errors += solver_errors(caffe.get_solver(case.write_solver(tmp_path)), case, caplog)
    assert not errors, f"{case.name} differs from BVLC Caffe: " + "; ".join(errors)
