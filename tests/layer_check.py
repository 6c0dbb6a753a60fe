"""Caffe's GradientChecker for pycaffe_lite layers, used by every layer test.

    check_gradient('type: "ReLU" relu_param { negative_slope: 0.1 }',
                   [np.random.randn(2, 3, 4, 5)])

builds the layer in float64 on the given bottoms, draws a random top diff
R, and compares the analytic gradients of  sum(top * R)  with respect to
every bottom and every parameter blob with central differences, on the
array module `xp` the bottoms are built on (NumPy unless given).

Central differences are wrong at a kink (ReLU at 0, a max-pooling tie): the
inputs are drawn away from the kinks with `away_from_kinks`, the one way every
layer test and the layer harness (tests/layer_cases.py) dodge them.
"""
import numpy as np
from google.protobuf import text_format

from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import create_layer
from pycaffe_lite.proto import caffe_pb2


GAP = 0.05   # how far a value stays from a kink: far beyond the difference step eps


def away_from_kinks(arrays, kinks=(), ties=False, gap=GAP):
    """Copies of `arrays` (float64) moved off the layer's kinks, keeping their order of size.

    kinks: values where the layer's derivative jumps (ReLU's 0, Clip's bounds, a hinge's
      margin); a value nearer than `gap` to one is pushed out to the same side.
    ties: the layer picks a winner among its inputs (MAX pooling, Eltwise MAX, SPP): the
      values of all the arrays together are respread, in the same order, evenly over their
      range, so no two are closer than range / count.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    if ties and arrays:
        flat = np.concatenate([a.ravel() for a in arrays])
        if flat.size > 1:
            flat[np.argsort(flat, kind="stable")] = np.linspace(flat.min(), flat.max(), flat.size)
        arrays = [part.reshape(a.shape) for part, a in
                  zip(np.split(flat, np.cumsum([a.size for a in arrays])[:-1]), arrays)]
    for a in arrays:
        for k in kinks:
            d = a - k
            near = np.abs(d) < gap
            a[near] = k + np.where(d[near] >= 0, 1.0, -1.0) * (gap + np.abs(d[near]))
    return arrays


def layer_param(text, name="layer"):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = name
    return param


def build(text, bottoms, num_tops=1, phase=caffe_pb2.TRAIN, dtype=np.float64, xp=np, in_place=False):
    """Set up the layer described by `text` on copies of `bottoms` (blobs of array module
    `xp`; in_place: the tops are the bottoms); returns (layer, bottom, top)."""
    param = layer_param(text)
    param.phase = phase
    layer = create_layer(param, phase)
    bottom = []
    for array in bottoms:
        array = np.asarray(array)
        blob = Blob(array.shape, dtype=array.dtype if array.dtype.kind in "iu" else dtype, xp=xp)
        backend.copy_into(blob.data, array)
        bottom.append(blob)
    top = bottom if in_place else [Blob((), dtype=dtype, xp=xp) for _ in range(num_tops)]
    layer.SetUp(bottom, top)
    return layer, bottom, top


def forward(text, bottoms, num_tops=1, **kw):
    """Run one forward; returns the top arrays."""
    layer, bottom, top = build(text, bottoms, num_tops, **kw)
    layer.Forward(bottom, top)
    return [backend.to_numpy(t.data).copy() for t in top]


def numerical_gradient(objective, blob, eps=1e-6):
    """Central differences of objective() with respect to each value of blob.data."""
    numeric = np.zeros(blob.data.shape)
    flat = blob.data.reshape(-1)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + eps
        plus = objective()
        flat[k] = saved - eps
        minus = objective()
        flat[k] = saved
        numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
    return numeric


def check_gradient(text, bottoms, num_tops=1, check_bottoms=None, eps=1e-6, rtol=1e-5, atol=1e-8,
                   phase=caffe_pb2.TRAIN, seed=0, top_weights=None, setup_fn=None, xp=np, check_params=None):
    """Assert that the layer's backward matches numerical gradients; returns the layer.

    check_bottoms: indices of bottoms to differentiate (default: all float bottoms).
    top_weights: which tops enter the objective (default: all).
    setup_fn(layer): hook to fix state (e.g. a dropout mask) before checking.
    check_params: indices of parameter blobs to check (default: all); a straight-through
    estimator's parameter gradient is not the numerical one (tests/layers/test_binary.py).
    """
    rng = np.random.default_rng(seed)
    layer, bottom, top = build(text, bottoms, num_tops, phase=phase, xp=xp)
    if setup_fn:
        setup_fn(layer)
    if check_bottoms is None:
        check_bottoms = [i for i, b in enumerate(bottom) if b.dtype.kind == "f"]
    used_tops = range(len(top)) if top_weights is None else top_weights

    def objective():
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return sum(float((top[i].data * weights[i]).sum()) for i in used_tops)

    layer.forward(bottom, top)
    weights = {i: xp.asarray(rng.standard_normal(top[i].shape)) for i in used_tops}
    for i, t in enumerate(top):
        t.diff[...] = weights.get(i, 0.0)
    for p in layer.blobs:
        p.diff[...] = 0
    propagate = [i in check_bottoms for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    params = range(len(layer.blobs)) if check_params is None else check_params
    targets = [bottom[i] for i in check_bottoms] + [layer.blobs[j] for j in params]
    analytic = [backend.to_numpy(b.diff).copy() for b in targets]
    names = [f"bottom[{i}]" for i in check_bottoms] + [f"param[{j}]" for j in params]
    for blob, grad, name in zip(targets, analytic, names):
        numeric = numerical_gradient(objective, blob, eps)
        scale = max(1.0, float(np.abs(numeric).max()))
        np.testing.assert_allclose(grad, numeric, rtol=rtol, atol=atol * scale + rtol * scale,
                                   err_msg=f"{layer.type} gradient of {name}")
    return layer
