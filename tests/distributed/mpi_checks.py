"""Checks run inside one `mpiexec -n 2` launch (MPI start-up costs seconds: one launch, many checks).

    mpiexec -n 2 python tests/distributed/mpi_checks.py WORKDIR CHECK [CHECK ...]

WORKDIR holds train_db and test_db (made by the test); rank 0 writes WORKDIR/results.json:
{check: {...measured values...}}, which test_mpi.py asserts on.  Every rank computes; rank 0
also runs the single-process reference (batch 2B, one rank) on the same records.
"""
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dist_helpers as h

import pycaffe_lite as caffe
from pycaffe_lite import data as data_config
from pycaffe_lite.distributed import (
    MPIComm,
    RanksDiffer,
    attach,
    check_weights_agree,
)
from pycaffe_lite.io_utils import atomic_write
from pycaffe_lite.solvers import get_solver

B, ITERS = 4, 4


def write_solver(work, name, batch, solver_type="SGD", layer_wise=True, extra="", test=False, num_output=3):
    # Both ranks write the same files: atomically, so neither reads the other's half-written one.
    net = work / f"{name}_net.prototxt"
    text = h.net_text(work / "train_db", batch, test_source=work / "test_db" if test else None, test_batch=batch)
    with atomic_write(net, "w") as f:
        f.write(text.replace("num_output: 3", f"num_output: {num_output}"))
    solver = work / f"{name}_solver.prototxt"
    with atomic_write(solver, "w") as f:
        f.write(h.solver_text(net, solver_type, layer_wise, ITERS, extra))
    return solver


def distributed_run(comm, solver_file, steps=ITERS, api=False):
    data_config.set_solver_count(comm.size)
    data_config.set_solver_rank(comm.rank)
    solver = get_solver(str(solver_file))
    try:
        if api:      # BVLC's python/train.py, line for line
            caffe.set_multiprocess(True)
            nccl = caffe.NCCL(solver, caffe.NCCL.new_uid())
            nccl.bcast()
            solver.add_callback(nccl)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(nccl)
            sync = nccl
        else:
            sync = attach(solver, comm)
        solver.step(steps)
        return h.weights_of(solver.net), check_weights_agree(comm, solver.net, solver.iter), solver, sync
    finally:
        for net in [solver.net] + solver.test_nets:
            net.close()


def single_run(solver_file, steps=ITERS):
    data_config.set_solver_count(1)
    data_config.set_solver_rank(0)
    solver = get_solver(str(solver_file))
    try:
        solver.step(steps)
        return h.weights_of(solver.net), solver
    finally:
        for net in [solver.net] + solver.test_nets:
            net.close()


def check_equivalence(comm, work):
    out = {}
    configs = [("SGD", True, ""), ("SGD", False, ""), ("Adam", True, ""), ("Adam", False, ""),
               ("SGD", True, "reduce_bucket_kb: 1")]
    for solver_type, layer_wise, extra in configs:
        key = f"{solver_type} layer_wise={layer_wise} {extra}".strip()
        name = key.replace(" ", "_").replace("=", "").replace(":", "")
        two = write_solver(work, name + "_B", B, solver_type, layer_wise, extra)
        one = write_solver(work, name + "_2B", 2 * B, solver_type, layer_wise, extra)
        weights, digest, solver, sync = distributed_run(comm, two)
        entry = {"digest": digest, "buckets": len(sync.reducer.buckets), "iter": solver.iter}
        if comm.rank == 0:
            reference, _ = single_run(one)
            entry["max_rel"] = h.max_relative_difference(weights, reference)
            fresh = get_solver(str(two))
            entry["moved"] = h.max_relative_difference(weights, h.weights_of(fresh.net))
            fresh.net.close()
            if not extra:   # the same records in batches of B on one rank: a different run
                entry["vs_batch_B"] = h.max_relative_difference(weights, single_run(two)[0])
        out[key] = entry
    return out


