"""Feature extraction: run a trained net and keep chosen blobs, as Caffe's
`extract_features` tool does.

    feats = extract_features(net, ["fc7", "pool5"], iterations=10)    # {blob: array}
    save_features(feats, "features.npz")           # one array per blob, N x ...
    save_features(feats, ["fc7_lmdb", "pool5_lmdb"])  # Caffe's layout: one LMDB per blob

The net reads its own data (a Data layer in the TEST phase, as Caffe's tool
expects), or is fed arrays with `inputs={"data": batches}`.
"""
import collections
import os

import numpy as np

from ..backend import to_numpy


def extract_features(net, blobs, iterations=1, inputs=None, progress=None):
    """Run `iterations` forward passes and stack the requested blobs.

    inputs: optional {input blob: array of N samples} fed batch by batch
    (the net's input batch size each time) instead of the net's data layers.
    Returns an OrderedDict blob -> array with iterations x batch rows.
    """
    blobs = list(blobs)
    missing = [b for b in blobs if b not in net.blobs]
    if missing:
        raise ValueError(f"the net has no blob {', '.join(repr(b) for b in missing)}; "
                         f"blobs: {', '.join(net.blobs)}")
    if iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {iterations}")
    collected = collections.OrderedDict((b, []) for b in blobs)
    for it in range(iterations):
        if inputs:
            feed = {}
            for name, values in inputs.items():
                batch = net.blobs[name].shape[0]
                chunk = np.asarray(values[it * batch:(it + 1) * batch])
                if chunk.shape[0] == 0:
                    raise ValueError(f"input '{name}' ran out after {it} batches of {batch}")
                if chunk.shape[0] != batch:
                    net.blobs[name].reshape(*chunk.shape)
                    net.reshape()
                feed[name] = chunk
            net.forward(**feed)
        else:
            net.forward()
        for b in blobs:
            collected[b].append(np.array(to_numpy(net.blobs[b].data), copy=True))
        if progress:
            progress(it + 1, iterations)
    return collections.OrderedDict((b, np.concatenate(v, axis=0)) for b, v in collected.items())


def save_features(features, out):
    """Write features to an .npz (one array per blob) or to LMDBs of Datums (one per blob).

    out: a path ending in .npz; or a list of LMDB paths, one per blob in
    order; or one LMDB path when there is one blob. LMDB records follow
    Caffe's extract_features: key '%010d' (the sample index), a Datum with
    channels/height/width of one sample and its values in float_data.
    """
    from ..io_utils import atomic_write
    if isinstance(out, (str, os.PathLike)) and os.fspath(out).endswith(".npz"):
        with atomic_write(out, "wb") as handle:
            np.savez(handle, **{name: np.asarray(arr, np.float32) for name, arr in features.items()})
        return [os.fspath(out)]
    paths = [out] if isinstance(out, (str, os.PathLike)) else list(out)
    if len(paths) != len(features):
        raise ValueError(f"{len(features)} blobs need {len(features)} LMDB paths (comma-separated), "
                         f"got {len(paths)}; or write one .npz")
    from ..data.datum import array_to_datum
    from ..data.lmdb_io import LMDBWriter
    for path, array in zip(paths, features.values()):
        with LMDBWriter(os.fspath(path)) as db:
            for index, sample in enumerate(np.asarray(array, np.float32)):
                sample = sample.reshape(sample.shape + (1,) * max(0, 3 - sample.ndim)) \
                    if sample.ndim < 3 else sample.reshape(sample.shape[0], sample.shape[1], -1)
                db.put(b"%010d" % index, array_to_datum(sample).SerializeToString())
    return [os.fspath(p) for p in paths]
