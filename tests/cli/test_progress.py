"""Progress bars: tqdm's, on a terminal only, never with --quiet, never inside a log line."""
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from pty_run import run_in_pty

from pycaffe_lite.data import digits

# tqdm's meter: count/total [elapsed<left, rate]
BAR = re.compile(r"(\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?img/s\]")


@pytest.fixture(scope="module")
def digits_db(tmp_path_factory):
    train, _ = digits.build(tmp_path_factory.mktemp("digits"))
    return train


def _env():
    env = {k: v for k, v in os.environ.items() if k != "PYCAFFE_LITE_MODELS"}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_compute_image_mean_shows_a_bar_on_a_terminal_only(digits_db, tmp_path):
    command = [sys.executable, "-m", "pycaffe_lite.cli", "compute_image_mean", str(digits_db),
               str(tmp_path / "mean.binaryproto")]
    status, screen = run_in_pty(command, tmp_path, _env())
    assert status == 0, screen
    counts = [(int(done), int(total)) for done, total in BAR.findall(screen)]
    assert counts and counts[-1] == (1500, 1500), screen
    assert "compute_image_mean: 100%" in screen

    piped = subprocess.run(command, check=False, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert not BAR.search(piped.stderr) and "\r" not in piped.stderr
    assert "Processed 1500 files." in piped.stderr

    status, screen = run_in_pty(command + ["--quiet"], tmp_path, _env())
    assert status == 0 and not BAR.search(screen) and "Processed 1500 files." in screen


def test_zoo_fetch_counts_bytes_on_a_terminal(tmp_path):
    import hashlib
    payload = os.urandom(3 * 2**20)
    (tmp_path / "weights.caffemodel").write_bytes(payload)
    model = tmp_path / "zoo" / "m"
    model.mkdir(parents=True)
    sha1 = hashlib.sha1(payload).hexdigest()
    (model / "readme.md").write_text(f"---\nname: m\ncaffemodel: m.caffemodel\nsha1: {sha1}\n---\n")
    command = [sys.executable, "-m", "pycaffe_lite.cli", "zoo", "--root", str(tmp_path / "zoo"), "fetch", "m",
               "--from", str(tmp_path / "weights.caffemodel"), "--to", str(tmp_path / "got.caffemodel")]
    status, screen = run_in_pty(command, tmp_path, _env())
    assert status == 0, screen
    assert re.search(r"m: 100%\|.*\| 3\.00M/3\.00M \[\d\d:\d\d<\d\d:\d\d, +[\d.]+[kMG]?B/s\]", screen), screen
    assert (tmp_path / "got.caffemodel").read_bytes() == payload
