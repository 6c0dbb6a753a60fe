"""pycaffe's scripts and notebooks unchanged: `pycaffe-lite run script.py`, `python -m pycaffe_lite.run`,
alias_as_caffe over a BVLC source checkout without its compiled _caffe, and coord_map's errors as
pycaffe's tests expect them (AssertionError) and as ours are (ValueError)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = '''import sys
import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[1, 2]))
assert isinstance(n.to_proto(), caffe_pb2.NetParameter) and P.Pooling.MAX == 0
print("ran", __name__, sys.argv[1:], caffe.__name__)
sys.exit(int(sys.argv[1]))
'''


@pytest.mark.parametrize("command", [["-m", "pycaffe_lite.cli", "run"], ["-m", "pycaffe_lite.run"]])
def test_a_pycaffe_script_runs_unchanged(tmp_path, command):
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, *command, "script.py", "3", "--flag", "-x"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.strip() == "ran __main__ ['3', '--flag', '-x'] pycaffe_lite", done.stderr
    assert done.returncode == 3


def test_a_script_error_shows_its_traceback(tmp_path):
    (tmp_path / "bad.py").write_text("import caffe\nraise ValueError('from the script')\n")
    done = subprocess.run([sys.executable, "-m", "pycaffe_lite.run", "bad.py"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1 and "Traceback" in done.stderr and "from the script" in done.stderr


def test_alias_over_a_bvlc_checkout_without_compiled_caffe(tmp_path):
    """Every BVLC notebook first puts caffe_root/python on sys.path: without _caffe.so that caffe cannot work."""
    package = tmp_path / "python" / "caffe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .pycaffe import Net\n")
    (package / "pycaffe.py").write_text("from ._caffe import Net\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pycaffe_lite; "
            "print(pycaffe_lite.alias_as_caffe()); import caffe; print(caffe.__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "python")], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.split() == ["True", "pycaffe_lite"], done.stderr
    said = [line for line in done.stderr.splitlines() if "compiled _caffe" in line]
    assert len(said) == 1 and str(package) in said[0], done.stderr
    # a checkout with its compiled extension is a working pycaffe: it wins
    (package / "_caffe.so").write_bytes(b"")
    done = subprocess.run([sys.executable, "-c", code.replace("; import caffe; print(caffe.__name__)", ""),
                           str(tmp_path / "python")], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split() == ["False"], done.stderr


def test_coord_map_errors_are_value_and_assertion_errors():
    import pycaffe_lite as caffe
    from pycaffe_lite import layers as L, params as P
    from pycaffe_lite.coord_map import crop
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, stride=2)
    n.deconv = L.Deconvolution(n.conv, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=8))
    for error in (AssertionError, ValueError):
        with pytest.raises(error, match="negative offset"):
            crop(n.deconv, n.data)
    n.pool = L.Pooling(n.data, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.pool, n.data)
