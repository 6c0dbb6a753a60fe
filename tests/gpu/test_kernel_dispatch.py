"""The layers' GPU path reaches the CUDA kernels of gpu/kernels.py, and gives the NumPy path's results.

On the CPU the check runs the dispatch itself: inside kernels.emulated(...) NumPy arrays take the
device path (conv.im2col's im2col / col2im, layers.pooling's pool_kernels), whose launches run the
kernels' code compiled as C++ (gpu/emulate.py).  A Pooling layer's MAX and AVE forward/backward
and an im2col Convolution's forward/backward must then equal the host path exactly (ties, pad,
stride, ceil and floor rounding), and the kernels must have been launched.  The `gpu` tests do the
same with CuPy arrays on a device (skipped without one)."""
import numpy as np
import pytest

from conftest import require_cupy
from layer_check import build
from pycaffe_lite import backend
from pycaffe_lite.gpu import emulate, kernels


@pytest.fixture(scope="module")
def emulator():
    if emulate.compiler() is None:
        pytest.skip("no C++ compiler (g++, clang++ or $CXX) to emulate the CUDA kernels")
    return emulate.runner()


def _ties(shape, seed=0):
    """Values on a grid of halves, so that many windows hold equal maxima."""
    return np.round(np.random.default_rng(seed).standard_normal(shape) * 2) / 2


def _passes(layer, bottom, top, dy):
    """The tops, bottom diff and param diffs (host copies) of one forward and backward."""
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.Forward(bottom, top)
    top[0].diff = dy
    layer.Backward(top, [True], bottom)
    arrays = [t.data for t in top] + [bottom[0].diff] + [b.diff for b in layer.blobs]
    return [backend.to_numpy(a).copy() for a in arrays]


def _host_and_device(text, x, emulator, num_tops=1, dtype=np.float32):
    """The same layer run on the host path, then on the device path with the emulator standing in."""
    layer, bottom, top = build(text, [x], num_tops, dtype=dtype)
    dy = _ties(top[0].shape, seed=1).astype(dtype)
    host = _passes(layer, bottom, top, dy)
    launched = []

    def spy(spec, args, outs):
        launched.append(spec.name)
        emulator(spec, args, outs)

    with kernels.emulated(spy):
        device = _passes(layer, bottom, top, dy)
    return host, device, launched


def _assert_equal(host, device):
    assert len(host) == len(device)
    for ours, reference in zip(device, host):
        np.testing.assert_array_equal(ours, reference)


POOLING = [
    "pool: MAX kernel_size: 3 stride: 2",                              # ceil: the last column window overhangs
    "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0",
    "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR",
    "pool: AVE kernel_size: 3 stride: 2",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1",
    "pool: AVE kernel_size: 2 stride: 2 round_mode: FLOOR",
]
# a small input (the host runs the array functions) and one past NUMBA_MIN_SIZE (the Numba kernels)
SHAPES = [(2, 3, 9, 8), (2, 8, 17, 16)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("params", POOLING)
def test_pooling_layer_device_path_equals_the_host_path(emulator, params, shape):
    text = f'type: "Pooling" pooling_param {{ {params} }}'
    host, device, launched = _host_and_device(text, _ties(shape), emulator)
    _assert_equal(host, device)
    pool = "max" if "MAX" in params else "ave"
    assert launched == [f"pycaffe_{pool}_pool_fwd", f"pycaffe_{pool}_pool_bwd"]


def test_pooling_mask_top_on_the_device_path(emulator):
    text = 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }'
    host, device, launched = _host_and_device(text, _ties((2, 3, 9, 8)), emulator, num_tops=2)
    _assert_equal(host, device)
    assert launched == ["pycaffe_max_pool_fwd", "pycaffe_max_pool_bwd"]


CONVOLUTION = [
    "num_output: 4 kernel_size: 3 stride: 2 pad: 1",
    "num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 2 pad_w: 0 dilation: 2 group: 3",
]


@pytest.mark.parametrize("shape", [(2, 3, 9, 8), (4, 6, 24, 22)], ids=str)
@pytest.mark.parametrize("params", CONVOLUTION)
def test_im2col_convolution_device_path_equals_the_host_path(emulator, params, shape):
    shape = (shape[0], 6 if "group" in params else 3) + shape[2:]
    text = (f'type: "Convolution" convolution_param {{ {params} engine: CAFFE '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }')
    host, device, launched = _host_and_device(text, _ties(shape), emulator)
    _assert_equal(host, device)
    # forward: im2col; backward: im2col again for dW (or the forward's kept columns), col2im for dx
    assert launched[0] == "pycaffe_im2col" and "pycaffe_col2im" in launched
    assert set(launched) == {"pycaffe_im2col", "pycaffe_col2im"}


def test_host_path_stays_off_the_kernels_outside_emulation(monkeypatch):
    def refuse(*args):
        raise AssertionError("a NumPy array reached a kernel launch outside kernels.emulated")
    monkeypatch.setattr(kernels, "_launch", refuse)
    text = 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }'
    layer, bottom, top = build(text, [_ties((1, 2, 7, 7))], dtype=np.float32)
    _passes(layer, bottom, top, np.ones(top[0].shape, np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("params", [POOLING[1], POOLING[5]])
def test_pooling_on_cupy_launches_the_kernels(params):
    cp = require_cupy()
    text = f'type: "Pooling" pooling_param {{ {params} }}'
    x = _ties((2, 8, 17, 16))
    layer, bottom, top = build(text, [x], dtype=np.float32)
    dy = _ties(top[0].shape, seed=1).astype(np.float32)
    host = _passes(layer, bottom, top, dy)
    kernels._COMPILED.clear()
    layer, bottom, top = build(text, [x], dtype=np.float32, xp=cp)
    device = _passes(layer, bottom, top, cp.asarray(dy))
    pool = "max" if "MAX" in params else "ave"
    assert {f"pycaffe_{pool}_pool_fwd", f"pycaffe_{pool}_pool_bwd"} <= set(kernels._COMPILED)
    if pool == "max":
        _assert_equal(host, device)
    else:   # the device may divide and add in another rounding: within float32 rounding
        for ours, reference in zip(device, host):
            np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
def test_im2col_convolution_on_cupy_launches_the_kernels():
    cp = require_cupy()
    text = ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 engine: CAFFE '
            'weight_filler { type: "constant" value: 0.25 } bias_filler { type: "constant" value: 0.5 } }')
    x = _ties((2, 3, 9, 8))
    dy = None
    results = []
    for xp in (np, cp):
        kernels._COMPILED.clear()
        layer, bottom, top = build(text, [x], dtype=np.float32, xp=xp)
        dy = _ties(top[0].shape, seed=1).astype(np.float32) if dy is None else dy
        results.append(_passes(layer, bottom, top, xp.asarray(dy)))
    assert {"pycaffe_im2col", "pycaffe_col2im"} <= set(kernels._COMPILED)
    for ours, reference in zip(results[1], results[0]):     # cuBLAS sums in its own order
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
