"""One rank's side of data-parallel training: Caffe's NCCL<Dtype> (parallel.cpp), and pycaffe's
`caffe.NCCL` as BVLC's python/train.py uses it:

    caffe.set_solver_count(n); caffe.set_solver_rank(rank); caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(proto)          # after the two calls: the Data layers read them
    nccl = caffe.NCCL(solver, uid)           # uid = caffe.NCCL.new_uid(), made once
    nccl.bcast()                             # rank 0's weights to every rank
    solver.add_callback(nccl)                # sum the gradients, scale by 1/n, before each update
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)      # reduce each layer's gradients as backward leaves it
    solver.step(solver.param.max_iter)

On the GPU the communicator is NCCL; on the CPU, the ranks of an mpirun (the uid is then
not needed).  Semantics are Caffe's: each rank runs the full batch_size, the gradients
are summed and scaled by 1/n, so every rank applies the same update.  Rank 0 alone logs
and snapshots.  Beyond Caffe 1.0 (which tests on rank 0 only), the test iterations are
split over the ranks (rank r runs iterations r, r+n, ...) and their sums reduced, so a
test pass costs 1/n of the time and rank 0 logs the outputs over all of them.
"""
import logging
import math

import numpy as np

from .. import backend
from .. import data as data_config
from ..solvers.signals import SolverAction
from .comm import CommError, mpi_world
from .consistency import check_ranks_agree, check_weights_agree
from .reduce import GradientReducer

log = logging.getLogger("pycaffe_lite.distributed")

_ACTIONS = (SolverAction.SNAPSHOT, SolverAction.STOP)


class DataParallel:
    """Reduction, broadcast and agreement for `solver` over `comm` (one per rank).

    Build the solver after data.set_solver_count / set_solver_rank (the Data layers read
    them at set-up); then DataParallel(solver, comm) checks that all ranks train the same
    net, and `attach` broadcasts rank 0's weights and installs the callbacks."""

    def __init__(self, solver, comm):
        count, rank = data_config.solver_count(), data_config.solver_rank()
        if (count, rank) != (comm.size, comm.rank):
            raise ValueError(f"solver_count / solver_rank are {count} / {rank} but the communicator has rank "
                             f"{comm.rank} of {comm.size}: call set_solver_count({comm.size}) and "
                             f"set_solver_rank({comm.rank}) before building the solver (its Data layers read them)")
        self.solver, self.comm = solver, comm
        self.rank, self.size = comm.rank, comm.size
        check_ranks_agree(comm, solver)
        p = solver.param
        self.reducer = GradientReducer(solver.net, comm, layer_wise=p.layer_wise_reduce,
                                       bucket_kb=p.reduce_bucket_kb, iter_size=p.iter_size)
        solver.sync = self
        if self.rank > 0:      # Caffe's LOG_IF(INFO, Caffe::root_solver())
            logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)

    @property
    def root(self):
        return self.rank == 0

    # ---- pycaffe's NCCL --------------------------------------------------
    def bcast(self):
        """Rank 0's weights into every rank's nets (in place: the test nets share them)."""
        arrays = [blob.data for blob in self.solver.net.learnable_params]
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError("a parameter array is not contiguous; it cannot be broadcast in place")
        requests = [self.comm.ibcast(a, 0) for a in arrays]
        self.comm.wait(requests, "the broadcast of rank 0's weights")
        log.info("Broadcast rank 0's weights to %d ranks (%s)", self.size, self.comm.name)

    def on_start(self):
        solver = self.solver
        self.reducer.on_start()
        self.reducer.iteration = solver.iter
        p = solver.param
        if p.check_weights_sync and p.display and solver.iter % p.display == 0:
            self.check_weights()

    def on_gradients_ready(self):
        self.reducer.on_gradients_ready()

    def run(self, layer):
        """Net's after_backward callback (Caffe's NCCL::run(layer))."""
        self.reducer.after_backward(layer)

    def check_weights(self):
        return check_weights_agree(self.comm, self.solver.net, self.solver.iter)

    # ---- what the Solver asks (solver.sync) ------------------------------
    def agree(self, request):
        """The action every rank takes: a stop or snapshot asked on any rank (signals reach each)."""
        flags = np.array([request == a for a in _ACTIONS], np.int64)
        self.comm.allreduce(flags, f"the agreement on signals at iteration {self.solver.iter}")
        if flags[1]:
            return SolverAction.STOP
        return SolverAction.SNAPSHOT if flags[0] else SolverAction.NONE

    def test_rounds(self, iterations):
        """[runs this rank the round?] for ceil(iterations / n) rounds: round j is iteration j*n + rank."""
        return [j * self.size + self.rank < iterations for j in range(math.ceil(iterations / self.size))]

    def reduce_sums(self, values, what):
        """float64 sums over ranks of float32 partial sums (then rounded to float32 as Caffe's)."""
        flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in values]) if values else np.zeros(0)
        self.comm.allreduce(flat, what)
        out, offset = [], 0
        for v in values:
            size = np.asarray(v).size
            out.append(flat[offset:offset + size].astype(np.float32).reshape(np.shape(v)))
            offset += size
        return out


def attach(solver, comm):
    """Everything train.py does for one rank: check, broadcast, callbacks, the layer-wise hook."""
    sync = DataParallel(solver, comm)
    sync.bcast()
    solver.add_callback(sync)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(sync)
    return sync


class NCCL(DataParallel):
    """pycaffe's caffe.NCCL(solver, uid): NCCL on the GPU, MPI's ranks on the CPU."""

    def __init__(self, solver, uid=None):
        count, rank = data_config.solver_count(), data_config.solver_rank()
        if backend.mode() == "gpu":
            from .nccl import NCCLComm
            if uid is None:
                raise ValueError("caffe.NCCL(solver, uid) on the GPU needs the uid from caffe.NCCL.new_uid()")
            comm = NCCLComm(uid, rank, count)
        else:
            comm = mpi_world(timeout=solver.param.comm_timeout)
            if comm is None or comm.size != count:
                raise RuntimeError(f"caffe.NCCL on the CPU reduces over MPI: run the script under "
                                   f"mpirun -np {count} (solver_count is {count}, "
                                   f"{'no MPI ranks' if comm is None else f'{comm.size} MPI ranks'} here)")
        super().__init__(solver, comm)

    @staticmethod
    def new_uid():
        """An NCCL unique id (bytes) on a machine with NCCL; elsewhere a placeholder that MPI ignores."""
        try:
            from .nccl import new_uid
            return new_uid()
        except RuntimeError:
            return bytes(128)


__all__ = ["NCCL", "CommError", "DataParallel", "attach"]
