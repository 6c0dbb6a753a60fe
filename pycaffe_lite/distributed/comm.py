"""Communicators: the collectives data-parallel training needs, over MPI or in one process.

    comm = mpi_world()                  # under mpirun (mpi4py), or None for a single process
    req = comm.iallreduce(array)        # in place, summed over ranks; non-blocking
    comm.progress([req]); comm.wait([req], "gradients of iteration 3")
    comm.bcast(array, root=0)           # in place
    comm.allgather_json(value)          # [value of rank 0, value of rank 1, ...]

A subclass supplies the array primitives (`iallreduce`, `ibcast`, `progress`, `wait`);
the object collectives are built on them here, so MPI, NCCL and the in-process group
share one encoding (JSON, never pickle: a rank only ever reads what a rank of the same
job wrote, but nothing here needs to run code to read it).

Waiting never hangs: MPIComm.wait polls its requests and, between polls, checks that the
peers on this host are alive (their pids were exchanged at start), naming a lost rank at
once; a peer on another host that stops answering ends the wait after `timeout` seconds.
"""
import json
import logging
import os
import select
import socket
import threading
import time

import numpy as np

log = logging.getLogger("pycaffe_lite.distributed")

class CommError(RuntimeError):
    """A collective cannot complete: a rank was lost or stopped answering."""


class RankLost(CommError):
    """A peer process is gone (it exited or was killed)."""

    def __init__(self, message, rank):
        super().__init__(message)
        self.rank = rank


MPI_ENV_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
RANK_ENV_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PYCAFFE_LITE_RANK")


def env_number(names, default):
    """The first of the environment variables `names` that holds a number (launchers differ)."""
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def mpi_env_size():
    """The world size an MPI launcher announced in the environment (1 when none did)."""
    return env_number(MPI_ENV_VARS, 1)


def launched_by_mpi():
    """True when this process is one of several ranks started by mpirun / mpiexec."""
    return mpi_env_size() > 1


def mpi4py_missing_message():
    return ("this process was started by mpirun/mpiexec with several ranks, but mpi4py is not "
            "installed, so the ranks cannot talk to each other. Install MPI support with "
            "pip install 'pycaffe-lite[mpi]' (the mpich and mpi4py wheels), or run without mpirun.")


def import_mpi():
    """mpi4py's MPI module; RuntimeError with the install hint when it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(f"{mpi4py_missing_message()} ({exc})") from None
    return MPI


class Communicator:
    """rank, size and the collectives; subclasses give the array primitives."""
    rank = 0
    size = 1
    name = "single process"

    # ---- array primitives (subclasses) ---------------------------------
    def iallreduce(self, array):
        """Start summing `array` (contiguous) over the ranks, in place; return a request."""
        raise NotImplementedError

    def ibcast(self, array, root=0):
        raise NotImplementedError

    def progress(self, requests):
        """Let pending requests advance (MPI progresses only inside its calls)."""

    def wait(self, requests, what):
        raise NotImplementedError

    # ---- built on them ---------------------------------------------------
    def allreduce(self, array, what="allreduce"):
        self.wait([self.iallreduce(array)], what)
        return array

    def bcast(self, array, root=0, what="broadcast"):
        self.wait([self.ibcast(array, root)], what)
        return array

    def bcast_json(self, value, root=0, what="broadcast"):
        data = json.dumps(value).encode() if self.rank == root else b""
        length = np.array([len(data)], np.int64)
        self.bcast(length, root, what)
        buffer = np.zeros(int(length[0]), np.uint8)
        if self.rank == root:
            buffer[:] = np.frombuffer(data, np.uint8)
        self.bcast(buffer, root, what)
        return json.loads(buffer.tobytes().decode())

    def allgather_json(self, value, what="allgather"):
        """Every rank's `value`, in rank order: rows of a zero-padded table summed over ranks."""
        data = np.frombuffer(json.dumps(value).encode(), np.uint8)
        lengths = np.zeros(self.size, np.int64)
        lengths[self.rank] = data.size
        self.allreduce(lengths, what)
        table = np.zeros((self.size, int(lengths.max())), np.int64)
        table[self.rank, :data.size] = data
        self.allreduce(table.reshape(-1), what)
        return [json.loads(bytes(table[r, :lengths[r]].astype(np.uint8)).decode()) for r in range(self.size)]

    def barrier(self, what="barrier"):
        self.allreduce(np.zeros(1, np.int64), what)

    def abort(self, code=1):
        os._exit(code)

    def describe(self):
        return f"{self.name}, rank {self.rank} of {self.size}"


