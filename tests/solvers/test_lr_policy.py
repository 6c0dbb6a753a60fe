"""Each learning-rate policy against its formula (Caffe's GetLearningRate) at several iterations."""
import ctypes
import ctypes.util
import math

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import learning_rate
from pycaffe_lite.solvers.lr_policy import check_policy

ITERS = (0, 1, 7, 99, 100, 101, 250, 999)


def solver_param(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


# step, exp and multistep are computed in double as Caffe's pow(float, int) is; inv, poly and sigmoid in
# float32, as Caffe's float expressions are (checked bit for bit below), hence their looser tolerance.
@pytest.mark.parametrize("text,formula,rel", [
    ('lr_policy: "fixed" base_lr: 0.01', lambda p, it: p.base_lr, 1e-12),
    ('lr_policy: "step" base_lr: 0.01 gamma: 0.1 stepsize: 100',
     lambda p, it: p.base_lr * p.gamma ** (it // 100), 1e-12),
    ('lr_policy: "exp" base_lr: 0.01 gamma: 0.99', lambda p, it: p.base_lr * p.gamma ** it, 1e-12),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75',
     lambda p, it: p.base_lr * (1 + p.gamma * it) ** -p.power, 1e-6),
    ('lr_policy: "poly" base_lr: 0.01 power: 2 max_iter: 1000',
     lambda p, it: p.base_lr * (1 - it / 1000) ** 2, 1e-6),
    ('lr_policy: "sigmoid" base_lr: 0.01 gamma: -0.05 stepsize: 100',
     lambda p, it: p.base_lr / (1 + math.exp(-p.gamma * (it - 100))), 1e-5),
])
def test_policy_formula(text, formula, rel):
    param = solver_param(text)
    for it in ITERS:
        rate, _ = learning_rate(param, it, 0)
        assert rate == pytest.approx(formula(param, it), rel=rel), (text, it)


def test_inv_rate_is_caffes_float32_arithmetic():
    # LeNet's solver.  Caffe computes Dtype(1) + gamma() * iter_ in float, so these differ by an ulp
    # from the same formula evaluated in double (0.0099985, 0.009997751, 0.009996251, 0.0059460355).
    param = solver_param('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75')
    for it, caffe in ((2, "0.009998499"), (3, "0.00999775"), (5, "0.009996252"), (10000, "0.005946035")):
        assert learning_rate(param, it, 0)[0] == float(np.float32(caffe)), it


def _c_library():
    try:
        try:
            libm = ctypes.CDLL("libm.so.6")
        except OSError:
            libm = ctypes.CDLL(ctypes.util.find_library("m"))
        powf, expf = libm.powf, libm.expf
    except (OSError, TypeError, AttributeError):
        pytest.skip("the C library's powf/expf cannot be loaded with ctypes here")
    powf.restype, powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return powf, expf


def test_float_policies_bit_identical_to_caffe():
    """Caffe's GetLearningRate with Dtype = float, written out as the C++ evaluates it: float
    arithmetic, and pow / exp of floats resolving to the C library's powf / expf."""
    powf, expf = _c_library()
    f = np.float32

    def caffe_inv(p, it):
        return f(p.base_lr) * f(powf(f(1) + f(p.gamma) * f(it), -f(p.power)))

    def caffe_poly(p, it):
        return f(p.base_lr) * f(powf(f(1) - f(it) / f(p.max_iter), f(p.power)))

    def caffe_sigmoid(p, it):
        return f(p.base_lr) * (f(1) / (f(1) + f(expf(-f(p.gamma) * (f(it) - f(p.stepsize))))))

    cases = [('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75', caffe_inv),   # LeNet
             ('lr_policy: "poly" base_lr: 0.01 power: 0.9 max_iter: 10000', caffe_poly),
             ('lr_policy: "sigmoid" base_lr: 0.01 gamma: 0.001 stepsize: 5000', caffe_sigmoid),
             ('lr_policy: "sigmoid" base_lr: 0.01 gamma: -0.05 stepsize: 100', caffe_sigmoid)]
    for text, caffe in cases:
        param = solver_param(text)
        differ = [it for it in range(10001) if learning_rate(param, it, 0)[0] != float(caffe(param, it))]
        assert not differ, (text, len(differ), differ[:5])


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


def test_multistep_accepts_unsorted_stepvalues_as_caffe_does():
    # Caffe moves current_step on when iter >= stepvalue(current_step), one step per iteration,
    # whatever the order: 5 is reached at 5, then 3 (already passed) at 6, then 8 at 8.
    param = solver_param('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 5 stepvalue: 3 stepvalue: 8')
    check_policy(param)
    step, rates, steps = 0, [], []
    for it in range(10):
        rate, step = learning_rate(param, it, step)
        rates.append(rate)
        steps.append(step)
    assert steps == [0, 0, 0, 0, 0, 1, 2, 2, 3, 3]
    assert rates == pytest.approx([1, 1, 1, 1, 1, 0.1, 0.01, 0.01, 0.001, 0.001])


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
