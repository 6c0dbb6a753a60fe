"""Gradient reduction: sum the parameter diffs over the ranks, then scale by 1/N (Caffe's NCCL).

layer_wise_reduce (SolverParameter field 41): the learnable parameters are cut into
buckets in backward order; when backward has finished with the last layer that
touches a bucket's parameters (`after_backward(i)`), the bucket's diffs are packed and
a non-blocking allreduce starts, while backward goes on below.  Without it, one flat
buffer holds every diff and one allreduce runs when the gradients are ready.

A bucket is a layer's parameters (Caffe reduces layer by layer), or adjacent layers'
merged up to `reduce_bucket_kb`.  A shared parameter is ready only after the lowest
layer that uses it.  With iter_size > 1 only the last pass's backward reduces: the
diffs of all passes are summed locally first.
"""
import time

from ..backend import get_array_module


class Bucket:
    def __init__(self, indices, sizes, trigger):
        self.indices = indices          # positions in net.learnable_params
        self.sizes = sizes
        self.trigger = trigger          # the layer whose after_backward starts it
        self.buffer = None
        self.request = None


def param_ready_layers(net):
    """For each learnable parameter, the lowest layer index whose backward adds to its diff."""
    params = net.learnable_params
    ready = [len(net.layers)] * len(params)
    for i, layer in enumerate(net.layers):
        for blob in layer.blobs:
            for k, owner in enumerate(params):
                if blob is owner or _same_memory(blob.data, owner.data):
                    ready[k] = min(ready[k], i)
                    break
    return [0 if r == len(net.layers) else r for r in ready]


def _same_memory(a, b):
    xp = get_array_module(a)
    return a.size == b.size and xp.shares_memory(a, b)


def make_buckets(net, layer_wise, bucket_kb=0):
    """Buckets of parameter indices, in the order backward completes them."""
    params = net.learnable_params
    if not params:
        return []
    if not layer_wise:
        return [Bucket(list(range(len(params))), [p.count for p in params], trigger=None)]
    ready = param_ready_layers(net)
    by_layer = {}
    for k, layer in enumerate(ready):
        by_layer.setdefault(layer, []).append(k)
    buckets, group, nbytes = [], [], 0
    for layer in sorted(by_layer, reverse=True):
        group += by_layer[layer]
        nbytes += sum(params[k].count * params[k].dtype.itemsize for k in by_layer[layer])
        if nbytes >= bucket_kb * 1024:
            buckets.append(Bucket(group, [params[k].count for k in group], trigger=layer))
            group, nbytes = [], 0
    if group:
        buckets.append(Bucket(group, [params[k].count for k in group], trigger=min(ready[k] for k in group)))
    return buckets


class GradientReducer:
    """Sums net.learnable_params' diffs over `comm` and scales them by 1/comm.size.

    Solver callbacks: on_start() before each iteration, on_gradients_ready() before the
    update; Net hook: after_backward(layer_index) when layer-wise.  Timings of the last
    iteration: `wait_s` (time blocked waiting for reductions after backward) and
    `comm_started` (buckets started during backward)."""

    def __init__(self, net, comm, layer_wise=True, bucket_kb=0, iter_size=1):
        self.net, self.comm = net, comm
        self.params = net.learnable_params
        self.buckets = make_buckets(net, layer_wise, bucket_kb)
        self.by_trigger = {}
        for bucket in self.buckets:
            if bucket.trigger is not None:
                self.by_trigger.setdefault(bucket.trigger, []).append(bucket)
        self.iter_size = max(1, int(iter_size))
        self.passes = 0
        self.iteration = 0
        self.wait_s = 0.0
        self.comm_started = 0

    def on_start(self):
        self.passes = 0
        self.comm_started = 0
        for bucket in self.buckets:
            bucket.request = None

    def after_backward(self, layer):
        if self.passes == self.iter_size - 1:
            for bucket in self.by_trigger.get(layer, ()):
                self._start(bucket)
                self.comm_started += 1
            self.comm.progress([b.request for b in self.buckets if b.request is not None])
        if layer == 0:
            self.passes += 1

    def _start(self, bucket):
        diffs = [self.params[k].diff for k in bucket.indices]
        xp = get_array_module(diffs[0])
        if bucket.buffer is None:
            bucket.buffer = xp.empty(sum(bucket.sizes), diffs[0].dtype)
        offset = 0
        for diff, size in zip(diffs, bucket.sizes):
            bucket.buffer[offset:offset + size] = diff.reshape(-1)
            offset += size
        bucket.request = self.comm.iallreduce(bucket.buffer)

    def on_gradients_ready(self):
        for bucket in self.buckets:
            if bucket.request is None:        # flat mode, or no after_backward hook
                self._start(bucket)
        started = time.perf_counter()
        self.comm.wait([b.request for b in self.buckets],
                       f"the gradient allreduce of iteration {self.iteration}")
        self.wait_s = time.perf_counter() - started
        for bucket in self.buckets:
            self._unpack(bucket)
            bucket.request = None
        self.iteration += 1

    def _unpack(self, bucket):
        offset = 0
        for k, size in zip(bucket.indices, bucket.sizes):
            diff = self.params[k].diff
            xp = get_array_module(diff)
            scale = diff.dtype.type(1.0) / diff.dtype.type(self.comm.size)
            xp.multiply(bucket.buffer[offset:offset + size].reshape(diff.shape), scale, out=diff)
            offset += size
