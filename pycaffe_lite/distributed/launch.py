"""How a `pycaffe-lite train` process finds its ranks: mpirun's, or one process per GPU.

    mpirun -np 4 pycaffe-lite train --solver S          # MPI ranks (CPU), or NCCL with --gpu
    pycaffe-lite train --solver S --gpu 0,1 (or all)    # spawn_per_gpu: one child per GPU, NCCL

A spawned child learns its rank, the world size and the NCCL unique id from the
environment (PYCAFFE_LITE_RANK / _SIZE / _NCCL_UID), as Caffe's python/train.py hands them
to its processes.
"""
import os
import signal
import subprocess
import sys
import time

from .comm import RANK_ENV_VARS, env_number, launched_by_mpi, mpi_world

UID_VAR, RANK_VAR, SIZE_VAR = "PYCAFFE_LITE_NCCL_UID", "PYCAFFE_LITE_RANK", "PYCAFFE_LITE_SIZE"


def env_rank():
    """This process's rank as its launcher announced it (0 when alone)."""
    return env_number(RANK_ENV_VARS, 0)


def spawned_child():
    return UID_VAR in os.environ


def check_gpus(gpus):
    """CuPy, NCCL and the devices --gpu names: RuntimeError saying which is missing."""
    from .. import backend
    from .nccl import nccl_module
    cupy = backend.cupy_module()
    nccl_module()
    count = cupy.cuda.runtime.getDeviceCount()
    missing = [g for g in gpus if not 0 <= g < count]
    if missing:
        raise RuntimeError(f"--gpu {','.join(map(str, gpus))}: no CUDA device {', '.join(map(str, missing))} "
                           f"(this machine has {count})")


def spawn_per_gpu(gpus, argv=None, poll=0.2):
    """Run this command once per GPU (rank r on gpus[r]); return the first failing exit status.

    A child that fails ends the others (SIGTERM, then SIGKILL after 10 s): NCCL would
    otherwise wait for it for ever."""
    from .nccl import new_uid
    check_gpus(gpus)
    uid = new_uid().hex()
    argv = sys.argv[1:] if argv is None else argv
    children = []
    for rank in range(len(gpus)):
        env = dict(os.environ, **{UID_VAR: uid, RANK_VAR: str(rank), SIZE_VAR: str(len(gpus))})
        children.append(subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", *argv], env=env))
    return _wait_children(children, poll)


def _wait_children(children, poll):
    """Wait for all; the first failing child's status (0 when all succeed)."""
    failed_at, first_failure = None, 0
    while True:
        codes = [c.poll() for c in children]
        if all(code is not None for code in codes):
            return first_failure
        if failed_at is None and any(code not in (None, 0) for code in codes):
            failed_at = time.monotonic()
            first_failure = next(abs(code) for code in codes if code not in (None, 0))
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
        if failed_at is not None and time.monotonic() - failed_at > 10:
            for child in children:
                if child.poll() is None:
                    child.kill()
        try:
            time.sleep(poll)
        except KeyboardInterrupt:   # the children got the terminal's SIGINT too: let them snapshot
            continue


def world(gpus, timeout):
    """(communicator or None, device or None) for this process: NCCL for a spawned child or
    mpirun with --gpu (rank r on gpus[r % len]), MPI for mpirun on the CPU, None alone."""
    if spawned_child():
        from .nccl import NCCLComm
        rank, size = int(os.environ[RANK_VAR]), int(os.environ[SIZE_VAR])
        device = gpus[rank]
        _use_device(device)
        return NCCLComm(bytes.fromhex(os.environ[UID_VAR]), rank, size), device
    if not launched_by_mpi():
        return None, (gpus[0] if gpus else None)
    mpi = mpi_world(timeout, watch=True)
    if mpi is None:
        return None, (gpus[0] if gpus else None)
    if not gpus:
        return mpi, None
    from .nccl import nccl_over_mpi
    device = gpus[mpi.rank % len(gpus)]
    return nccl_over_mpi(mpi, device), device


def _use_device(device):
    from .. import backend
    backend.cupy_module().cuda.Device(device).use()
