"""Each learning-rate policy against its formula (Caffe's GetLearningRate) at several iterations."""
import math

import pytest
from google.protobuf import text_format

from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import learning_rate
from pycaffe_lite.solvers.lr_policy import check_policy

ITERS = (0, 1, 7, 99, 100, 101, 250, 999)


def solver_param(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


@pytest.mark.parametrize("text,formula", [
    ('lr_policy: "fixed" base_lr: 0.01', lambda p, it: p.base_lr),
    ('lr_policy: "step" base_lr: 0.01 gamma: 0.1 stepsize: 100',
     lambda p, it: p.base_lr * p.gamma ** (it // 100)),
    ('lr_policy: "exp" base_lr: 0.01 gamma: 0.99', lambda p, it: p.base_lr * p.gamma ** it),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75',
     lambda p, it: p.base_lr * (1 + p.gamma * it) ** -p.power),
    ('lr_policy: "poly" base_lr: 0.01 power: 2 max_iter: 1000',
     lambda p, it: p.base_lr * (1 - it / 1000) ** 2),
    ('lr_policy: "sigmoid" base_lr: 0.01 gamma: -0.05 stepsize: 100',
     lambda p, it: p.base_lr / (1 + math.exp(-p.gamma * (it - 100)))),
])
def test_policy_formula(text, formula):
    param = solver_param(text)
    for it in ITERS:
        rate, _ = learning_rate(param, it, 0)
        assert rate == pytest.approx(formula(param, it), rel=1e-12), (text, it)


def test_step_records_current_step():
    param = solver_param('lr_policy: "step" base_lr: 1 gamma: 0.5 stepsize: 20')
    assert learning_rate(param, 45, 0) == (0.25, 2)


def test_multistep_advances_through_stepvalues():
    param = solver_param('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 3 stepvalue: 5')
    step, rates = 0, []
    for it in range(8):
        rate, step = learning_rate(param, it, step)
        rates.append(rate)
    assert rates == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01])
    assert step == 2
    # a resumed run starts from the saved current_step
    assert learning_rate(param, 6, 2) == (pytest.approx(0.01), 2)


def test_specific_values():
    # Caffe's LeNet: inv, base_lr 0.01, gamma 1e-4, power 0.75 -> 0.00594604 at 10000 iterations (logged).
    param = solver_param('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75')
    assert learning_rate(param, 10000, 0)[0] == pytest.approx(0.00594604, rel=1e-5)
    param = solver_param('lr_policy: "poly" base_lr: 0.1 power: 1 max_iter: 100')
    assert learning_rate(param, 100, 0)[0] == 0.0


@pytest.mark.parametrize("text,message", [
    ('lr_policy: "cosine" base_lr: 1', "Unknown learning rate policy: 'cosine'"),
    ("base_lr: 1", "solver has no lr_policy"),
    ('lr_policy: "step" base_lr: 1 gamma: 0.1', "needs stepsize > 0"),
    ('lr_policy: "exp" base_lr: 1 gamma: -1', "needs gamma >= 0"),
    ('lr_policy: "poly" base_lr: 1 power: 1', "needs max_iter > 0"),
])
def test_bad_policy_settings(text, message):
    with pytest.raises(ValueError, match=message):
        check_policy(solver_param(text))
