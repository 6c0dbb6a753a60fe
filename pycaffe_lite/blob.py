"""Blob: an N-d array of values (`data`) and of gradients (`diff`), as in Caffe.

`data` and `diff` are plain NumPy (or CuPy) arrays whose memory stays put, as
Caffe's SyncedMemory does: a view taken before a forward pass sees its
results.  Writing into them (`blob.data[...] = x`) writes through, and so
does assigning (`top.data = y` copies y in; y must have the blob's shape).
Only `share_data` / `share_diff` make two blobs use one array (Split,
Flatten), and `set_data` hands a blob a new array of its own (a data layer's
fresh batch, as Caffe's set_cpu_data swaps the pointer).  `diff` is allocated on first use, so blobs that never see a
gradient cost no memory.
"""
import contextlib
import math
import threading

import numpy as np

from . import backend
from .io_utils import FormatError

_budget = threading.local()     # what the Net being built has allocated, and its limit
CHECKED_FROM = 1 << 20          # outside a Net, allocations from 1 MiB up are checked one by one


class MemoryLimitError(FormatError, MemoryError):
    """Blobs whose shapes ask for more memory than the limit: refused before anything is allocated."""


def _gib(nbytes):
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"


@contextlib.contextmanager
def allocation_budget():
    """While a Net is built: the bytes of every blob it allocates add up, and a blob that would take the
    total past backend.memory_limit() is refused before its allocation."""
    limit, source = backend.memory_limit()
    previous = getattr(_budget, "state", None)
    _budget.state = [0, limit, source]
    try:
        yield _budget.state
    finally:
        _budget.state = previous


def _charge(shape, dtype, xp):
    """Refuse an allocation of `shape` that passes the limit (NumPy arrays only: device memory is
    CuPy's to refuse)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    state = getattr(_budget, "state", None)
    if xp is not np or (state is None and nbytes < CHECKED_FROM):
        return
    if state is None:
        used, (limit, source) = 0, backend.memory_limit()
    else:
        used, limit, source = state
    if limit is not None and used + nbytes > limit:
        already = f", with {_gib(used)} already allocated for this net," if used >= CHECKED_FROM else ""
        raise MemoryLimitError(f"a blob of shape {shape} ({np.dtype(dtype).name}) needs {_gib(nbytes)}{already} "
                               f"more than the limit of {_gib(limit)} ({source}; set PYCAFFE_LITE_MEMORY_LIMIT "
                               "or pycaffe_lite.set_memory_limit to change it)")
    if state is not None:
        state[0] += nbytes


class Blob:
    def __init__(self, shape=(), dtype=np.float32, xp=None):
        self._xp = xp or backend.xp()
        self.dtype = np.dtype(dtype)
        self._shape = None
        self._data = None
        self._diff = None
        self._keys = None          # the records this blob's batch came from (a data layer's top)
        self._keys_from = None     # the blob whose data this one shares
        self.reshape(*shape) if shape is not None else None

    # --- shape -----------------------------------------------------------
    def reshape(self, *shape):
        """Reshape, keeping the values when the count is unchanged (Caffe keeps capacity)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"Blob shape {shape} has a negative dimension")
        if shape == self._shape:
            return
        count = math.prod(shape)
        if self._data is not None and self._data.size == count:
            self._data = self._data.reshape(shape)
            self._diff = None if self._diff is None else self._diff.reshape(shape)
        else:
            _charge(shape, self.dtype, self._xp)
            self._data = self._xp.zeros(shape, self.dtype)
            self._diff = None
        self._shape = shape

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def num_axes(self):
        return len(self._shape)

    def canonical_axis(self, axis):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise ValueError(f"axis {axis} out of range for a blob of shape {self._shape}")
        return axis + n if axis < 0 else axis

    def count_between(self, start, end=None):
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def _legacy(self, i):
        # num/channels/height/width: the 4-D view of old Caffe, 1 where the axis is absent.
        n = len(self._shape)
        if n > 4:
            raise ValueError(f"legacy accessors need at most 4 axes, blob has shape {self._shape}")
        axis = i if i < n else None
        return 1 if axis is None else self._shape[axis]

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def shape_string(self):
        return " ".join(str(s) for s in self._shape) + f" ({self.count})"

    # --- values ----------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._copy_in(self._data, value, "data")

    @property
    def diff(self):
        if self._diff is None:
            self._diff = self._xp.zeros(self._shape, self.dtype)
        return self._diff

    @diff.setter
    def diff(self, value):
        self._copy_in(self.diff, value, "diff")

    @property
    def has_diff(self):
        return self._diff is not None

    def _checked(self, value, what):
        if tuple(value.shape) != self._shape:
            raise ValueError(f"cannot set blob {what} of shape {self._shape} "
                             f"to an array of shape {tuple(value.shape)}")
        return value

    def _copy_in(self, target, value, what):
        if value is not target:
            backend.copy_into(target, self._checked(value, what))

    def set_data(self, array):
        """Make `array` itself the data, without a copy (Caffe's Blob::set_cpu_data): for a producer
        that hands over a fresh array every time, as a data layer's loader does.  A view taken of
        the old data keeps the old values; the array must have the blob's shape, dtype and device."""
        array = self._checked(array, "data")
        if np.dtype(array.dtype) != self.dtype or backend.get_array_module(array) is not self._xp:
            raise ValueError(f"cannot hand a blob of {self.dtype} on {self._xp.__name__} an array of "
                             f"{array.dtype} on {backend.get_array_module(array).__name__}")
        self._data = array

    def share_data(self, other):
        """Use other's data array itself (Caffe's ShareData); counts must agree."""
        self._data = self._shared(other.data, "data")
        self._keys_from = other

    @property
    def record_keys(self):
        """The database keys (or list lines) of the records in this batch, item by item, when a data
        layer filled it (also through blobs sharing its data): errors about a value name its record."""
        return self._keys_from.record_keys if self._keys_from is not None else self._keys

    @record_keys.setter
    def record_keys(self, keys):
        self._keys = keys

    def share_diff(self, other):
        self._diff = self._shared(other.diff, "diff")

    def _shared(self, array, what):
        if array.size != self.count:
            raise ValueError(f"cannot share a {what} array of {array.size} values with a blob "
                             f"of shape {self._shape}")
        return array if tuple(array.shape) == self._shape else array.reshape(self._shape)

    def zero_diff(self):
        if self._diff is not None:
            self._diff[...] = 0

    def to(self, xp):
        """Move data and diff to another array module (numpy <-> cupy)."""
        if xp is self._xp:
            return
        move = (lambda a: xp.asarray(a)) if xp is not np else backend.to_numpy
        self._data = move(self._data)
        self._diff = None if self._diff is None else move(self._diff)
        self._xp = xp

    def __repr__(self):
        return f"Blob(shape={self._shape}, dtype={self.dtype})"
