"""Learning-rate policies, as Caffe's SGDSolver::GetLearningRate computes them.

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ k, k = number of stepvalue entries passed
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

`learning_rate` is a pure function: it returns the rate and the new
`current_step` (the position in a step/multistep schedule that a
.solverstate records) instead of mutating a solver.

Precision follows Caffe's C++ (Dtype = float): `step`, `exp` and `multistep`
call pow(float, int), which promotes to double; `inv`, `poly` and `sigmoid`
are float expressions throughout (`Dtype(1) + gamma() * iter_` is float
arithmetic, and the pow / exp of floats are powf / expf, because Caffe's
mkl_alternate.hpp includes <math.h>, which brings std::pow(float, float) and
std::exp(float) into the global namespace).  Those three are computed here
with numpy.float32 scalars and the C library's powf / expf, so the rate is
bit-identical to Caffe's.
"""
import ctypes
import ctypes.util
import functools
import logging
import math

import numpy as np

log = logging.getLogger("pycaffe_lite")
f32 = np.float32

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param):
    """Raise ValueError, naming the field, for settings the policy cannot use."""
    policy = param.lr_policy
    if policy not in POLICIES:
        known = ", ".join(POLICIES)
        if not policy:
            raise ValueError(f"solver has no lr_policy; set one of: {known}")
        raise ValueError(f"Unknown learning rate policy: '{policy}' (known policies: {known})")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise ValueError(f"lr_policy '{policy}' needs gamma >= 0, got {param.gamma}")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise ValueError(f"lr_policy '{policy}' needs stepsize > 0, got {param.stepsize}")
    if policy == "poly" and param.max_iter <= 0:
        raise ValueError(f"lr_policy 'poly' needs max_iter > 0, got {param.max_iter}")


def learning_rate(param, iteration, current_step=0):
    """(rate, current_step) for `iteration` under the solver's lr_policy.

    multistep advances at most one step per call, as Caffe does (it is
    called once per iteration, so schedules behave the same).  Like Caffe, it
    accepts stepvalue entries in any order: current_step moves on when the
    iteration reaches the entry it points at, so after an entry smaller than
    the one before it the next call moves on again.
    """
    policy, base = param.lr_policy, param.base_lr
    if policy == "fixed":
        rate = base
    elif policy == "step":
        if param.stepsize <= 0:
            raise ValueError(f"lr_policy 'step' needs stepsize > 0, got {param.stepsize}")
        current_step = iteration // param.stepsize
        rate = base * math.pow(param.gamma, current_step)
    elif policy == "exp":
        rate = base * math.pow(param.gamma, iteration)
    elif policy == "inv":
        rate = f32(base) * _powf(f32(1) + f32(param.gamma) * f32(iteration), -f32(param.power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", iteration, current_step)
        rate = base * math.pow(param.gamma, current_step)
    elif policy == "poly":
        # Past max_iter (only reachable by stepping beyond it) the rate stays 0 (Caffe's would be NaN).
        remaining = max(f32(0), f32(1) - f32(iteration) / f32(param.max_iter))
        rate = f32(base) * _powf(remaining, f32(param.power))
    elif policy == "sigmoid":
        exponent = -f32(param.gamma) * (f32(iteration) - f32(param.stepsize))
        rate = f32(base) * (f32(1) / (f32(1) + _expf(exponent)))
    else:
        check_policy(param)  # raises with the list of known policies
        raise AssertionError("unreachable")
    return float(rate), current_step


# ---------------------------------------------------------------------------
# float32 pow and exp as Caffe calls them
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _c_math():
    """The C library's (powf, expf), or None where it cannot be loaded.

    NumPy's float32 power is not the C library's powf (it differs by an ulp
    on a fifth of LeNet's first 10000 iterations), and glibc's powf is not always
    correctly rounded, so only calling it gives Caffe's rate bit for bit.
    """
    try:
        try:
            libm = ctypes.CDLL("libm.so.6")                     # glibc
        except OSError:
            libm = ctypes.CDLL(ctypes.util.find_library("m"))   # other systems
        powf, expf = libm.powf, libm.expf
    except (OSError, TypeError, AttributeError):
        return None
    powf.restype, powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return powf, expf


def _powf(x, y):
    functions = _c_math()
    if functions:
        return f32(functions[0](x, y))
    return f32(math.pow(float(x), float(y)))   # correctly rounded; powf agrees but for near-ties


def _expf(x):
    functions = _c_math()
    if functions:
        return f32(functions[1](x))
    with np.errstate(over="ignore"):   # past float32's range expf gives inf, and so does the cast
        return f32(math.exp(min(float(x), 89.0)))
