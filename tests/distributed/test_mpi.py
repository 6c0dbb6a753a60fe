"""Data-parallel training over MPI, launched with 2 processes under MPICH's mpiexec.

One launch runs all the API-level checks (mpi_checks.py); each test reads its part.  The
equivalence is Caffe's multi-GPU contract: 2 ranks with batch B for k iterations give the
weights that 1 rank with batch 2B gives over the same records.
"""
import json
import sys

import dist_helpers as h
import pytest

pytestmark = pytest.mark.skipif(h.mpi_unavailable() is not None, reason=str(h.mpi_unavailable()))

CHECKS = ["equivalence", "pycaffe_api", "test_split", "mismatch", "no_communicator", "weights_sync", "timeout"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("mpi")
    h.make_db(work / "train_db", n=48)
    h.make_db(work / "test_db", n=32, seed=1)
    run = h.mpiexec(2, sys.executable, str(h.HERE / "mpi_checks.py"), str(work), *CHECKS, timeout=600)
    path = work / "results.json"
    assert path.exists(), f"mpiexec wrote no results (rc {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    out = json.loads(path.read_text())
    assert run.returncode == 0, f"rc {run.returncode}:\n{run.stderr[-3000:]}"
    return out


@pytest.mark.parametrize("config", ["SGD layer_wise=True", "SGD layer_wise=False", "Adam layer_wise=True",
                                    "Adam layer_wise=False", "SGD layer_wise=True reduce_bucket_kb: 1"])
def test_two_ranks_batch_b_equal_one_rank_batch_2b(results, config):
    assert results["size"] == 2
    rank0, rank1 = results["equivalence"]["rank0"][config], results["equivalence"]["rank1"][0][config]
    assert rank0["iter"] == rank1["iter"] == 4
    assert rank0["max_rel"] < 1e-5, rank0
    assert rank0["moved"] > 1e-2          # training changed the weights: the comparison means something
    if "vs_batch_B" in rank0:             # and one rank with batch B alone is another run
        assert rank0["vs_batch_B"] > 1e-3
    assert rank0["digest"] == rank1["digest"]          # both ranks hold the same weights


def test_layer_wise_buckets(results):
    eq = results["equivalence"]["rank0"]
    assert eq["SGD layer_wise=True"]["buckets"] == 2            # conv, ip: one per layer with params
    assert eq["SGD layer_wise=False"]["buckets"] == 1           # one flat buffer
    assert eq["SGD layer_wise=True reduce_bucket_kb: 1"]["buckets"] == 1   # merged up to 1 KiB


def test_pycaffe_train_py_api_over_mpi(results):
    r = results["pycaffe_api"]
    assert (r["rank0"]["solver_count"], r["rank0"]["solver_rank"]) == (2, 0)
    assert (r["rank1"][0]["solver_count"], r["rank1"][0]["solver_rank"]) == (2, 1)
    assert r["rank0"]["max_rel"] < 1e-5
    assert r["rank0"]["digest"] == r["rank1"][0]["digest"]


def test_test_iterations_split_and_reduced(results):
    r = results["test_split"]["rank0"]
    (dist,), (single,) = r["distributed"], r["single"]
    assert [name for name, _, _ in dist] == ["accuracy", "loss"]
    for (_, a, _), (_, b, _) in zip(dist, single):
        assert a == pytest.approx(b, rel=1e-5)
    assert results["test_split"]["rank1"][0]["distributed"] == r["distributed"]


def test_mismatched_nets_are_named(results):
    for r in [results["mismatch"]["rank0"]] + results["mismatch"]["rank1"]:
        assert "rank 1 does not train what rank 0 trains" in r["error"]
        assert "'ip', 'InnerProduct', [[3, 64], [3]]] vs ['ip', 'InnerProduct', [[4, 64], [4]]]" in r["error"]


def test_solver_count_without_communicator_is_an_error(results):
    assert "solver_count is 2 but this solver has no communicator" in results["no_communicator"]["rank0"]["error"]


def test_weights_that_drift_apart_are_caught_naming_the_rank(results):
    for r in [results["weights_sync"]["rank0"]] + results["weights_sync"]["rank1"]:
        assert r["iter"] == 2                 # the check at the start of iteration 2
        assert r["error"].startswith("iteration 2: the weights of rank(s) 1 differ from rank 0's")


def test_a_rank_that_stops_answering_ends_the_wait_after_comm_timeout(results):
    r = results["timeout"]["rank0"]
    assert r["error"].startswith("rank 0: no progress for 1 s in the late allreduce; a rank is stuck")
    assert r["sum"] == [2.0] * 4 and results["timeout"]["rank1"][0]["sum"] == [2.0] * 4
