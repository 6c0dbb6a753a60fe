"""Solvers with per-coordinate step sizes (Caffe's AdaGrad, RMSProp, AdaDelta, Adam).

g is the regularized gradient, lr = rate * lr_mult, d = delta; squares, roots
and divisions are elementwise:

    AdaGrad   h += g^2;                                   step = lr * g / (sqrt(h) + d)
    RMSProp   h = r * h + (1 - r) * g^2  (r = rms_decay); step = lr * g / (sqrt(h) + d)
    AdaDelta  h = m * h + (1 - m) * g^2;
              u = g * sqrt((hu + d) / (h + d));  hu = m * hu + (1 - m) * u^2;   step = lr * u
    Adam      mt = b1 * mt + (1 - b1) * g;  vt = b2 * vt + (1 - b2) * g^2;   (b1 = momentum, b2 = momentum2)
              step = lr * sqrt(1 - b2^t) / (1 - b1^t) * mt / (sqrt(vt) + d),  t = iter + 1

AdaDelta and Adam keep two history buffers per parameter: the first
len(params) entries of `history` are h (AdaDelta) / mt (Adam), the next
len(params) are hu / vt, the order Caffe's .solverstate uses.
"""
import math

from ..backend import get_array_module
from .solver import Solver, register_solver


@register_solver("AdaGrad")
class AdaGradSolver(Solver):
    def check_settings(self):
        if self.param.momentum != 0:
            raise ValueError(f"Momentum cannot be used with AdaGrad (momentum is {self.param.momentum}; "
                             "remove it or set it to 0)")

    def compute_update_value(self, i, rate):
        blob, history, update = self.params[i], self.history[i], self.update[i]
        dt = blob.dtype.type
        xp = get_array_module(history)
        diff = blob.diff
        xp.multiply(diff, diff, out=update)
        history += update
        xp.sqrt(history, out=update)
        update += dt(self.param.delta)
        xp.divide(diff, update, out=update)
        xp.multiply(update, self.local_rate(i, rate), out=diff)


@register_solver("RMSProp")
class RMSPropSolver(Solver):
    def check_settings(self):
        if self.param.momentum != 0:
            raise ValueError(f"Momentum cannot be used with RMSProp (momentum is {self.param.momentum}; "
                             "remove it or set it to 0)")
        if not 0 <= self.param.rms_decay <= 1:
            raise ValueError(f"rms_decay should lie between 0 and 1, got {self.param.rms_decay}")

    def compute_update_value(self, i, rate):
        blob, history, update = self.params[i], self.history[i], self.update[i]
        dt = blob.dtype.type
        xp = get_array_module(history)
        diff = blob.diff
        decay = dt(self.param.rms_decay)
        xp.multiply(diff, diff, out=update)
        # caffe_cpu_axpby(1 - rms_decay, update, rms_decay, history)
        history *= decay
        update *= dt(1) - decay
        history += update
        xp.sqrt(history, out=update)
        update += dt(self.param.delta)
        xp.divide(diff, update, out=update)
        xp.multiply(update, self.local_rate(i, rate), out=diff)


@register_solver("AdaDelta")
class AdaDeltaSolver(Solver):
    def history_slots(self):
        return 2

    def compute_update_value(self, i, rate):
        blob, update, temp = self.params[i], self.update[i], self.temp[i]
        n = len(self.params)
        grad_history, update_history = self.history[i], self.history[n + i]
        dt = blob.dtype.type
        xp = get_array_module(grad_history)
        diff = blob.diff
        momentum, delta = dt(self.param.momentum), dt(self.param.delta)
        xp.multiply(diff, diff, out=update)
        grad_history *= momentum
        update *= dt(1) - momentum
        grad_history += update
        xp.add(update_history, delta, out=update)
        xp.add(grad_history, delta, out=temp)
        xp.divide(update, temp, out=update)
        xp.sqrt(update, out=update)
        diff *= update
        xp.multiply(diff, diff, out=update)
        update_history *= momentum
        update *= dt(1) - momentum
        update_history += update
        diff *= self.local_rate(i, rate)


@register_solver("Adam")
class AdamSolver(Solver):
    def history_slots(self):
        return 2

    def compute_update_value(self, i, rate):
        blob, temp = self.params[i], self.temp[i]
        n = len(self.params)
        m, v = self.history[i], self.history[n + i]
        dt = blob.dtype.type
        xp = get_array_module(m)
        diff = blob.diff
        beta1, beta2 = dt(self.param.momentum), dt(self.param.momentum2)
        t = self.iter + 1
        # Caffe: pow(Dtype, int) is computed in double, then the ratio stored as Dtype.
        correction = dt(math.sqrt(1.0 - math.pow(float(beta2), t)) / (1.0 - math.pow(float(beta1), t)))
        m *= beta1
        m += xp.multiply(diff, dt(1) - beta1, out=temp)
        xp.multiply(diff, diff, out=temp)
        v *= beta2
        temp *= dt(1) - beta2
        v += temp
        xp.sqrt(v, out=temp)
        temp += dt(self.param.delta)
        xp.divide(m, temp, out=temp)
        xp.multiply(temp, self.local_rate(i, rate) * correction, out=diff)
