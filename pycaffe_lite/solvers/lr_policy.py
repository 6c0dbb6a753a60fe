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
"""
import logging
import math

log = logging.getLogger("pycaffe_lite")

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
    if policy == "multistep" and list(param.stepvalue) != sorted(param.stepvalue):
        raise ValueError(f"lr_policy 'multistep' needs increasing stepvalue entries, got {list(param.stepvalue)}")


def learning_rate(param, iteration, current_step=0):
    """(rate, current_step) for `iteration` under the solver's lr_policy.

    multistep advances at most one step per call, as Caffe does (it is
    called once per iteration, so schedules behave the same).
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
        rate = base * math.pow(1.0 + param.gamma * iteration, -param.power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", iteration, current_step)
        rate = base * math.pow(param.gamma, current_step)
    elif policy == "poly":
        # Past max_iter (only reachable by stepping beyond it) the rate stays 0.
        rate = base * math.pow(max(0.0, 1.0 - iteration / param.max_iter), param.power)
    elif policy == "sigmoid":
        exponent = -param.gamma * (iteration - param.stepsize)
        rate = 0.0 if exponent > 700 else base * (1.0 / (1.0 + math.exp(exponent)))
    else:
        check_policy(param)  # raises with the list of known policies
        raise AssertionError("unreachable")
    return rate, current_step
