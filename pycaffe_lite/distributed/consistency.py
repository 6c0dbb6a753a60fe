"""Rank consistency: every rank must train the same net with the same solver and weights.

At start each rank describes its net (layer names, types, parameter shapes) and solver
(the SolverParameter as text, less what may differ per rank: device_id); rank 0's
description is compared with every other's and the first difference is named.  While
training, `weights_digest` hashes the weights so that ranks can compare them (the
debug check of SolverParameter.check_weights_sync, and the tests' final check).
"""
import hashlib

from google.protobuf import text_format

from .. import backend
from ..proto import caffe_pb2


class RanksDiffer(ValueError):
    """Ranks were given different nets, solvers, or ended with different weights."""


def net_description(net):
    return [[name, layer.type, [list(b.shape) for b in layer.blobs]]
            for name, layer in zip(net.layer_names, net.layers)]


def solver_description(param):
    copy = caffe_pb2.SolverParameter()
    copy.CopyFrom(param)
    copy.ClearField("device_id")
    return text_format.MessageToString(copy).splitlines()


def describe(solver):
    return {"net": net_description(solver.net), "solver": solver_description(solver.param),
            "test nets": [net_description(n) for n in solver.test_nets]}


def first_difference(mine, theirs):
    """'<what>: <rank 0's> vs <theirs>' for the first item that differs, else None."""
    for key in mine:
        a, b = mine[key], theirs.get(key)
        if a == b:
            continue
        if not isinstance(a, list) or not isinstance(b, list):
            return f"{key}: {a!r} vs {b!r}"
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else "(nothing)"
            y = b[i] if i < len(b) else "(nothing)"
            if x != y:
                return f"{key}, entry {i}: {x!r} vs {y!r}"
    return None


def check_ranks_agree(comm, solver):
    """Raise RanksDiffer naming the first rank whose net or solver is not rank 0's."""
    descriptions = comm.allgather_json(describe(solver), "the start-up check that all ranks train the same net")
    for rank, theirs in enumerate(descriptions[1:], 1):
        difference = first_difference(descriptions[0], theirs)
        if difference:
            raise RanksDiffer(f"rank {rank} does not train what rank 0 trains: {difference} "
                              "(every rank must be given the same solver, net and data shapes)")


def weights_digest(net):
    digest = hashlib.sha1()
    for blob in net.learnable_params:
        digest.update(backend.to_numpy(blob.data).tobytes())
    return digest.hexdigest()


def check_weights_agree(comm, net, iteration):
    """Raise RanksDiffer naming the ranks whose weights differ from rank 0's."""
    digests = comm.allgather_json(weights_digest(net), f"the weights check of iteration {iteration}")
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RanksDiffer(f"iteration {iteration}: the weights of rank(s) {', '.join(map(str, differ))} differ "
                          f"from rank 0's (weights hash {digests[0][:12]} vs "
                          f"{', '.join(digests[r][:12] for r in differ)}); the ranks no longer train one model")
    return digests[0]
