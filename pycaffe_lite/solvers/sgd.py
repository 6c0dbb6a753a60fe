"""Momentum SGD and Nesterov's accelerated gradient (Caffe's SGDSolver, NesterovSolver).

With g the regularized gradient, lr the local rate (rate * lr_mult), m = momentum
and h the history:

    SGD       h = m * h + lr * g;                step = h
    Nesterov  h' = m * h + lr * g;               step = (1 + m) * h' - m * h
"""
from ..backend import get_array_module
from ..kernels import updates
from .solver import Solver, register_solver


@register_solver("SGD")
class SGDSolver(Solver):
    def update_param(self, i, rate):
        blob, history = self.params[i], self.history[i]
        if not updates.available(blob.data, blob.diff, history):
            return super().update_param(i, rate)
        dt = blob.dtype.type
        p = self.param
        updates.sgd_step(blob.data, blob.diff, history, scale=dt(1) / dt(p.iter_size),
                       decay=dt(p.weight_decay) * dt(self.net.params_weight_decay[i]),
                       l1=p.regularization_type == "L1", lr=self.local_rate(i, rate), momentum=dt(p.momentum))

    def compute_update_value(self, i, rate):
        blob, history, temp = self.params[i], self.history[i], self.temp[i]
        dt = blob.dtype.type
        xp = get_array_module(history)
        # caffe_cpu_axpby(local_rate, diff, momentum, history): history = momentum*history + lr*diff
        history *= dt(self.param.momentum)
        history += xp.multiply(blob.diff, self.local_rate(i, rate), out=temp)
        blob.diff[...] = history


@register_solver("Nesterov")
class NesterovSolver(Solver):
    def compute_update_value(self, i, rate):
        blob, history, update, temp = self.params[i], self.history[i], self.update[i], self.temp[i]
        dt = blob.dtype.type
        xp = get_array_module(history)
        momentum = dt(self.param.momentum)
        update[...] = history                       # the history before this step
        history *= momentum
        history += xp.multiply(blob.diff, self.local_rate(i, rate), out=temp)
        # caffe_cpu_axpby(1 + momentum, history, -momentum, update): step back, then over-step
        update *= -momentum
        update += xp.multiply(history, dt(1) + momentum, out=temp)
        blob.diff[...] = update
