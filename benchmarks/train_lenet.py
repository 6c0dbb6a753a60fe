#!/usr/bin/env python
"""LeNet training throughput: pycaffe_lite against PyTorch (CPU), same net, same run.

    python benchmarks/train_lenet.py [--batch 64] [--iters 30] [--repeats 5] [--threads N]

Both train Caffe's LeNet (conv 20 5x5, max pool 2/2, conv 50 5x5, max pool 2/2, ip 500, ReLU, ip 10,
softmax loss) with SGD (lr 0.01, momentum 0.9, weight decay 5e-4) on the same random 28x28 batch held
in memory, so the figure is the training step itself: forward, backward and update. PyTorch is
optional (`pip install torch==2.13.0` gives a CPU build); without it only pycaffe_lite is timed.
Prints the median time per step, images per second and the ratio. The two are timed in alternating
rounds, so a machine whose load drifts (a shared one) slows both alike.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas  # noqa: E402  (re-executes without the OpenBLAS pin, before NumPy loads)

_user_blas.user_blas()
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

LENET = """name: "LeNet"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 1 dim: 28 dim: 28 }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: {batch} }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 20 kernel_size: 5 stride: 1 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  convolution_param {{ num_output: 50 kernel_size: 5 stride: 1 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  inner_product_param {{ num_output: 500 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "{net}"
type: "SGD" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed"
display: 0 max_iter: 1000000 random_seed: 1 solver_mode: CPU snapshot_after_train: false
"""


def timed(steppers, iters, repeats):
    """Median seconds per step of each stepper: a warm-up, then `repeats` alternating rounds of `iters` steps."""
    for step in steppers:
        step(max(3, iters // 5))
    runs = [[] for _ in steppers]
    for _ in range(repeats):
        for step, times in zip(steppers, runs):
            start = time.perf_counter()
            step(iters)
            times.append((time.perf_counter() - start) / iters)
    return [statistics.median(times) for times in runs]


def pycaffe_lite_stepper(images, labels):
    import logging

    from pycaffe_lite.solvers import get_solver
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        net_file = os.path.join(tmp, "lenet.prototxt")
        with open(net_file, "w") as f:
            f.write(LENET.format(batch=len(images)))
        solver_file = os.path.join(tmp, "solver.prototxt")
        with open(solver_file, "w") as f:
            f.write(SOLVER.format(net=net_file))
        solver = get_solver(solver_file)
    solver.net.blobs["data"].data[...] = images
    solver.net.blobs["label"].data[...] = labels
    return solver.step, lambda: float(solver.net.blobs["loss"].data)


def torch_stepper(images, labels):
    import torch
    from torch import nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                          nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    # Caffe's bias lr_mult 2 (and no decay difference worth modelling for timing)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights}, {"params": biases, "lr": 0.02}],
                                lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    state = {}

    def step(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=False)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        state["loss"] = float(loss.detach())

    return step, lambda: state["loss"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=30, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(args.batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, size=args.batch).astype(np.float32)

    names, steppers = ["pycaffe_lite (NumPy)"], [pycaffe_lite_stepper(images, labels)]
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed (pip install torch==2.13.0 for a CPU build): timing pycaffe_lite only")
    if torch is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        names.append(f"PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads)")
        steppers.append(torch_stepper(images, labels))
    seconds = timed([step for step, _ in steppers], args.iters, args.repeats)
    rows = [(name, s, loss()) for name, s, (_, loss) in zip(names, seconds, steppers)]

    print(f"LeNet training step, batch {args.batch}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} x {args.iters} steps")
    print(_user_blas.blas_header())
    print(f"{'framework':<40} {'ms/step':>9} {'images/s':>10} {'loss':>8}")
    for name, seconds, loss in rows:
        print(f"{name:<40} {seconds * 1000:9.2f} {args.batch / seconds:10.0f} {loss:8.4f}")
    if len(rows) == 2:
        ratio = rows[0][1] / rows[1][1]
        print(f"pycaffe_lite / PyTorch time per step: {ratio:.2f}x "
              f"({'slower' if ratio > 1 else 'faster'}; images/s ratio {1 / ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
