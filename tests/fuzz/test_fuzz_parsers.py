"""Fuzzing every parser with mutated files (Hypothesis, derandomized: the same inputs each run).

Each input must either load or be refused with pycaffe_lite.FormatError (the project's one error class
for bad files; MemoryLimitError, MissingFileError and DataError are kinds of it): no other exception,
no allocation past the memory limit the test sets, and under a second each (Hypothesis's deadline).
PYCAFFE_LITE_FUZZ_SCALE multiplies the number of inputs (1: the suite's ~3,800 inputs; 10 for a longer hunt).
"""
import os
import resource
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import pycaffe_lite as caffe  # noqa: E402
from pycaffe_lite.cli import main  # noqa: E402
from pycaffe_lite.data.datum import (datum_to_array, decode_bytes, imdecode_flag, load_mean_file,  # noqa: E402
                                     parse_datum)
from pycaffe_lite.proto.files import read_weights  # noqa: E402
from seeds import LEGACY_NET, NET, SOLVER, V0_NET, datum_bytes, mean_file_bytes, mutate  # noqa: E402

SCALE = float(os.environ.get("PYCAFFE_LITE_FUZZ_SCALE", "1"))
LIMIT = 64 << 20     # the memory limit while fuzzing: a net asking for more is refused


def examples(n):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=1000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


OPS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "copy", "truncate", "number", "number"]),
                         st.integers(0, 1 << 20), st.binary(min_size=1, max_size=6)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    caffe.set_memory_limit(LIMIT)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield tmp_path_factory.mktemp("fuzz")
    caffe.set_memory_limit(None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak - before < 4 * LIMIT, f"the process grew by {(peak - before) >> 20} MiB while fuzzing"


def refused_or_loaded(load, *args):
    """Run a parser; only FormatError may come out."""
    try:
        return load(*args)
    except caffe.FormatError:
        return None


def _write(workdir, name, payload):
    path = workdir / name
    path.write_bytes(payload)
    return str(path)


def _build(path):
    net = caffe.Net(path, caffe.TRAIN)
    net.close()


@pytest.mark.parametrize("seed", [NET, LEGACY_NET, V0_NET], ids=["net", "legacy_v1", "legacy_v0"])
def test_prototxt_through_the_api(workdir, seed):
    @examples(500 if seed is NET else 250)
    @given(OPS)
    def run(ops):
        refused_or_loaded(_build, _write(workdir, "net.prototxt", mutate(seed.encode(), ops)))
    run()


def test_prototxt_through_the_cli(workdir, capsys):
    @examples(100)
    @given(OPS)
    def run(ops):
        path = _write(workdir, "cli.prototxt", mutate(NET.encode(), ops))
        assert main(["summarize", "--model", path]) in (0, 2)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert len([line for line in err.splitlines() if ": error: " in line]) <= 1, err
    run()


def _seed_net(workdir):
    path = workdir / "seed.prototxt"
    path.write_text(NET)
    return caffe.Net(str(path), caffe.TRAIN)


def test_caffemodel(workdir):
    net = _seed_net(workdir)
    seed = net.to_proto().SerializeToString()

    @examples(600)
    @given(OPS)
    def run(ops):
        path = _write(workdir, "w.caffemodel", mutate(seed, ops))
        refused_or_loaded(net.copy_from, path)
        refused_or_loaded(read_weights, path)
    run()
    net.close()


def test_solverstate(workdir):
    net_file = workdir / "solver_net.prototxt"
    net_file.write_text(NET)
    solver_file = workdir / "solver.prototxt"
    solver_file.write_text(SOLVER.replace("NET", str(net_file)).replace("PREFIX", str(workdir / "snap")))
    solver = caffe.get_solver(str(solver_file))
    solver.step(1)
    _, state_file = solver.snapshot()
    seed = Path(state_file).read_bytes()

    @examples(400)
    @given(OPS)
    def run(ops):
        refused_or_loaded(solver.restore, _write(workdir, "s.solverstate", mutate(seed, ops)))
    run()
    solver.net.close()


def test_binaryproto_mean_file(workdir):
    seed = mean_file_bytes()

    @examples(700)
    @given(OPS)
    def run(ops):
        refused_or_loaded(load_mean_file, _write(workdir, "mean.binaryproto", mutate(seed, ops)))
    run()


@pytest.mark.parametrize("encoded", [False, True], ids=["raw", "encoded"])
def test_lmdb_datum_records(encoded):
    seed = datum_bytes(encoded)

    def decode(value):
        datum = parse_datum(value, "fuzz_lmdb", b"00000001")
        if datum.encoded:
            return decode_bytes(datum.data, imdecode_flag(), "fuzz_lmdb", b"00000001")
        return datum_to_array(datum, "fuzz_lmdb", b"00000001")

    @examples(500)
    @given(OPS)
    def run(ops):
        out = refused_or_loaded(decode, mutate(seed, ops))
        assert out is None or isinstance(out, np.ndarray)
    run()
