"""A reusable scratch memory for the convolution engines.

Allocating a fresh 50 MB column buffer every iteration costs page faults as
much as the im2col copy itself, so the engines borrow named buffers from one
shared pool that only grows.  Buffers are shared between all layers (a layer's
columns are dead once its GEMM has run), one set per array module and dtype.

The pool reports its size (`workspace_bytes()`) and can be capped
(`set_workspace_limit(bytes)`, or the environment variable
PYCAFFE_LITE_CONV_WORKSPACE_MB): an engine that would need more than the cap
for the whole batch works through the batch in chunks of images instead.
"""
import os

import numpy as np

_DEFAULT_LIMIT = int(float(os.environ.get("PYCAFFE_LITE_CONV_WORKSPACE_MB", 1024)) * 2 ** 20)


class Workspace:
    def __init__(self, limit_bytes=_DEFAULT_LIMIT):
        self.limit_bytes = limit_bytes
        self._buffers = {}     # (xp name, dtype, name) -> flat array
        self.peak_request = 0  # the largest total a single call asked for

    def get(self, name, shape, dtype, xp=np):
        """A C-contiguous array of `shape` (contents undefined) from buffer `name`."""
        dtype = np.dtype(dtype)
        count = 1
        for s in shape:
            count *= int(s)
        key = (xp.__name__, dtype.str, name)
        buf = self._buffers.get(key)
        if buf is None or buf.size < count:
            self._buffers.pop(key, None)   # free the old one before allocating the new
            buf = xp.empty(max(count, 1), dtype)
            self._buffers[key] = buf
        return buf[:count].reshape(shape)

    def zeros(self, name, shape, dtype, xp=np):
        a = self.get(name, shape, dtype, xp)
        a.fill(0)
        return a

    def chunk(self, per_image_bytes, num, fixed_bytes=0):
        """How many images to process at once so that the buffers stay under the cap."""
        if self.limit_bytes is None or per_image_bytes <= 0:
            return num
        room = self.limit_bytes - fixed_bytes
        n = int(room // per_image_bytes)
        self.peak_request = max(self.peak_request, fixed_bytes + min(max(n, 1), num) * per_image_bytes)
        return max(1, min(num, n))

    def nbytes(self):
        return sum(int(b.nbytes) for b in self._buffers.values())

    def release(self):
        self._buffers.clear()


_WORKSPACE = Workspace()


def workspace():
    return _WORKSPACE


def workspace_bytes():
    """Bytes the convolution engines' shared scratch buffers hold now."""
    return _WORKSPACE.nbytes()


def set_workspace_limit(nbytes):
    """Cap the scratch memory (bytes; None for no cap).  Engines then chunk the batch."""
    _WORKSPACE.limit_bytes = None if nbytes is None else int(nbytes)


def workspace_limit():
    return _WORKSPACE.limit_bytes


def release_workspace():
    """Free the scratch buffers (they are reallocated on the next call)."""
    _WORKSPACE.release()


def fingerprint(*arrays):
    """A token that changes when an array is replaced or any of its values is rewritten.

    Engines that keep transforms from a forward pass for the backward pass (FFT
    spectra, Winograd tiles), or transformed weights from one forward to the
    next, check it; Caffe would simply recompute them.  It holds each array's
    address, shape and dtype, its sum accumulated in float64 (which sees a
    change to any single value) and its dot product with itself (which sees
    changes that cancel in the sum): two passes over the array, a few percent
    of a convolution's time."""
    token = []
    for a in arrays:
        flat = a.reshape(-1)
        address = a.data.ptr if hasattr(a.data, "ptr") else a.__array_interface__["data"][0]
        token.append((address, a.shape, str(a.dtype), float(flat.sum(dtype="float64")),
                      float(flat @ flat)))
    return tuple(token)