class MPIComm(Communicator):
    """mpi4py over COMM_WORLD (or a given communicator), with a watchdog in every wait."""
    name = "MPI"

    def __init__(self, comm=None, timeout=300.0, watch=False):
        self.MPI = import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout)
        self.peers = [(socket.gethostname(), os.getpid())] * self.size   # until exchanged below
        me = [socket.gethostname(), os.getpid()]
        self.peers = [tuple(p) for p in self.allgather_json(me, "the start-up exchange of ranks' pids")]
        if watch:
            threading.Thread(target=self._watch, name="pycaffe_lite peer watch", daemon=True).start()

    def _watch(self, interval=0.02):
        """End this rank, naming the lost one, as soon as a peer on this host is gone: MPI itself
        would end it soon after (the launcher's clean-up, or its progress engine) without a word.
        Linux wakes the watch the moment a peer exits (pidfd); elsewhere it polls."""
        pidfds = _pidfds([pid for r, (h, pid) in enumerate(self.peers)
                          if r != self.rank and h == socket.gethostname()])
        while True:
            if pidfds:
                select.select(pidfds, [], [], 1.0)
            else:
                time.sleep(interval)
            try:
                self.check_peers("training")
            except RankLost as exc:
                log.error("%s; the last snapshot written is complete (files are written atomically).", exc)
                logging.shutdown()      # every handler, the --log file's too: os._exit flushes nothing
                os._exit(1)

    def iallreduce(self, array):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)

    def ibcast(self, array, root=0):
        return self.comm.Ibcast(array, root=root)

    def progress(self, requests):
        if requests:
            self.MPI.Request.Testall(requests)

    def wait(self, requests, what):
        test = self.MPI.Request.Testall
        start = time.monotonic()
        next_check, pause = start + 0.05, 0.0
        while not test(requests):
            now = time.monotonic()
            if now >= next_check:
                self.check_peers(what)
                next_check = now + 0.05
                if now - start > self.timeout:
                    raise CommError(f"rank {self.rank}: no progress for {self.timeout:g} s in {what}; a rank "
                                    f"is stuck, or lost on another host (ranks elsewhere: "
                                    f"{self.remote_ranks() or 'none'}); comm_timeout in the solver sets this limit")
            # spin briefly, then yield the core to the process computing beside this one
            pause = min(pause + 2e-5, 5e-4) if now - start > 2e-3 else 0.0
            time.sleep(pause)

    def remote_ranks(self):
        host = socket.gethostname()
        return ", ".join(str(r) for r, (h, _) in enumerate(self.peers) if h != host)

    def check_peers(self, what):
        """Raise RankLost naming the first peer on this host whose process is gone."""
        host = socket.gethostname()
        for r, (h, pid) in enumerate(self.peers):
            if r != self.rank and h == host and not process_alive(pid):
                raise RankLost(f"rank {self.rank}: rank {r} (pid {pid} on {h}) is gone (it exited or was "
                               f"killed); this rank was in {what}", r)

    def abort(self, code=1):
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)


def _pidfds(pids):
    """File descriptors that become readable when each process exits ([] where unsupported)."""
    try:
        return [os.pidfd_open(pid) for pid in pids]
    except (AttributeError, OSError):
        return []


def process_alive(pid):
    """False once `pid` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def mpi_world(timeout=300.0, watch=False):
    """An MPIComm over COMM_WORLD when several ranks run, else None (one process).

    Started by mpirun without mpi4py: RuntimeError with the install hint."""
    if not launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            return None
        if MPI.COMM_WORLD.Get_size() < 2:
            return None
    comm = MPIComm(timeout=timeout, watch=watch)
    return comm if comm.size > 1 else None


# ---------------------------------------------------------------------------
# in one process: ranks as threads (tests, and a reference for the reduction logic)
# ---------------------------------------------------------------------------
class _Done:
    def __init__(self):
        self.ready = threading.Event()


class LocalGroup:
    """N communicators in one process, one per thread; collectives meet at a barrier.

        group = LocalGroup(2); comms = group.comms   # hand comms[r] to the thread of rank r
    """

    def __init__(self, size, timeout=30.0):
        self.size = int(size)
        self.timeout = timeout
        self._barrier = threading.Barrier(self.size)
        self._slots = [None] * self.size
        self.comms = [LocalComm(self, r) for r in range(self.size)]

    def exchange(self, rank, item):
        """Every rank's item, once all ranks have posted theirs."""
        self._slots[rank] = item
        try:
            self._barrier.wait(self.timeout)
            items = list(self._slots)
            self._barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise CommError(f"rank {rank}: a local rank did not reach the collective") from None
        return items


class LocalComm(Communicator):
    """A rank of a LocalGroup: operations complete in call order, like MPI's (blocking here)."""
    name = "in-process"

    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size

    def iallreduce(self, array):
        arrays = self.group.exchange(self.rank, array.copy())
        total = arrays[0].copy()
        for other in arrays[1:]:
            total += other
        array[...] = total
        return _Done()

    def ibcast(self, array, root=0):
        arrays = self.group.exchange(self.rank, array.copy())
        array[...] = arrays[root]
        return _Done()

    def wait(self, requests, what):
        pass
