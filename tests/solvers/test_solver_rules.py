"""Each solver type's update rule against the textbook formula computed by hand, in float64,
on a loss whose gradient is known in closed form (toy_layers.QuadraticLoss): per-parameter
lr_mult / decay_mult, weight decay L2 and L1, the step lr policy, clip_gradients, iter_size."""
import math

import numpy as np
import pytest

from pycaffe_lite.solvers import get_solver
from toy_layers import coefficients, quadratic_layer, write_solver

SHAPES = ((3, 4), (5,))
LR_MULT, DECAY_MULT = (1.0, 2.0), (1.0, 0.0)

SETTINGS = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.95 delta: 1e-6",
    "AdaDelta": "momentum: 0.95 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8",
}


def make_solver(tmp_path, solver_type, extra=""):
    text = (f'type: "{solver_type}" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 '
            f"weight_decay: 0.01 max_iter: 10 display: 0 random_seed: 3 {SETTINGS[solver_type]} {extra}\n")
    solver_file = write_solver(tmp_path, text, quadratic_layer(shapes=SHAPES, lr_mult=LR_MULT,
                                                               decay_mult=DECAY_MULT))
    return get_solver(str(solver_file), allow_python=True, dtype=np.float64)


def by_hand(solver_type, param, steps, regularization="L2", clip=None):
    """Weights after each step and the final history, from the formulas (float64)."""
    a, b, w = coefficients(SHAPES, 0)
    w = [x.copy() for x in w]
    n = len(w)
    hist = [np.zeros_like(x) for x in w] * 1
    hist2 = [np.zeros_like(x) for x in w]
    m, m2, delta = param.momentum, param.momentum2, param.delta
    after = []
    for it in range(steps):
        rate = param.base_lr * param.gamma ** (it // param.stepsize)
        grads = [ai * wi + bi for ai, bi, wi in zip(a, b, w)]
        if clip is not None:
            norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
            if norm > clip:
                grads = [g * (clip / norm) for g in grads]
        for k in range(n):
            decay = param.weight_decay * DECAY_MULT[k]
            g = grads[k] + decay * (w[k] if regularization == "L2" else np.sign(w[k]))
            lr = rate * LR_MULT[k]
            if solver_type == "SGD":
                hist[k] = m * hist[k] + lr * g
                step = hist[k]
            elif solver_type == "Nesterov":
                old = hist[k]
                hist[k] = m * old + lr * g
                step = (1 + m) * hist[k] - m * old
            elif solver_type == "AdaGrad":
                hist[k] = hist[k] + g * g
                step = lr * g / (np.sqrt(hist[k]) + delta)
            elif solver_type == "RMSProp":
                d = param.rms_decay
                hist[k] = d * hist[k] + (1 - d) * g * g
                step = lr * g / (np.sqrt(hist[k]) + delta)
            elif solver_type == "AdaDelta":
                hist[k] = m * hist[k] + (1 - m) * g * g
                u = g * np.sqrt((hist2[k] + delta) / (hist[k] + delta))
                hist2[k] = m * hist2[k] + (1 - m) * u * u
                step = lr * u
            elif solver_type == "Adam":
                t = it + 1
                hist[k] = m * hist[k] + (1 - m) * g
                hist2[k] = m2 * hist2[k] + (1 - m2) * g * g
                step = lr * math.sqrt(1 - m2 ** t) / (1 - m ** t) * hist[k] / (np.sqrt(hist2[k]) + delta)
            w[k] = w[k] - step
        after.append([x.copy() for x in w])
    history = hist + (hist2 if solver_type in ("AdaDelta", "Adam") else [])
    return after, history


@pytest.mark.parametrize("solver_type", sorted(SETTINGS))
def test_update_rule_matches_formula(tmp_path, solver_type):
    solver = make_solver(tmp_path, solver_type)
    assert type(solver).__name__ == f"{solver_type}Solver"
    expected, history = by_hand(solver_type, solver.param, 5)
    params = solver.net.params["quad"]
    kept = [p.data for p in params]
    for step, weights in enumerate(expected, 1):
        solver.step(1)
        assert solver.iter == step
        for blob, want in zip(params, weights):
            np.testing.assert_allclose(blob.data, want, rtol=1e-10, atol=1e-12)
    assert all(p.data is k for p, k in zip(params, kept)), "parameters must be updated in place"
    assert len(solver.history) == len(history)
    for ours, want in zip(solver.history, history):
        np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-12)


