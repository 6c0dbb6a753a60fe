"""What a snapshot prefix holds across runs, crashes and kill -9.

- One training per prefix: `PrefixLock` holds an exclusive lock on `<prefix>.lock` (flock, so the
  kernel drops it when the process dies, kill -9 included); a second process training into the
  same prefix is refused naming the holder's pid.  Solvers of one process share the lock.
- With the lock held, `clean_stale_temporaries` removes what an earlier run of this prefix left
  when it was killed while writing: the atomic writer's `.<prefix>_iter_N.<ext>.*.tmp` files and
  the write probe.  Nothing else is touched.
- Both files of a pair carry the run's id (NetParameter.run_id, SolverState.run_id, or the HDF5
  files' `run_id` attribute): `check_pair` refuses a .solverstate resumed with another run's
  .caffemodel.
- `latest_snapshot(prefix)`: the newest complete pair (a .solverstate whose .caffemodel exists
  and comes from the same run), what `pycaffe-lite train --snapshot auto` resumes from.
"""
import contextlib
import errno
import fcntl
import logging
import os
import re
import uuid

from ..io_utils import FormatError
from ..proto.files import read_weights

log = logging.getLogger("pycaffe_lite.solver")

_HELD = {}   # lock path -> [fd, holders] (solvers of this process share a prefix's lock)


def new_run_id():
    return uuid.uuid4().hex


class SnapshotPrefixLocked(RuntimeError):
    """Another process trains into the same snapshot_prefix."""


class PrefixLock:
    """An exclusive lock on `<prefix>.lock`, released by release() or when the process ends."""

    def __init__(self, prefix):
        self.path = os.path.abspath(f"{prefix}.lock")
        self.held = False

    def acquire(self):
        if self.path in _HELD:
            _HELD[self.path][1] += 1
        else:
            _HELD[self.path] = [self._lock(), 1]
        self.held = True
        return self

    def _lock(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise SnapshotPrefixLocked(
                    f"snapshot_prefix {self.path[:-5]} is in use by another training (pid {holder or '?'}, "
                    f"lock {self.path}): two runs would overwrite each other's snapshots. Give this run "
                    "another snapshot_prefix, or wait for that one to end.") from None
            # the holder before us may have removed the file after we opened it: lock the one on disk
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return fd
            os.close(fd)

    def release(self):
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.path]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(entry[0])


def _read_pid(fd):
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).split()[0])
    return None


def _prefix_parts(prefix):
    return os.path.dirname(os.path.abspath(prefix)), os.path.basename(prefix)


def clean_stale_temporaries(prefix):
    """Remove the temporaries a killed run of `prefix` left (call with the prefix's lock held)."""
    folder, base = _prefix_parts(prefix)
    base = re.escape(base)
    stale = re.compile(rf"\.{base}_iter_\d+\..+\.tmp\Z|{base}_iter_\d+\.tempfile\Z")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if stale.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    if removed:
        log.info("Removed %d temporary file(s) an interrupted run left beside %s: %s", len(removed), prefix,
                 ", ".join(sorted(removed)))
    return removed


# ---------------------------------------------------------------------------
# run ids of a pair
# ---------------------------------------------------------------------------
def weights_run_id(path):
    """The run id a .caffemodel or .caffemodel.h5 carries ('' when none: a file Caffe wrote)."""
    path = os.fspath(path)
    if path.endswith(".h5"):
        from .state import hdf5_text, require_h5py
        with require_h5py().File(path, "r") as f:
            return hdf5_text(f.attrs.get("run_id", ""))
    return read_weights(path).run_id


def check_pair(state_file, state_run_id, weights_file, weights_id=None):
    """Refuse a solver state and weights written by two different runs (either without an id passes:
    BVLC Caffe's files carry none)."""
    weights_id = weights_run_id(weights_file) if weights_id is None else weights_id
    if state_run_id and weights_id and state_run_id != weights_id:
        raise FormatError(f"{state_file} and {weights_file} are not a pair: the state was written by run "
                         f"{state_run_id}, the weights by run {weights_id} (two trainings shared the "
                         "snapshot_prefix, or files were copied over). Resume from a .solverstate with the "
                         ".caffemodel written beside it.")


_STATE = re.compile(r"_iter_(\d+)\.solverstate(\.h5)?\Z")


def snapshot_states(prefix):
    """[(iteration, .solverstate path)] of `prefix`, newest first."""
    folder, base = _prefix_parts(prefix)
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = _STATE.match(entry.name[len(base):]) if entry.name.startswith(base) else None
            if match and entry.is_file():
                found.append((int(match.group(1)), os.path.join(os.path.dirname(prefix), entry.name)))
    return sorted(found, reverse=True)


def latest_snapshot(prefix):
    """The newest .solverstate of `prefix` whose .caffemodel exists and is of the same run; None if none."""
    from . import state as state_io
    for _, path in snapshot_states(prefix):
        try:
            learned_net, run_id = state_io.state_pair(path)
            if learned_net is None:
                continue
            weights = state_io.resolve_learned_net(learned_net, path)
            check_pair(path, run_id, weights)
        except (ValueError, OSError) as exc:
            log.info("Not resuming from %s: %s", path, exc)
            continue
        return path
    return None