def check_pycaffe_api(comm, work):
    two = write_solver(work, "api_B", B, "SGD", True)
    one = write_solver(work, "api_2B", 2 * B, "SGD", True)
    weights, digest, _, _ = distributed_run(comm, two, api=True)
    entry = {"solver_count": caffe.solver_count(), "solver_rank": caffe.solver_rank(), "digest": digest}
    if comm.rank == 0:
        reference, _ = single_run(one)
        entry["max_rel"] = h.max_relative_difference(weights, reference)
    return entry


def check_test_split(comm, work):
    extra = "test_iter: 4 test_interval: 2 test_initialization: true"
    two = write_solver(work, "test_B", B, extra=extra, test=True)
    _, _, solver, _ = distributed_run(comm, two, steps=3)
    entry = {"distributed": solver.test_results}
    if comm.rank == 0:
        # the single run trains on batch 2B and tests with batch B over the same test_iter batches
        one = write_solver(work, "test_B1", B, extra=extra, test=True)
        net = work / "test_B1_net.prototxt"
        net.write_text(h.net_text(work / "train_db", 2 * B, test_source=work / "test_db", test_batch=B))
        _, reference = single_run(one, steps=3)
        entry["single"] = reference.test_results
    return entry


def check_mismatch(comm, work):
    solver = write_solver(work, f"mismatch_{comm.rank}", B, num_output=3 + comm.rank)
    try:
        distributed_run(comm, solver, steps=1)
    except RanksDiffer as exc:
        return {"error": str(exc)}
    return {"error": None}


def check_no_communicator(comm, work):
    data_config.set_solver_count(2)
    data_config.set_solver_rank(comm.rank)
    solver = get_solver(str(write_solver(work, f"nocomm_{comm.rank}", B)))
    try:
        solver.step(1)
    except RuntimeError as exc:
        return {"error": str(exc)}
    finally:
        solver.net.close()
    return {"error": None}


def check_weights_sync(comm, work):
    """check_weights_sync: a rank whose weights drift is caught at the next display iteration."""
    data_config.set_solver_count(comm.size)
    data_config.set_solver_rank(comm.rank)
    solver = get_solver(str(write_solver(work, "wsync", B, extra="check_weights_sync: true")))
    attach(solver, comm)
    if comm.rank == 1:       # after the reduction of iteration 1, before its update
        def drift():
            if solver.iter == 1:
                solver.net.params["ip"][1].data[0] += 1e-3
        solver.add_callback(lambda: None, drift)
    try:
        solver.step(4)
    except RanksDiffer as exc:
        return {"error": str(exc), "iter": solver.iter}
    finally:
        solver.net.close()
    return {"error": None, "iter": solver.iter}


def check_timeout(comm, work):
    """A rank that stops answering (alive, but 2.5 s late) ends the others' wait after comm_timeout."""
    import time

    import numpy as np

    from pycaffe_lite.distributed import CommError
    late = MPIComm(comm.comm.Dup(), timeout=1.0)
    values = np.ones(4)
    if comm.rank == 1:
        time.sleep(2.5)
    request = late.iallreduce(values)
    error = None
    try:
        late.wait([request], "the late allreduce")
    except CommError as exc:
        error = str(exc)
    late.timeout = 300.0
    late.wait([request], "the late allreduce")     # the late rank comes: the collective completes
    return {"error": error, "sum": values.tolist()}


CHECKS = {"timeout": check_timeout, "weights_sync": check_weights_sync, "equivalence": check_equivalence,
          "pycaffe_api": check_pycaffe_api,
          "test_split": check_test_split, "mismatch": check_mismatch, "no_communicator": check_no_communicator}


def main(work, names):
    work = Path(work)
    comm = MPIComm(timeout=300)
    results = {"size": comm.size}
    for name in names:
        try:
            results[name] = CHECKS[name](comm, work)
        except Exception:
            results[name] = {"exception": traceback.format_exc()}
            raise
        finally:
            gathered = comm.allgather_json(results.get(name), f"the results of {name}")
            if comm.rank == 0:
                results[name] = {"rank0": gathered[0], "rank1": gathered[1:]}
                (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
