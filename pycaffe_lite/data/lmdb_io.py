"""LMDB databases of Datum records, read and written as BVLC Caffe does.

Reading (`LMDBReader`): one read transaction and cursor per reader, in key
order, wrapping to the first record at the end (Caffe's DataLayer::Next).
The `lmdb` package refuses to open one environment twice in a process, so
environments are shared (reference-counted) by path: a TRAIN and a TEST net,
or several nets, each get their own cursor over one open database.  Other
processes (ranks) open their own; LMDB supports concurrent readers.

Writing (`LMDBWriter`): the database is built in a temporary directory beside
the target and renamed into place when complete, so a failure or Ctrl-C
leaves nothing where the database was going.  Records are committed 1000 at
a time, as convert_imageset does, and the map grows by doubling when full
(Caffe 1.0's db_lmdb.cpp).
"""
import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading

from .datum import DataError, _key_text, parse_datum

log = logging.getLogger(__name__)

_ENVS = {}             # realpath -> [lmdb.Environment, reference count]
_ENVS_LOCK = threading.Lock()


def _after_fork_in_child():
    # LMDB environments must not be used across fork(), and the lmdb package refuses to open a
    # path twice in one process: close the inherited (read-only) ones so that the child opens its
    # own.  Closing may release the parent's reader slots in the lock file, which only matters to a
    # concurrent writer; the databases read here are never written in place.
    global _ENVS_LOCK
    for env, _ in list(_ENVS.values()):
        with contextlib.suppress(Exception):
            env.close()
    _ENVS.clear()
    _ENVS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _lmdb():
    try:
        import lmdb
    except ImportError as exc:
        raise RuntimeError(f"LMDB support needs the 'lmdb' package (pip install lmdb): {exc}") from exc
    return lmdb


def check_lmdb_path(path, what="LMDB"):
    """Raise a DataError unless `path` is an LMDB directory (or data file)."""
    path = os.fspath(path)
    if not path:
        raise DataError(f"{what}: no source given", path)
    if not os.path.exists(path):
        raise DataError(f"{what} '{path}' does not exist (cwd {os.getcwd()})", path)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "data.mdb")):
            hint = ""
            if os.path.exists(os.path.join(path, "CURRENT")):
                hint = " (it looks like a LevelDB, which pycaffe_lite does not read; convert it to LMDB)"
            raise DataError(f"{what} '{path}' is not an LMDB: it has no data.mdb{hint}", path)
    elif os.path.isfile(path):
        raise DataError(f"{what} '{path}' is a file, not an LMDB directory", path)
    return path


def open_env(path):
    """A shared read-only Environment for `path` (release it with release_env)."""
    lmdb = _lmdb()
    path = check_lmdb_path(path)
    real = os.path.realpath(path)
    with _ENVS_LOCK:
        entry = _ENVS.get(real)
        if entry is not None:
            entry[1] += 1
            return entry[0]
        try:
            env = lmdb.open(real, readonly=True, lock=True, readahead=False, max_readers=512,
                            subdir=True, create=False)
        except lmdb.Error as exc:
            # Read-only media or a folder we may not write the lock file in: read without locks
            # (Caffe's ALLOW_LMDB_NOLOCK does the same on EACCES).
            if getattr(exc, "errno", None) not in (errno.EACCES, errno.EROFS, errno.EPERM) and \
                    "ermission" not in str(exc) and "ead-only" not in str(exc):
                raise DataError(f"cannot open LMDB '{path}': {exc}", path) from exc
            try:
                env = lmdb.open(real, readonly=True, lock=False, readahead=False, subdir=True, create=False)
            except lmdb.Error as exc2:
                raise DataError(f"cannot open LMDB '{path}': {exc2}", path) from exc2
        _ENVS[real] = [env, 1]
        return env


