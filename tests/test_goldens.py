"""Every result BVLC Caffe 1.0 computed in ../shared/fixtures/goldens, reproduced through the
pycaffe-style API in one test: forward blobs, statistics updated by a forward, input diffs and
parameter gradients after backward, and parameters (and losses) after each solver step."""
import os
import tempfile

import numpy as np

import pycaffe_lite as caffe
from conftest import fixture_path

TOLERANCE = 1e-4


def relative_error(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return float("inf") if ours.size != theirs.size else relative_error(ours.reshape(theirs.shape), theirs)
    return float(np.abs(ours - theirs).max() / (np.abs(theirs).max() + 1e-8)) if theirs.size else 0.0


def entries(case, prefix):
    """(name, index, array) for keys 'prefix<layer>/<i>' or (name, None, array) for 'prefix<blob>'."""
    for key in case.files:
        if key.startswith(prefix):
            body = key[len(prefix):]
            layer, _, index = body.rpartition("/")
            if index.isdigit() and layer:
                yield layer, int(index), case[key]
            else:
                yield body, None, case[key]


def set_inputs_and_params(net, case):
    for layer, i, value in entries(case, "param/"):
        net.params[layer][i].data[...] = value
    for blob, _, value in entries(case, "in/"):
        net.blobs[blob].data[...] = value


def compare(label, ours, theirs, errors):
    err = relative_error(ours, theirs)
    if not err <= TOLERANCE:
        errors.append(f"{label}: relative error {err:.2e}")


def run_solver_case(case, net_file, tmp):
    solver_file = os.path.join(tmp, "solver.prototxt")
    with open(solver_file, "w") as handle:
        handle.write(f'net: "{net_file}"\n' + str(case["solver_prototxt"]))
    solver = caffe.get_solver(solver_file)
    net, errors = solver.net, []
    set_inputs_and_params(net, case)
    loss_blob = next(name for name, w in net.blob_loss_weights.items() if w)
    for step in range(1, int(case["num_steps"]) + 1):
        solver.step(1)
        compare(f"step {step} loss", net.blobs[loss_blob].data, case["loss"][step - 1], errors)
        for layer, i, value in entries(case, f"step{step}/"):
            compare(f"step {step} {layer}[{i}]", net.params[layer][i].data, value, errors)
    return errors


def run_net_case(case, net_file):
    phase = caffe.TRAIN if str(case["phase"]) == "TRAIN" else caffe.TEST
    net = caffe.Net(net_file, phase)
    set_inputs_and_params(net, case)
    net.forward()
    errors = []
    for blob, _, value in entries(case, "fwd/"):
        compare(f"forward {blob}", net.blobs[blob].data, value, errors)
    for layer, i, value in entries(case, "after_fwd/"):
        compare(f"after forward {layer}[{i}]", net.params[layer][i].data, value, errors)
    top_diffs = list(entries(case, "topdiff/"))
    if not top_diffs:
        return errors
    for blob, _, value in top_diffs:
        net.blobs[blob].diff[...] = value
    start = str(case["bwd_start_layer"]) if "bwd_start_layer" in case.files else None
    net.backward(start=start)
    no_grad = set(str(n) for n in case["no_grad_inputs"])
    for blob, _, value in entries(case, "bwd/"):
        if blob not in no_grad:
            compare(f"backward {blob}", net.blobs[blob].diff, value, errors)
    for layer, i, value in entries(case, "pgrad/"):
        compare(f"param grad {layer}[{i}]", net.params[layer][i].diff, value, errors)
    return errors


def run_case(path):
    case = np.load(path, allow_pickle=False)
    with tempfile.TemporaryDirectory() as tmp:
        net_file = os.path.join(tmp, "net.prototxt")
        with open(net_file, "w") as handle:
            handle.write(str(case["prototxt"]))
        if "solver_prototxt" in case.files:
            # The solver cases also hold one forward/backward at the initial parameters.
            return run_net_case(case, net_file) + run_solver_case(case, net_file, tmp)
        return run_net_case(case, net_file)


def test_every_golden_case_matches_bvlc_caffe():
    cases = sorted(fixture_path("goldens").glob("*.npz"))
    assert cases, "no golden cases found"
    failures = {}
    for path in cases:
        try:
            errors = run_case(path)
        except Exception as exc:  # report every case, not just the first failure
            errors = [f"{type(exc).__name__}: {exc}"]
        if errors:
            failures[path.name] = errors
    report = "\n".join(f"{name}: " + "; ".join(errs[:4]) for name, errs in failures.items())
    assert not failures, f"{len(failures)}/{len(cases)} golden cases differ from BVLC Caffe:\n{report}"
