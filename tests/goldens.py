"""BVLC Caffe 1.0's golden cases (../shared/fixtures/goldens/<name>.npz), read in one place.

A case holds (../shared/tools/check_goldens.py reads the same format):
  prototxt, phase                 the net and its phase
  in/<blob>, param/<layer>/<i>    inputs and parameters set before net.forward()
  fwd/<blob>                      the blobs after it
  after_fwd/<layer>/<i>           parameters a forward changes (BatchNorm's statistics)
  topdiff/<blob>                  diffs set before net.backward(start=bwd_start_layer)
  bwd/<blob>, pgrad/<layer>/<i>   the diffs after it (inputs in no_grad_inputs are not compared)
  solver_prototxt, num_steps      a solver case: step<k>/<layer>/<i> the parameters after step k,
  loss, lr, logged_loss           the loss blob after each step, and the values Caffe logged

Tests take `golden_params()` to parametrize one test per case (a failing case names itself), and
`golden(name)` for one case; both skip, saying why, when ../shared is absent.
"""
import logging
import re
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from conftest import FIXTURES, fixture_params, fixture_path, require_found
from pycaffe_lite import backend
from pycaffe_lite.proto import caffe_pb2

TOLERANCE = 1e-4
GOLDENS = FIXTURES / "goldens"


class Golden:
    """One case file: `case[key]` and `case.files` as np.load gives them, plus its parts by name."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.stem
        self._npz = np.load(self.path, allow_pickle=False)
        self.files = self._npz.files

    def __getitem__(self, key):
        return self._npz[key]

    def __contains__(self, key):
        return key in self.files

    @property
    def prototxt(self):
        return str(self["prototxt"])

    def net_param(self):
        return text_format.Parse(self.prototxt, caffe_pb2.NetParameter())

    @property
    def phase(self):
        return caffe_pb2.TRAIN if str(self["phase"]) == "TRAIN" else caffe_pb2.TEST

    @property
    def is_solver(self):
        return "solver_prototxt" in self

    def blobs(self, prefix):
        """{blob name: array} of the keys '<prefix><blob>' (prefix 'in/', 'fwd/', 'topdiff/', 'bwd/')."""
        return {key[len(prefix):]: self[key] for key in self.files if key.startswith(prefix)}

    def params(self, prefix):
        """{(layer, index): array} of the keys '<prefix><layer>/<i>' ('param/', 'pgrad/', 'step3/')."""
        found = {}
        for key in self.files:
            if key.startswith(prefix):
                layer, _, index = key[len(prefix):].rpartition("/")
                found[layer, int(index)] = self[key]
        return found

    def write_net(self, folder):
        path = Path(folder) / "net.prototxt"
        path.write_text(self.prototxt)
        return str(path)

    def write_solver(self, folder):
        path = Path(folder) / "solver.prototxt"
        path.write_text(f'net: "{self.write_net(folder)}"\n' + str(self["solver_prototxt"]))
        return str(path)


def golden(name):
    """The case ../shared/fixtures/goldens/<name>.npz, or skip the test saying it is absent."""
    return Golden(fixture_path("goldens", f"{name}.npz"))


def golden_params(solver=None):
    """pytest params, one per case (solver: only solver cases, or only net cases); see
    conftest.fixture_params for ../shared absent or without goldens."""
    paths = sorted(GOLDENS.glob("*.npz"))
    if solver is not None:
        paths = [p for p in paths if ("solver_prototxt" in np.load(p, allow_pickle=False).files) == solver]
    return fixture_params(paths, "goldens", ids=lambda p: p.stem)


def case_from(path):
    """The Golden of a golden_params() value; fails when ../shared holds no golden case."""
    return Golden(require_found(path, f"golden case in {GOLDENS}"))


def relative_error(ours, theirs):
    """max |ours - theirs| / max |theirs| (host or device arrays; a same-sized shape is reshaped)."""
    ours = np.asarray(backend.to_numpy(ours), np.float64)
    theirs = np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        if ours.size != theirs.size:
            return float("inf")
        ours = ours.reshape(theirs.shape)
    return float(np.abs(ours - theirs).max() / (np.abs(theirs).max() + 1e-8)) if theirs.size else 0.0


class Errors(list):
    def compare(self, label, ours, theirs, tolerance=TOLERANCE):
        err = relative_error(ours, theirs)
        if not err <= tolerance:
            self.append(f"{label}: relative error {err:.2e}")

    def compare_each(self, label, ours, theirs, rtol):
        """Every value within rtol of Caffe's (np.testing.assert_allclose's rule)."""
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=rtol, atol=0):
            self.append(f"{label}: {ours.tolist()} against Caffe's {theirs.tolist()} (rtol {rtol})")


def set_inputs_and_params(net, case):
    for (layer, i), value in case.params("param/").items():
        backend.copy_into(net.params[layer][i].data, value)
    for blob, value in case.blobs("in/").items():
        backend.copy_into(net.blobs[blob].data, value)


def net_errors(net, case):
    """One forward and backward at the case's inputs and parameters, against Caffe's results."""
    set_inputs_and_params(net, case)
    net.forward()
    errors = Errors()
    for blob, value in case.blobs("fwd/").items():
        errors.compare(f"forward {blob}", net.blobs[blob].data, value)
    for (layer, i), value in case.params("after_fwd/").items():
        errors.compare(f"after forward {layer}[{i}]", net.params[layer][i].data, value)
    top_diffs = case.blobs("topdiff/")
    if not top_diffs:
        return errors
    for blob, value in top_diffs.items():
        backend.copy_into(net.blobs[blob].diff, value)
    net.backward(start=str(case["bwd_start_layer"]) if "bwd_start_layer" in case else None)
    no_grad = {str(n) for n in case["no_grad_inputs"]} if "no_grad_inputs" in case else set()
    for blob, value in case.blobs("bwd/").items():
        if blob not in no_grad:
            errors.compare(f"backward {blob}", net.blobs[blob].diff, value)
    for (layer, i), value in case.params("pgrad/").items():
        errors.compare(f"param grad {layer}[{i}]", net.params[layer][i].diff, value)
    return errors


def solver_errors(solver, case, caplog=None):
    """The case's solver steps from its inputs and parameters: the parameters and loss after every
    step; with caplog, also the learning rates and losses the solver logged against Caffe's log."""
    net = solver.net
    set_inputs_and_params(net, case)
    loss_blob = next(name for name, w in net.blob_loss_weights.items() if w)
    errors = Errors()
    for step in range(1, int(case["num_steps"]) + 1):
        solver.step(1)
        errors.compare(f"step {step} loss", net.blobs[loss_blob].data, case["loss"][step - 1])
        for (layer, i), value in case.params(f"step{step}/").items():
            errors.compare(f"step {step} {layer}[{i}]", net.params[layer][i].data, value)
    if caplog is not None:
        logged_lr = [float(x) for x in re.findall(r"Iteration \d+, lr = (\S+)", caplog.text)]
        logged_loss = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = (\S+)", caplog.text)]
        errors.compare_each("logged learning rates", logged_lr, case["lr"], 1e-5)
        errors.compare_each("logged losses", logged_loss, case["logged_loss"], 1e-4)
    return errors


def solver_log(caplog):
    """The context in which solver_errors can read the solver's log."""
    return caplog.at_level(logging.INFO, logger="pycaffe_lite")
