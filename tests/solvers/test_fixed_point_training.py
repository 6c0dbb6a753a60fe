"""Training in fixed point (Gupta et al. 2015): fixed_point_param on a net or a layer keeps
the activations, the back-propagated errors, the parameter gradients and the parameters
(so the update) in <word_length, fraction_length>."""
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite import backend
from pycaffe_lite.kernels import quantize
from pycaffe_lite.net import TRAIN, Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver

NET = """
name: "tiny"
%s
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 5 } shape { dim: 8 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" %s
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" %s
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def _on_grid(array, fl):
    scaled = np.asarray(array, np.float64) * 2.0 ** fl
    return np.array_equal(scaled, np.round(scaled))


def _net(net_fp="", ip1_fp="", ip2_fp=""):
    backend.set_random_seed(1)
    param = text_format.Parse(NET % (net_fp, ip1_fp, ip2_fp), caffe_pb2.NetParameter())
    net = Net(param, phase=TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal((8, 5))
    net.blobs["label"].data[...] = rng.integers(0, 3, 8)
    return net


def test_net_setting_covers_the_layers_that_learn_and_a_layer_may_opt_out():
    net = _net("fixed_point_param { word_length: 12 fraction_length: 6 }",
               ip2_fp="fixed_point_param { word_length: 0 }")
    fixed = {name: layer.fixed_point for name, layer in zip(net.layer_names, net.layers)}
    assert (fixed["ip1"].word_length, fixed["ip1"].fraction_length) == (12, 6)
    assert fixed["ip2"] is None and fixed["relu"] is None and fixed["loss"] is None and fixed["data"] is None
    net.forward()
    net.backward()
    assert _on_grid(net.blobs["ip1"].data, 6)
    assert _on_grid(net.params["ip1"][0].data, 6) and _on_grid(net.params["ip1"][1].data, 6)
    assert _on_grid(net.params["ip1"][0].diff, 6) and _on_grid(net.params["ip1"][1].diff, 6)
    assert not _on_grid(net.params["ip2"][0].data, 6)
    assert not _on_grid(net.blobs["ip2"].data, 6)
    assert not _on_grid(net.blobs["ip1"].diff, 6)     # the error ip2 (float) sends back
    assert not _on_grid(net.blobs["ip2"].diff, 6)


def test_layer_setting_trims_its_bottom_diffs_and_saturates():
    net = _net(ip2_fp="fixed_point_param { word_length: 8 fraction_length: 6 rounding: NEAREST }")
    net.params["ip2"][0].data[...] *= 100                        # beyond the range [-2, 2)
    net.forward()
    net.backward()
    w = net.params["ip2"][0].data
    assert w.max() == np.float32(127 / 64) and w.min() == -2 and _on_grid(w, 6)
    assert _on_grid(net.blobs["ip1"].diff, 6) and _on_grid(net.blobs["ip2"].data, 6)
    assert not _on_grid(net.blobs["ip1"].data, 6)                # ip1 stays in floating point


SOLVER = """base_lr: %g lr_policy: "fixed" max_iter: 1 display: 0 random_seed: 3
net_param { %s }"""


def _one_step(rounding, lr, seed=0, fl=8):
    """One SGD step from the same weights and batch; `seed` draws the roundings."""
    fp = f"fixed_point_param {{ word_length: 16 fraction_length: {fl} rounding: {rounding} }}"
    net_text = NET % (fp, "", "")
    solver = get_solver(text_format.Parse(SOLVER % (lr, net_text), caffe_pb2.SolverParameter()))
    backend.set_random_seed(seed)
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.standard_normal((8, 5))
    solver.net.blobs["label"].data[...] = rng.integers(0, 3, 8)
    solver.net.forward()                         # trims the initial weights (nearest)
    before = [b.data.copy() for b in solver.net.learnable_params]
    solver.step(1)
    grads = [b.diff / lr for b in solver.net.learnable_params]   # the diff became lr * gradient
    after = [b.data.copy() for b in solver.net.learnable_params]
    return before, after, grads


def test_the_update_is_rounded_nearest_stalls_small_steps_stochastic_keeps_them_in_expectation():
    eps = 2.0 ** -8
    lr = 0.0105                                    # the largest update is 0.4 eps (|gradient| <= 0.15)
    before, after, grads = _one_step("NEAREST", lr)
    for b, a in zip(before, after):
        assert _on_grid(a, 8)
        np.testing.assert_array_equal(a, b)        # every update rounded away: training stalls
    steps = []
    for seed in range(200):
        before, after, grads = _one_step("STOCHASTIC", lr, seed)
        assert all(_on_grid(a, 8) for a in after)
        steps.append(np.concatenate([(b - a).ravel() for b, a in zip(before, after)]))
    want = np.concatenate([(lr * g).ravel() for g in grads])     # the same gradients each run
    steps = np.array(steps)
    assert steps.any()
    # E[step] = lr * gradient; each step is a Bernoulli multiple of eps: sd <= eps / 2 / sqrt(200)
    sigma = eps / 2 / np.sqrt(len(steps))
    assert np.abs(want).max() > 8 * sigma          # large enough to tell from a stall
    assert np.all(np.abs(steps.mean(axis=0) - want) <= 5 * sigma)


@pytest.mark.parametrize("word_length, fl", [(16, 14), (12, 4)])
def test_trimmed_forward_equals_rounding_by_hand(word_length, fl):
    net = _net(f"fixed_point_param {{ word_length: {word_length} fraction_length: {fl} rounding: NEAREST }}")
    raw = [b.data.copy() for b in net.params["ip1"]]
    net.forward()
    w, b = (quantize.trim_fixed_point(a, word_length, fl) for a in raw)
    x = net.blobs["data"].data
    np.testing.assert_array_equal(net.params["ip1"][0].data, w)
    np.testing.assert_array_equal(net.blobs["ip1"].data,
                                  np.maximum(quantize.trim_fixed_point(x @ w.T + b, word_length, fl), 0))