def release_env(env):
    with _ENVS_LOCK:
        for real, entry in list(_ENVS.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _ENVS[real]
                    env.close()
                return


class LMDBReader:
    """A cursor over an LMDB's records in key order that wraps at the end.

    `next()` returns (key bytes, value bytes) and advances; `peek()` returns
    the current record without advancing.  Caffe's multi-solver reading is
    kept: with `num_ranks` > 1 a TRAIN reader keeps only records whose index
    is `rank` modulo `num_ranks`.
    """

    def __init__(self, path, rank=0, num_ranks=1, log_wrap=True):
        self.path = os.fspath(path)
        self.rank, self.num_ranks = int(rank), max(1, int(num_ranks))
        self.log_wrap = log_wrap
        self._lmdb_error = _lmdb().Error
        self.env = open_env(self.path)
        log.info("Opened lmdb %s", self.path)
        self._txn = self._cursor = None
        self._offset = 0          # records passed since the start (Caffe's offset_)
        self.epoch = 0
        self.key = None
        try:
            self._txn = self.env.begin(buffers=False)
            self._cursor = self._txn.cursor()
            if not self._cursor.first():
                raise DataError(f"LMDB '{self.path}' has no records", self.path)
            self._guard(self._skip)
        except BaseException:
            self.close()
            raise

    def __len__(self):
        return self.env.stat()["entries"]

    def _guard(self, action):
        try:
            return action()
        except self._lmdb_error as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc):
        return DataError(f"LMDB '{self.path}' failed near record '{_key_text(self.key)}': {exc}",
                         self.path, self.key)

    def _advance(self):
        self._offset += 1
        if not self._cursor.next():
            if self.log_wrap:
                log.info("Restarting data prefetching from start.")
            self.epoch += 1
            self._cursor.first()

    def _skip(self):
        while self.num_ranks > 1 and self._offset % self.num_ranks != self.rank:
            self._advance()
        self.key = self._cursor.key()

    def peek(self):
        return self._guard(self._cursor.item)

    def next(self):
        """The current (key, value); then advance, wrapping at the end."""
        try:
            key, value = self._cursor.item()
            self.key = key
            self._advance()
            self._skip()
        except self._lmdb_error as exc:
            raise self._failure(exc) from exc
        return key, value

    def next_many(self, count):
        """The next `count` records (a batch), in one tight loop."""
        cursor, out = self._cursor, []
        try:
            for _ in range(count):
                item = cursor.item()
                out.append(item)
                self.key = item[0]
                self._offset += 1
                if not cursor.next():
                    if self.log_wrap:
                        log.info("Restarting data prefetching from start.")
                    self.epoch += 1
                    cursor.first()
                if self.num_ranks > 1:
                    self._skip()
        except self._lmdb_error as exc:
            raise self._failure(exc) from exc
        return out

    def next_datum(self):
        key, value = self.next()
        return key, parse_datum(value, self.path, key)

    def close(self):
        if self._cursor is not None:
            with contextlib.suppress(Exception):
                self._cursor.close()
            self._cursor = None
        if self._txn is not None:
            with contextlib.suppress(Exception):
                self._txn.abort()
            self._txn = None
        if self.env is not None:
            release_env(self.env)
            self.env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_lmdb(path, limit=None):
    """(key, value) pairs of an LMDB in key order, once (no wrap-around)."""
    env = open_env(path)
    try:
        with env.begin(buffers=False) as txn:
            for i, (key, value) in enumerate(txn.cursor()):
                if limit is not None and i >= limit:
                    break
                yield key, value
    finally:
        release_env(env)


def iter_datums(path, limit=None):
    """(key, Datum) pairs of an LMDB in key order, once."""
    path = os.fspath(path)
    for key, value in iter_lmdb(path, limit):
        yield key, parse_datum(value, path, key)


def lmdb_size(path):
    env = open_env(path)
    try:
        return env.stat()["entries"]
    finally:
        release_env(env)


class LMDBWriter:
    """Write an LMDB atomically: into a temporary directory, renamed into place on close.

        with LMDBWriter("train_lmdb") as db:
            db.put(b"00000000_a.png", datum.SerializeToString())

    An exception inside the block removes the temporary directory and leaves
    the target untouched.  An existing target is an error (Caffe's db::NEW
    refuses it too) unless `overwrite=True`, which replaces it only once the
    new database is complete.
    """

    def __init__(self, path, overwrite=False, commit_every=1000, map_size=1 << 26):
        lmdb = _lmdb()
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = overwrite
        if os.path.exists(self.path) and not overwrite:
            raise FileExistsError(f"database '{path}' already exists; remove it or choose another name")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"cannot create database '{path}': folder '{parent}' does not exist")
        self.commit_every = int(commit_every)
        self.count = 0
        self._pending = []
        self._tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=parent)
        try:
            os.chmod(self._tmp, 0o755)  # mkdtemp's 0700 would survive the rename (Caffe: mkdir 0744)
            self.env = lmdb.open(self._tmp, map_size=map_size, subdir=True, sync=False, meminit=False)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._closed = False

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not key:
            raise ValueError("LMDB keys must be non-empty")
        self._pending.append((bytes(key), bytes(value)))
        self.count += 1
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self):
        lmdb = _lmdb()
        while self._pending:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                self._pending = []
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def close(self):
        """Commit what is pending, flush, and rename the database into place."""
        if self._closed:
            return
        try:
            self.commit()
            self.env.sync(True)
            self.env.close()
            self._closed = True
            if os.path.exists(self.path):
                old = self.path + ".old-" + os.path.basename(self._tmp)
                os.rename(self.path, old)
                os.rename(self._tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Drop everything written: the target is left as it was."""
        if not self._closed:
            with contextlib.suppress(Exception):
                self.env.close()
            self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
