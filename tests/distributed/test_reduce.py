"""Gradient reduction and the NCCL path's CPU-side logic, with ranks as threads in one process.

The NCCL communicator is driven through a stand-in for cupy.cuda.nccl that sums host
buffers by their addresses, as NCCL sums device buffers: the pointer, count, type and root
handling, the uid encoding and the bucket logic are the code that runs on GPUs (which no
GPU has run in this project yet).
"""
import ctypes
import threading
from typing import ClassVar

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.distributed import GradientReducer, LocalGroup, make_buckets
from pycaffe_lite.distributed.comm import CommError
from pycaffe_lite.distributed.nccl import NCCLComm, uid_from_bytes, uid_to_bytes
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2

NET = '''
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
  param { name: "shared_w" } inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" inner_product_param { num_output: 4 } }
layer { name: "c" type: "InnerProduct" bottom: "a" top: "c"
  param { name: "shared_w" } inner_product_param { num_output: 3 bias_term: false } }
'''


def make_net():
    """c (after b) shares a's weights: they are complete only once backward has left a."""
    return Net(text_format.Parse(NET, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)


def run_ranks(size, body):
    """body(rank) in `size` threads; returns their results, re-raising the first failure."""
    results, errors = [None] * size, []

    def target(r):
        try:
            results[r] = body(r)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return results


def test_buckets_follow_backward_and_wait_for_a_shared_param():
    net = make_net()
    # learnable params: a/w (shared with c), a/b, b/w, b/b; c's weights are a's
    assert len(net.learnable_params) == 4
    buckets = make_buckets(net, layer_wise=True)
    # backward runs c, b, a: b's params are ready after b; a's weight only after a (c shares it)
    a, b = net.layer_names.index("a"), net.layer_names.index("b")
    assert [(bucket.trigger, bucket.indices) for bucket in buckets] == [(b, [2, 3]), (a, [0, 1])]
    assert [bucket.indices for bucket in make_buckets(net, layer_wise=False)] == [[0, 1, 2, 3]]
    merged = make_buckets(net, layer_wise=True, bucket_kb=1)
    assert [(bucket.trigger, bucket.indices) for bucket in merged] == [(a, [2, 3, 0, 1])]


def simulate_iteration(net, reducer, diffs, iter_size=1, started=None):
    reducer.on_start()
    for _ in range(iter_size):
        for i in reversed(range(len(net.layers))):
            if i == net.layer_names.index("a") and started is not None:
                started.append(reducer.comm_started)
            reducer.after_backward(i)
    for blob, d in zip(net.learnable_params, diffs):
        assert blob.diff.shape == d.shape
    reducer.on_gradients_ready()
    return [np.array(b.diff) for b in net.learnable_params]


@pytest.mark.parametrize("layer_wise", [True, False])
def test_reduced_gradients_are_the_mean_over_ranks(layer_wise):
    group = LocalGroup(2)
    rng = np.random.default_rng(0)
    nets = [make_net() for _ in range(2)]
    diffs = [[rng.standard_normal(b.shape).astype(np.float32) for b in nets[0].learnable_params] for _ in range(2)]

    def body(r):
        net = nets[r]
        for blob, d in zip(net.learnable_params, diffs[r]):
            blob.diff[...] = d
        reducer = GradientReducer(net, group.comms[r], layer_wise=layer_wise)
        return simulate_iteration(net, reducer, diffs[r])
    out = run_ranks(2, body)
    for k in range(4):
        expected = (diffs[0][k] + diffs[1][k]) * np.float32(0.5)
        np.testing.assert_array_equal(out[0][k], expected)
        np.testing.assert_array_equal(out[1][k], expected)


def test_layer_wise_starts_during_the_last_pass_only():
    group = LocalGroup(2)
    nets = [make_net() for _ in range(2)]

    def body(r):
        net = nets[r]
        reducer = GradientReducer(net, group.comms[r], layer_wise=True, iter_size=2)
        started = []
        simulate_iteration(net, reducer, [b.diff for b in net.learnable_params], iter_size=2, started=started)
        return started, reducer.comm_started
    for started, total in run_ranks(2, body):
        assert started == [0, 1] and total == 2   # none in pass 1; b's bucket before a's backward in pass 2


class FakeNccl:
    """cupy.cuda.nccl's calls, on host memory: buffers are reached through their addresses."""
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_FLOAT16, NCCL_INT64, NCCL_INT32, NCCL_UINT8 = range(6)
    NCCL_SUM = 0
    _ctypes: ClassVar[dict] = {0: (ctypes.c_float, np.float32), 1: (ctypes.c_double, np.float64),
                               3: (ctypes.c_int64, np.int64), 4: (ctypes.c_int32, np.int32),
                               5: (ctypes.c_uint8, np.uint8)}

    def __init__(self, size):
        self.group = LocalGroup(size)
        self.uids = []

    def get_unique_id(self):
        return tuple(range(-64, 64))

    def _view(self, ptr, count, dtype):
        ctype, np_type = self._ctypes[dtype]
        return np.ctypeslib.as_array((ctype * count).from_address(ptr)).view(np_type)

    def NcclCommunicator(self, ndev, uid, rank):
        fake = self
        self.uids.append(uid)

        class Comm:
            def allReduce(self, send, recv, count, dtype, op, stream):
                assert op == fake.NCCL_SUM and stream == 0
                buffer = fake._view(recv, count, dtype)
                buffer[...] = fake._view(send, count, dtype)
                fake.group.comms[rank].iallreduce(buffer)

            def bcast(self, buf, count, dtype, root, stream):
                fake.group.comms[rank].ibcast(fake._view(buf, count, dtype), root)

            def abort(self):
                pass
        return Comm()


def test_nccl_comm_reduces_broadcasts_and_gathers_through_pointers():
    fake = FakeNccl(2)
    uid = uid_to_bytes(fake.get_unique_id())
    assert len(uid) == 128 and uid_from_bytes(uid) == fake.get_unique_id()
    nets = [make_net() for _ in range(2)]

    def body(r):
        comm = NCCLComm(uid, r, 2, nccl=fake, cupy=None)
        net = nets[r]
        for blob in net.learnable_params:
            blob.diff[...] = r + 1.0
        reducer = GradientReducer(net, comm, layer_wise=True)
        diffs = simulate_iteration(net, reducer, [b.diff for b in net.learnable_params])
        weights = np.full(5, float(r), np.float64)
        comm.bcast(weights, root=1)
        return diffs, weights, comm.allgather_json({"rank": r})
    for diffs, weights, gathered in run_ranks(2, body):
        assert all((d == np.float32(1.5)).all() for d in diffs)
        assert (weights == 1.0).all()
        assert gathered == [{"rank": 0}, {"rank": 1}]
    assert fake.uids == [fake.get_unique_id()] * 2


def test_nccl_rejects_a_bad_rank_and_dtype():
    fake = FakeNccl(1)
    with pytest.raises(ValueError, match="NCCL rank 2 is outside 0..1"):
        NCCLComm(bytes(128), 2, 2, nccl=fake, cupy=None)
    comm = NCCLComm(bytes(128), 0, 1, nccl=fake, cupy=None)
    with pytest.raises(TypeError, match="NCCL cannot reduce arrays of complex64"):
        comm.iallreduce(np.zeros(2, np.complex64))


def test_a_rank_that_never_comes_is_an_error_not_a_hang():
    group = LocalGroup(2, timeout=0.2)
    with pytest.raises(CommError, match="rank 0: a local rank did not reach the collective"):
        group.comms[0].allreduce(np.zeros(1))
