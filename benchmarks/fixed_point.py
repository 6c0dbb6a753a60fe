#!/usr/bin/env python
"""Training in 16-bit fixed point (Gupta et al. 2015, arXiv:1502.02551) against float32:
LeNet on the embedded digits, the same solver for every run, test accuracy at the end.

    python benchmarks/fixed_point.py [--iters 500] [--fl 8 10 14] [--base_lr 0.1] [--seed 1]

Each fixed-point run puts the net's `fixed_point_param { word_length: 16 fraction_length: FL
rounding: R }` on models/lenet/lenet_train_test.prototxt: every layer with learnable parameters
keeps its weights (so the update), its outputs, its back-propagated errors and its gradients
in <16, FL>; the TEST net computes in the same format.  The solver is models/lenet's with
Gupta's plain SGD (momentum 0, lr_policy fixed) so that the rounded quantity is the update
lr * gradient itself.  Builds data/digits' LMDBs first if they are missing.  Prints a table:
format, rounding, test accuracy on the 297 test digits, final smoothed loss, seconds per
iteration.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas

_user_blas.user_blas()
import logging
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from pycaffe_lite.data import digits
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.proto.files import read_net_param, read_solver_param
from pycaffe_lite.solvers import get_solver

ROUNDING = caffe_pb2.QuantizationParameter.Rounding


def solver_param(args, fl, rounding, prefix):
    """models/lenet's solver and net, with Gupta's plain SGD and the net in <16, fl> (fl None: float)."""
    param = read_solver_param(os.path.join("models", "lenet", "lenet_solver.prototxt"))
    net = read_net_param(param.net)
    param.ClearField("net")
    if fl is not None:
        net.fixed_point_param.word_length = 16
        net.fixed_point_param.fraction_length = fl
        net.fixed_point_param.rounding = ROUNDING.Value(rounding)
    param.net_param.CopyFrom(net)
    param.base_lr, param.momentum, param.lr_policy = args.base_lr, 0.0, "fixed"
    param.max_iter, param.test_interval, param.display = args.iters, args.iters + 1, 0
    param.test_iter[:] = [3]                     # 3 x 99 = the 297 test digits
    param.random_seed, param.snapshot, param.snapshot_prefix = args.seed, 0, prefix
    return param


def run(args, fl, rounding, prefix):
    solver = get_solver(solver_param(args, fl, rounding, prefix))
    start = time.perf_counter()
    solver.step(args.iters)
    seconds = (time.perf_counter() - start) / args.iters
    solver.test(0)
    scores = {name: value for name, value, _ in solver.test_results[-1]}
    loss = float(solver.smoothed_loss)
    for net in [solver.net] + solver.test_nets:
        net.close()
    return scores["accuracy"], loss, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--iters", type=int, default=500, help="training iterations per run (batch 64)")
    parser.add_argument("--fl", type=int, nargs="*", default=[8, 10, 14], help="fraction lengths to try")
    parser.add_argument("--base_lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.chdir(ROOT)                                   # the prototxts' paths are from the repository root
    logging.basicConfig(level=logging.WARNING)
    digits.build(os.path.join("data", "digits"))
    print(_user_blas.blas_header())
    print(f"LeNet on digits (1500 train, 297 test), SGD lr {args.base_lr} momentum 0, weight decay 5e-4, "
          f"batch 64, {args.iters} iterations, seed {args.seed}")
    print(f"{'format':<16} {'rounding':<11} {'test accuracy':>13} {'loss':>8} {'s/iter':>7}")
    runs = [(None, "-")] + [(fl, r) for fl in args.fl for r in ("NEAREST", "STOCHASTIC")]
    with tempfile.TemporaryDirectory() as tmp:
        for fl, rounding in runs:
            accuracy, loss, seconds = run(args, fl, rounding, os.path.join(tmp, "lenet"))
            name = "float32" if fl is None else f"<16, {fl}>"
            print(f"{name:<16} {rounding:<11} {accuracy * 100:12.1f}% {loss:8.4f} {seconds:7.3f}", flush=True)


if __name__ == "__main__":
    main()
