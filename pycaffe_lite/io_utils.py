"""File helpers shared by every reader and writer: nothing is left half-written, nothing unbounded is
read, and a file that cannot be parsed raises FormatError naming the file, line and record."""
import contextlib
import os
import stat
import tempfile

# A pipe or FIFO is read up to this many bytes (a regular file's size is known; a device is refused).
STREAM_LIMIT = int(os.environ.get("PYCAFFE_LITE_STREAM_LIMIT", 1 << 28))


class FormatError(ValueError):
    """A file (or message) that does not hold what it should: `file`, `line` and `record` (a layer, a
    database key, a field) say where, when known.  A ValueError, as Caffe's parse errors are in pycaffe."""

    def __init__(self, message, file=None, line=None, record=None):
        super().__init__(message)
        self.file, self.line, self.record = file, line, record


class MissingFileError(FileNotFoundError, FormatError):
    """A model, weights, mean or list file that does not exist: a FileNotFoundError naming the path,
    and a FormatError for code that catches the project's errors."""

    def __init__(self, path, what="file", reason="No such file or directory"):
        FileNotFoundError.__init__(self, 2, f"{what} {path} does not exist ({reason})", os.fspath(path))
        self.file, self.line, self.record = os.fspath(path), None, None

    def __str__(self):
        return self.strerror


def read_file(path, binary=True, what="file"):
    """The bytes (or UTF-8 text) of `path`: a regular file whole, a pipe up to STREAM_LIMIT bytes, never
    a device (/dev/zero would never end).  Text that is not UTF-8 is refused naming line and byte."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):
                kind = "a folder" if stat.S_ISDIR(mode) else "a device"
                raise FormatError(f"{path}: {kind}, not a {what}; only regular files and pipes are read", path)
            payload = handle.read() if stat.S_ISREG(mode) else handle.read(STREAM_LIMIT + 1)
    except FileNotFoundError as exc:
        raise MissingFileError(path, what, exc.strerror) from None
    except IsADirectoryError:
        raise FormatError(f"{path}: a folder, not a {what}", path) from None
    except OSError as exc:
        raise FormatError(f"cannot read {what} {path}: {exc.strerror}", path) from None
    if len(payload) > STREAM_LIMIT and not stat.S_ISREG(mode):
        raise FormatError(f"{path}: more than {STREAM_LIMIT} bytes from a stream; a {what} is read from a "
                          "pipe up to that size (PYCAFFE_LITE_STREAM_LIMIT)", path)
    return payload if binary else decode_utf8(payload, path)


def decode_utf8(payload, path="<string>"):
    """UTF-8 text, or FormatError naming the line, column and byte offset of the first bad byte."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = payload.count(b"\n", 0, exc.start) + 1
        column = exc.start - (payload.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FormatError(f"{path}:{line}:{column}: not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset "
                          f"{exc.start}: {exc.reason})", path, line) from None


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write to a temporary file beside `path`, then rename it into place.

    A crash, an exception or Ctrl-C inside the block leaves the old file (or
    none) where the new one was going: never a truncated one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_fresh(path, mode="w"):
    """A new file at `path` for output written as it comes (a --log file, HDF5Output's datasets).

    It is made as a temporary beside `path` and renamed into place at once: whatever was at `path`,
    a symlink included, is replaced, never followed and never truncated.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return os.fdopen(fd, mode)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, payload):
    with atomic_write(path, "wb") as handle:
        handle.write(payload)
