"""End to end against BVLC Caffe's own run (../shared/fixtures/caffe_e2e): in a copy of the folder,
`pycaffe-lite train --solver solver.prototxt --weights init.caffemodel` logs the losses, learning rates
and test outputs Caffe logged (reference.json, 1e-4 relative) and writes the snapshots Caffe wrote;
resuming from Caffe's snap/lenet_iter_30.solverstate reproduces caffe_resume.log."""
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest

from conftest import fixture_path
from pycaffe_lite.cli import main
from pycaffe_lite.proto.files import read_weights

RTOL = 1e-4


def parse_log(text):
    """The values a Caffe log parser reads: train loss and lr per iteration, test outputs per test pass."""
    train = {int(i): float(v) for i, v in re.findall(r"\] Iteration (\d+) \(.*\), loss = (\S+)", text)}
    lr = {int(i): float(v) for i, v in re.findall(r"\] Iteration (\d+), lr = (\S+)", text)}
    final = {int(i): float(v) for i, v in re.findall(r"\] Iteration (\d+), loss = (\S+)", text)}
    tests, current = {}, None
    for line in text.splitlines():
        m = re.search(r"\] Iteration (\d+), Testing net \(#0\)", line)
        if m:
            current = tests.setdefault(int(m.group(1)), {})
        m = re.search(r"\]     Test net output #\d+: (\w+) = (\S+)", line)
        if m and current is not None:
            current[m.group(1)] = float(m.group(2))
    return train, lr, final, tests


def copy_fixture(tmp_path):
    source = fixture_path("caffe_e2e")
    target = tmp_path / "caffe_e2e"
    shutil.copytree(source, target)
    for root, dirs, files in os.walk(target):   # the fixture is read-only
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR)
    return target


def assert_same_weights(ours_file, caffe_file):
    ours, theirs = read_weights(str(ours_file)), read_weights(str(caffe_file))
    theirs_by_name = {layer.name: layer for layer in theirs.layer if layer.blobs}
    compared = 0
    for layer in ours.layer:
        if not layer.blobs:
            continue
        for mine, ref in zip(layer.blobs, theirs_by_name[layer.name].blobs):
            a, b = np.asarray(mine.data, np.float64), np.asarray(ref.data, np.float64)
            err = np.abs(a - b).max() / (np.abs(b).max() + 1e-8)
            assert err <= RTOL, f"{ours_file} {layer.name}: relative error {err:.2e}"
            compared += 1
    assert compared == 8


def test_train_reproduces_caffes_run(tmp_path, monkeypatch):
    folder = copy_fixture(tmp_path)
    reference = json.loads((folder / "reference.json").read_text())
    for name in ("lenet_iter_30.caffemodel", "lenet_iter_30.solverstate", "lenet_iter_60.caffemodel"):
        os.rename(folder / "snap" / name, folder / f"caffe_{name}")
    monkeypatch.chdir(folder)
    assert main(["train", "--solver", "solver.prototxt", "--weights", "init.caffemodel", "--log", "ours.log"]) == 0
    train, lr, final, tests = parse_log((folder / "ours.log").read_text())
    assert sorted(train) == reference["train"]["iterations"]
    np.testing.assert_allclose([train[i] for i in sorted(train)], reference["train"]["loss"], rtol=RTOL)
    np.testing.assert_allclose([lr[i] for i in sorted(lr)], reference["train"]["lr"], rtol=RTOL)
    assert final == {60: pytest.approx(reference["final_forward"]["loss"], rel=RTOL)}
    assert sorted(tests) == [t["iteration"] for t in reference["test"]]
    for t in reference["test"]:
        assert tests[t["iteration"]]["accuracy"] == pytest.approx(t["accuracy"], rel=RTOL)
        assert tests[t["iteration"]]["loss"] == pytest.approx(t["loss"], rel=RTOL)
    for it in (30, 60):
        assert_same_weights(folder / "snap" / f"lenet_iter_{it}.caffemodel",
                            folder / f"caffe_lenet_iter_{it}.caffemodel")
    assert (folder / "snap" / "lenet_iter_60.solverstate").exists()


def test_resume_from_caffes_snapshot_reproduces_caffe_resume_log(tmp_path, monkeypatch):
    folder = copy_fixture(tmp_path)
    os.rename(folder / "snap" / "lenet_iter_60.caffemodel", folder / "caffe_lenet_iter_60.caffemodel")
    monkeypatch.chdir(folder)
    assert main(["train", "--solver", "solver.prototxt", "--snapshot", "snap/lenet_iter_30.solverstate",
                 "--log", "ours.log"]) == 0
    ours = parse_log((folder / "ours.log").read_text())
    caffe = parse_log((folder / "caffe_resume.log").read_text())
    assert sorted(ours[0]) == sorted(caffe[0]) == list(range(30, 60))
    for mine, theirs in zip(ours, caffe):
        assert sorted(mine) == sorted(theirs)
        for key in theirs:
            if isinstance(theirs[key], dict):
                for name, value in theirs[key].items():
                    assert mine[key][name] == pytest.approx(value, rel=RTOL), (key, name)
            else:
                assert mine[key] == pytest.approx(theirs[key], rel=RTOL), key
    assert_same_weights(folder / "snap" / "lenet_iter_60.caffemodel", folder / "caffe_lenet_iter_60.caffemodel")
