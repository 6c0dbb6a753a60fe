"""Data-parallel training across processes: MPI on CPUs, NCCL on GPUs, Caffe's semantics.

    mpirun -np 2 pycaffe-lite train --solver solver.prototxt      # CPU ranks over MPI
    pycaffe-lite train --solver solver.prototxt --gpu 0,1          # one process per GPU, NCCL

Modules: comm (the communicator interface; MPI through mpi4py, an in-process group for
tests), nccl (cupy.cuda.nccl, its unique id broadcast over MPI), reduce (gradient
buckets and their non-blocking allreduce), consistency (ranks train one model),
parallel (one rank's side: pycaffe's caffe.NCCL), launch (one process per GPU).
"""
from .comm import (
                   CommError,
                   Communicator,
                   LocalGroup,
                   MPIComm,
                   RankLost,
                   launched_by_mpi,
                   mpi4py_missing_message,
                   mpi_world,
)
from .consistency import (
                   RanksDiffer,
                   check_ranks_agree,
                   check_weights_agree,
                   weights_digest,
)
from .parallel import NCCL, DataParallel, attach
from .reduce import GradientReducer, make_buckets

__all__ = [
                   "NCCL",
                   "CommError",
                   "Communicator",
                   "DataParallel",
                   "GradientReducer",
                   "LocalGroup",
                   "MPIComm",
                   "RankLost",
                   "RanksDiffer",
                   "attach",
                   "check_ranks_agree",
                   "check_weights_agree",
                   "launched_by_mpi",
                   "make_buckets",
                   "mpi4py_missing_message",
                   "mpi_world",
                   "weights_digest",
]
