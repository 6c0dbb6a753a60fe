"""NCCL on GPUs through CuPy (`cupy.cuda.nccl`), its unique id handed round by the caller.

    uid = new_uid()                          # on one process; or broadcast over MPI (nccl_over_mpi)
    comm = NCCLComm(uid, rank, size)         # after cupy.cuda.Device(d).use()

Gradients are reduced on a stream of the communicator's own, so a layer's allreduce runs
while backward goes on with the layers below it (Caffe's NCCL does the same); `wait`
makes the compute stream wait for it.  The array primitives take CuPy arrays; `nccl` and
`cupy` can be given, which is how the tests drive this code on the CPU with a stand-in
module (no GPU has run it in this project so far).
"""
import numpy as np

from .comm import Communicator

_NCCL_TYPES = {np.dtype(np.float32): "NCCL_FLOAT32", np.dtype(np.float64): "NCCL_FLOAT64",
               np.dtype(np.float16): "NCCL_FLOAT16", np.dtype(np.int64): "NCCL_INT64",
               np.dtype(np.int32): "NCCL_INT32", np.dtype(np.uint8): "NCCL_UINT8"}


def nccl_module():
    """cupy.cuda.nccl, or RuntimeError saying what is missing."""
    from .. import backend
    cupy = backend.cupy_module()
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        raise RuntimeError(f"NCCL is not available to CuPy ({exc}); install a CuPy build with NCCL "
                           "(pip install 'pycaffe-lite[gpu]' and `python -m cupyx.tools.install_library "
                           "--library nccl --cuda 12.x`)") from None
    if not getattr(nccl, "available", True):
        raise RuntimeError("CuPy was built without NCCL (cupy.cuda.nccl.available is False)")
    return cupy, nccl


def new_uid(nccl=None):
    """A fresh NCCL unique id as bytes (what pycaffe's NCCL.new_uid returns)."""
    if nccl is None:
        nccl = nccl_module()[1]
    return uid_to_bytes(nccl.get_unique_id())


def uid_to_bytes(uid):
    """CuPy gives the 128-byte ncclUniqueId as a tuple of C chars (ints -128..127)."""
    return bytes(int(c) & 0xFF for c in uid)


def uid_from_bytes(data):
    if len(data) != 128:
        raise ValueError(f"an NCCL unique id has 128 bytes, got {len(data)}")
    return tuple(b - 256 if b > 127 else b for b in data)


def nccl_over_mpi(mpi_comm, device=None):
    """An NCCLComm for every MPI rank: rank 0 makes the unique id, MPI broadcasts it."""
    cupy, nccl = nccl_module()
    if device is not None:
        cupy.cuda.Device(device).use()
    uid = new_uid(nccl) if mpi_comm.rank == 0 else bytes(128)
    buffer = np.frombuffer(uid, np.uint8).copy()
    mpi_comm.bcast(buffer, 0, "the broadcast of the NCCL unique id")
    return NCCLComm(buffer.tobytes(), mpi_comm.rank, mpi_comm.size, nccl=nccl, cupy=cupy)


class _Event:
    def __init__(self, event):
        self.event = event


class NCCLComm(Communicator):
    """NCCL collectives on a stream of their own; CuPy arrays in, summed in place."""
    name = "NCCL"

    def __init__(self, uid, rank, size, nccl=None, cupy=None):
        if nccl is None:
            cupy, nccl = nccl_module()
        self.nccl, self.cupy = nccl, cupy
        self.rank, self.size = int(rank), int(size)
        if not 0 <= self.rank < self.size:
            raise ValueError(f"NCCL rank {rank} is outside 0..{size - 1}")
        uid = uid_from_bytes(uid) if isinstance(uid, (bytes, bytearray)) else tuple(uid)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True) if cupy is not None else None

    def _dtype(self, array):
        try:
            return getattr(self.nccl, _NCCL_TYPES[np.dtype(array.dtype)])
        except KeyError:
            raise TypeError(f"NCCL cannot reduce arrays of {array.dtype}") from None

    @staticmethod
    def _pointer(array):
        data = array.data
        return data.ptr if hasattr(data, "ptr") else array.ctypes.data

    def _launch(self, call):
        """Run an NCCL call on our stream after the work queued so far; return its event."""
        if self.cupy is None:
            call(0)
            return _Event(None)
        cuda = self.cupy.cuda
        ready = cuda.get_current_stream().record()
        self.stream.wait_event(ready)
        call(self.stream.ptr)
        return _Event(self.stream.record())

    def _host(self, array):
        """Control values (lengths, tables, flags) come as NumPy arrays: stage them on the device."""
        if self.cupy is None or not isinstance(array, np.ndarray):
            return array, None
        return self.cupy.asarray(array), array

    def iallreduce(self, array):
        device, host = self._host(array)
        event = self._launch(lambda s: self.comm.allReduce(self._pointer(device), self._pointer(device), device.size,
                                                           self._dtype(device), self.nccl.NCCL_SUM, s))
        if host is not None:
            self.wait([event], "allreduce")
            host[...] = device.get()
        return event

    def ibcast(self, array, root=0):
        device, host = self._host(array)
        event = self._launch(lambda s: self.comm.bcast(self._pointer(device), device.size, self._dtype(device),
                                                       root, s))
        if host is not None:
            self.wait([event], "broadcast")
            host[...] = device.get()
        return event

    def wait(self, requests, what):
        """The compute stream waits for the reductions (the host does not block)."""
        if self.cupy is None:
            return
        current = self.cupy.cuda.get_current_stream()
        for request in requests:
            if request.event is not None:
                current.wait_event(request.event)

    def abort(self, code=1):
        try:
            self.comm.abort()
        finally:
            super().abort(code)
