"""Python layers and prototxt builders for solver tests: a loss whose gradient is known in closed form.

QuadraticLoss owns parameters W_k (shapes from param_str) and computes
    loss = sum_k sum(0.5 * a_k * W_k**2 + b_k * W_k),   dloss/dW_k = a_k * W_k + b_k
with a_k, b_k drawn once from `seed`, so update rules can be checked by hand.
param_str (JSON): shapes, seed, nan_at (forward count whose loss is NaN), sleep (seconds per forward).
"""
import json
import time

import numpy as np

import pycaffe_lite as caffe


def coefficients(shapes, seed):
    rng = np.random.default_rng(seed)
    a = [rng.uniform(0.5, 2.0, size=s) for s in shapes]
    b = [rng.normal(size=s) for s in shapes]
    w0 = [rng.normal(size=s) for s in shapes]
    return a, b, w0


class QuadraticLoss(caffe.Layer):
    def setup(self, bottom, top):
        cfg = json.loads(self.param_str or "{}")
        self.shapes = [tuple(s) for s in cfg.get("shapes", [[3, 4], [5]])]
        self.nan_at = cfg.get("nan_at")
        self.sleep = cfg.get("sleep", 0)
        self.forwards = 0
        dtype = top[0].dtype
        self.a, self.b, w0 = coefficients(self.shapes, cfg.get("seed", 0))
        self.a = [x.astype(dtype) for x in self.a]
        self.b = [x.astype(dtype) for x in self.b]
        if not self.blobs:
            for shape, w in zip(self.shapes, w0):
                blob = self.make_blob(shape, dtype)
                blob.data[...] = w
                self.blobs.append(blob)

    def reshape(self, bottom, top):
        top[0].reshape(())

    def forward(self, bottom, top):
        self.forwards += 1
        if self.sleep:
            time.sleep(self.sleep)
        loss = sum(float((0.5 * a * w.data ** 2 + b * w.data).sum()) for a, b, w in zip(self.a, self.b, self.blobs))
        if self.nan_at is not None and self.forwards >= self.nan_at:
            loss = float("nan")
        top[0].data[...] = loss

    def backward(self, top, propagate_down, bottom):
        scale = top[0].diff
        for a, b, w in zip(self.a, self.b, self.blobs):
            w.diff += (a * w.data + b) * scale


class Counter(caffe.Layer):
    """TEST-phase output: [n, 2n] at the n-th forward, so test averages are known."""
    def setup(self, bottom, top):
        self.n = 0

    def reshape(self, bottom, top):
        top[0].reshape((2,))

    def forward(self, bottom, top):
        self.n += 1
        top[0].data[...] = [self.n, 2 * self.n]

    def backward(self, top, propagate_down, bottom):
        pass


class SlowSetup(caffe.Layer):
    """Says so on stderr, then takes `param_str` seconds to set up: a net still being built."""
    def setup(self, bottom, top):
        import sys
        sys.stderr.write("SlowSetup: building\n")
        sys.stderr.flush()
        time.sleep(float(self.param_str or 30))

    def reshape(self, bottom, top):
        top[0].reshape((1,))

    def forward(self, bottom, top):
        top[0].data[...] = 0

    def backward(self, top, propagate_down, bottom):
        pass


def slow_setup_layer(seconds=30):
    return ('layer { name: "slow" type: "Python" top: "slow"\n'
            f'  python_param {{ module: "toy_layers" layer: "SlowSetup" param_str: "{seconds}" }} }}\n')


def quadratic_layer(name="quad", shapes=((3, 4), (5,)), seed=0, lr_mult=(1, 2), decay_mult=(1, 0),
                    extra=None, include=None):
    cfg = {"shapes": [list(s) for s in shapes], "seed": seed}
    cfg.update(extra or {})
    specs = "".join(f" param {{ lr_mult: {lr} decay_mult: {d} }}" for lr, d in zip(lr_mult, decay_mult))
    inc = f" include {{ phase: {include} }}" if include else ""
    return (f'layer {{ name: "{name}" type: "Python" top: "{name}_loss" loss_weight: 1{specs}{inc}\n'
            f"  python_param {{ module: \"toy_layers\" layer: \"QuadraticLoss\" param_str: '{json.dumps(cfg)}' }} }}\n")


def counter_layer():
    return ('layer { name: "counter" type: "Python" top: "score" include { phase: TEST }\n'
            '  python_param { module: "toy_layers" layer: "Counter" } }\n')


def write_solver(tmp_path, solver_text, net_text, name="solver.prototxt"):
    net_file = tmp_path / "net.prototxt"
    net_file.write_text('name: "toy"\n' + net_text)
    solver_file = tmp_path / name
    solver_file.write_text(f'net: "{net_file}"\n' + solver_text)
    return solver_file