def test_l1_regularization(tmp_path):
    solver = make_solver(tmp_path, "SGD", 'regularization_type: "L1"')
    expected, _ = by_hand("SGD", solver.param, 3, regularization="L1")
    solver.step(3)
    for blob, want in zip(solver.net.params["quad"], expected[-1]):
        np.testing.assert_allclose(blob.data, want, rtol=1e-10)


def test_clip_gradients_scales_the_global_norm(tmp_path, caplog):
    solver = make_solver(tmp_path, "SGD", "clip_gradients: 0.5 display: 1")
    expected, _ = by_hand("SGD", solver.param, 3, clip=0.5)
    with caplog.at_level("INFO", logger="pycaffe_lite"):
        solver.step(3)
    for blob, want in zip(solver.net.params["quad"], expected[-1]):
        np.testing.assert_allclose(blob.data, want, rtol=1e-10)
    assert "Gradient clipping: scaling down gradients (L2 norm" in caplog.text
    assert "> 0.5) by scale factor" in caplog.text


def test_iter_size_normalizes_the_accumulated_gradient(tmp_path):
    # The toy loss has no data, so iter_size forward/backward passes sum the same gradient
    # iter_size times; Normalize divides by iter_size: the same run as iter_size 1.
    once = make_solver(tmp_path, "Adam")
    once.step(4)
    (tmp_path / "b").mkdir()
    thrice = make_solver(tmp_path / "b", "Adam", "iter_size: 3")
    thrice.step(4)
    for p, q in zip(once.net.params["quad"], thrice.net.params["quad"]):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12)


def test_float32_matches_float64_closely(tmp_path):
    solver = make_solver(tmp_path, "Adam")
    solver32 = get_solver(str(tmp_path / "solver.prototxt"), allow_python=True)
    assert solver32.net.params["quad"][0].data.dtype == np.float32
    solver.step(5)
    solver32.step(5)
    for p, q in zip(solver.net.params["quad"], solver32.net.params["quad"]):
        np.testing.assert_allclose(q.data, p.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver_type,bad,message", [
    ("AdaGrad", "momentum: 0.9", "Momentum cannot be used with AdaGrad"),
    ("RMSProp", "momentum: 0.9", "Momentum cannot be used with RMSProp"),
    ("RMSProp", "rms_decay: 1.5", "rms_decay should lie between 0 and 1"),
    ("SGD", 'regularization_type: "L3"', "Unknown regularization type: 'L3'"),
    ("SGD", "average_loss: 0", "average_loss should be at least 1"),
])
def test_bad_settings_are_refused(tmp_path, solver_type, bad, message):
    with pytest.raises(ValueError, match=message):
        make_solver(tmp_path, solver_type, bad)


def test_legacy_solver_type_enum_selects_the_solver(tmp_path):
    solver_file = write_solver(tmp_path, "solver_type: ADAM base_lr: 0.01 lr_policy: \"fixed\"\n",
                               quadratic_layer())
    solver = get_solver(str(solver_file), allow_python=True)
    assert type(solver).__name__ == "AdamSolver" and solver.param.type == "Adam"


def test_unknown_solver_type_lists_the_known_ones(tmp_path):
    solver_file = write_solver(tmp_path, 'type: "LBFGS" base_lr: 0.01 lr_policy: "fixed"\n', quadratic_layer())
    with pytest.raises(ValueError, match=r"Unknown solver type: 'LBFGS' \(known types: AdaDelta, AdaGrad, Adam"):
        get_solver(str(solver_file), allow_python=True)
