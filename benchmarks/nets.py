"""Whole nets: pycaffe_lite against PyTorch CPU on the same architecture, in the same run.

    python benchmarks/nets.py                   # all four, default engines
    python benchmarks/nets.py --quick           # LeNet and CaffeNet, fewer iterations
    python benchmarks/nets.py --engine AUTO     # every convolution with engine: AUTO (CAFFE: im2col)
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/nets.py --threads 1 --cpu-time
                                                # one core each, steady on a busy machine

    LeNet      training step (SGD, momentum 0.9), batch 64, 1x28x28
    CaffeNet   training step, batch 16, 3x227x227
    GoogLeNet  inference (forward), batch 8, 3x224x224
    ResNet-50  inference (forward), batch 8, 3x224x224

The nets come from models/ (LeNet from lenet_train_test's layers).  PyTorch runs
a module built from the same NetParameter layer by layer (Convolution,
Pooling with Caffe's rounding, LRN, InnerProduct, ReLU, Dropout, Concat,
Eltwise, BatchNorm, Scale, Softmax, SoftmaxWithLoss) with the very weights
pycaffe_lite drew, and the two outputs are compared as a check that the
architectures match.  Times are medians of --repeats runs of --iters steps.
PyTorch is optional (`pip install torch==2.13.0` gives a CPU build).
"""
import os
import sys

# OpenBLAS's workers should sleep as soon as a GEMM is done (read when NumPy
# loads).  PyTorch runs in a worker process with the environment as it was, so
# that its OpenMP runtime keeps PyTorch's defaults and does not share a libgomp
# with Numba's.
_ORIGINAL_ENV = dict(os.environ)
if "--torch-worker" in sys.argv:
    try:
        import torch  # noqa: F401  (first: its OpenMP runtime starts with the environment as it was)
    except Exception:
        pass
else:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import json
import logging
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas  # noqa: E402  (re-executes without the OpenBLAS pin, before NumPy loads)

_user_blas.user_blas()
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.conv.choice import ENGINE_FOR  # noqa: E402
from pycaffe_lite.proto import caffe_pb2  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

LENET_DEPLOY = """name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""

# name: (source, batch, train?, image shape, classes)
NETS = {
    "LeNet": (LENET_DEPLOY, 64, True, (1, 28, 28), 10),
    "CaffeNet": ("models/bvlc_reference_caffenet/deploy.prototxt", 16, True, (3, 227, 227), 1000),
    "GoogLeNet": ("models/bvlc_googlenet/deploy.prototxt", 8, False, (3, 224, 224), 1000),
    "ResNet-50": ("models/resnet50/deploy.prototxt", 8, False, (3, 224, 224), 1000),
}
_CLOCK = [time.perf_counter]      # time.process_time with --cpu-time
# --engine NAME: the prototxt engine names (CUDNN, DEFAULT on the CPU, left out)
ENGINE_VALUES = {name: caffe_pb2.ConvolutionParameter.Engine.Value(name) for name in ENGINE_FOR if name != "CUDNN"}


def load_param(name, engine):
    """The deploy NetParameter with the benchmark's batch, a loss when training, and the engine."""
    from google.protobuf import text_format
    from pycaffe_lite.proto.files import read_net_param
    source, batch, train, image, classes = NETS[name]
    if source.endswith(".prototxt"):
        param = read_net_param(os.path.join(ROOT, source))
    else:
        param = text_format.Parse(source, caffe_pb2.NetParameter())
    data = param.layer[0]
    assert data.type == "Input", f"{name}: expected an Input layer first"
    del data.input_param.shape[:]
    data.input_param.shape.add().dim.extend((batch,) + image)
    if train:
        last = param.layer[-1]
        if last.type == "Softmax":
            last.type = "SoftmaxWithLoss"
            last.top[0] = "loss"
            last.bottom.append("label")
        label = caffe_pb2.LayerParameter(name="label", type="Input", top=["label"])
        label.input_param.shape.add().dim.append(batch)
        param.layer.insert(1, label)
    from pycaffe_lite.conv.geometry import ConvGeometry  # noqa: F401  (engines check geometry)
    value = ENGINE_VALUES[engine]
    for layer in param.layer:
        if layer.type == "Convolution" and value:
            if value in (ENGINE_VALUES["CAFFE"], ENGINE_VALUES["AUTO"]) or _engine_fits(layer.convolution_param, value):
                layer.convolution_param.engine = value
    return param, batch, train, image, classes


def _engine_fits(p, value):
    kernel = list(p.kernel_size) or [p.kernel_h, p.kernel_w]
    stride = list(p.stride) or [1]
    if value == ENGINE_VALUES["FFT"]:
        return all(s == 1 for s in stride)
    return all(k == 3 for k in kernel) and all(s == 1 for s in stride) and not list(p.dilation)


# ---------------------------------------------------------------------------
# PyTorch: the same NetParameter, layer by layer
# ---------------------------------------------------------------------------
def torch_module(param, params, train):
    """A torch.nn.Module running the NetParameter's layers with `params` {layer: [arrays]}."""
    import torch
    import torch.nn.functional as F

    class CaffeNetInTorch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = []
            self.weights = torch.nn.ParameterDict()
            for layer in param.layer:
                if layer.type == "Input":
                    continue
                for i, array in enumerate(params.get(layer.name, [])):
                    self.weights[f"{len(self.layers)}_{i}"] = torch.nn.Parameter(
                        torch.from_numpy(np.array(array, dtype=np.float32)),
                        requires_grad=train and layer.type not in ("BatchNorm",))
                self.layers.append(layer)

        def blob(self, index, i):
            return self.weights[f"{index}_{i}"]

        def forward(self, inputs, want=None):
            blobs = dict(inputs)
            for index, layer in enumerate(self.layers):
                x = [blobs[b] for b in layer.bottom]
                t, p = layer.type, None
                if t == "Convolution":
                    p = layer.convolution_param
                    k = list(p.kernel_size) or [p.kernel_h, p.kernel_w]
                    s = list(p.stride) or [p.stride_h or 1, p.stride_w or 1]
                    pad = list(p.pad) or [p.pad_h, p.pad_w]
                    y = F.conv2d(x[0], self.blob(index, 0), self.blob(index, 1) if p.bias_term else None,
                                 stride=tuple(s * (3 - len(s)))[:2], padding=tuple(pad * (3 - len(pad)))[:2],
                                 dilation=tuple((list(p.dilation) or [1]) * 2)[:2], groups=p.group)
                elif t == "Pooling":
                    p = layer.pooling_param
                    if p.global_pooling:
                        k, s, pad = x[0].shape[2:], 1, 0
                    else:
                        k, s, pad = p.kernel_size or (p.kernel_h, p.kernel_w), p.stride or 1, p.pad
                    if p.pool == caffe_pb2.PoolingParameter.MAX:
                        y = F.max_pool2d(x[0], k, s, pad, ceil_mode=True)
                    else:
                        y = F.avg_pool2d(x[0], k, s, pad, ceil_mode=True)
                elif t == "ReLU":
                    y = F.relu(x[0])
                elif t == "LRN":
                    p = layer.lrn_param
                    y = F.local_response_norm(x[0], p.local_size, p.alpha, p.beta, p.k)
                elif t == "InnerProduct":
                    y = F.linear(x[0].flatten(1), self.blob(index, 0),
                                 self.blob(index, 1) if layer.inner_product_param.bias_term else None)
                elif t == "Dropout":
                    y = F.dropout(x[0], layer.dropout_param.dropout_ratio, training=train)
                elif t == "Concat":
                    y = torch.cat(x, dim=layer.concat_param.axis)
                elif t == "Eltwise":
                    y = x[0]
                    for other in x[1:]:
                        y = y + other
                elif t == "BatchNorm":
                    factor = float(self.blob(index, 2)[0]) or 1.0
                    y = F.batch_norm(x[0], self.blob(index, 0).detach() / factor,
                                     self.blob(index, 1).detach() / factor, eps=layer.batch_norm_param.eps)
                elif t == "Scale":
                    y = x[0] * self.blob(index, 0)[None, :, None, None]
                    if layer.scale_param.bias_term:
                        y = y + self.blob(index, 1)[None, :, None, None]
                elif t == "Softmax":
                    y = F.softmax(x[0], dim=1)
                elif t == "SoftmaxWithLoss":
                    y = F.cross_entropy(x[0], x[1].long())
                else:
                    raise NotImplementedError(f"layer type {t} in the PyTorch twin")
                blobs[layer.top[0]] = y
            return blobs[want or self.layers[-1].top[0]]

    return CaffeNetInTorch()


def randomize(net, seed=0):
    """He-normal weights, small biases, unit BatchNorm statistics: deploy files carry no fillers."""
    rng = np.random.default_rng(seed)
    for layer, name in zip(net.layers, net.layer_names):
        blobs = net.params.get(name, [])
        if layer.type == "BatchNorm":
            blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0.0, 1.0, 1.0
        elif layer.type == "Scale":
            blobs[0].data[...] = 1.0
            if len(blobs) > 1:
                blobs[1].data[...] = 0.0
        elif blobs:
            w = blobs[0].data
            fan_in = w[0].size
            w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)
            for b in blobs[1:]:
                b.data[...] = 0.01


# ---------------------------------------------------------------------------
class TorchWorker:
    """The PyTorch twin in a child process (default environment), one timed run per request."""

    def __init__(self, threads, cpu_time=False):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(_ORIGINAL_ENV),
                                     text=True)
        self.info = self.ask(cmd="info", threads=threads, cpu_time=cpu_time)

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self):
        try:
            self.ask(cmd="quit")
        except Exception:
            pass
        self.proc.wait(timeout=30)


def torch_worker_main():
    try:
        import torch
    except Exception as exc:
        for _ in sys.stdin:
            print(json.dumps({"error": f"{exc.__class__.__name__}: {exc}"}), flush=True)
        return
    from google.protobuf import text_format
    state = {}
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        reply = {}
        if cmd == "quit":
            print(json.dumps(reply), flush=True)
            return
        if cmd == "info":
            torch.set_num_threads(req.get("threads") or os.cpu_count() or 1)
            if req.get("cpu_time"):
                _CLOCK[0] = time.process_time
            reply = {"version": torch.__version__, "threads": torch.get_num_threads()}
        elif cmd == "setup":
            param = text_format.Parse(req["param"], caffe_pb2.NetParameter())
            data = np.load(req["npz"], allow_pickle=False)
            params = {}
            for key in data.files:
                if key.startswith("param/"):
                    layer, i = key[6:].rsplit("/", 1)
                    params.setdefault(layer, {})[int(i)] = data[key]
            params = {k: [v[i] for i in sorted(v)] for k, v in params.items()}
            train = req["train"]
            model = torch_module(param, params, train)
            inputs = {"data": torch.from_numpy(data["data"])}
            if train:
                inputs["label"] = torch.from_numpy(data["label"])
            with torch.no_grad():
                check = model.eval()(inputs, req["want"]).numpy()
            reply = {"check": np.asarray(check, dtype=np.float64).ravel().tolist()}
            if train:
                model.train()
                optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)

                def step():
                    optimizer.zero_grad(set_to_none=False)
                    model(inputs).backward()
                    optimizer.step()
            else:
                def step():
                    with torch.no_grad():
                        model(inputs)
            step()                                        # warm-up
            state = {"step": step}
        elif cmd == "run":
            start = _CLOCK[0]()
            for _ in range(req["iters"]):
                state["step"]()
            reply = {"seconds": (_CLOCK[0]() - start) / req["iters"]}
        print(json.dumps(reply), flush=True)


def run(name, engine, iters, repeats, worker):
    from google.protobuf import text_format
    from pycaffe_lite.net import Net
    param, batch, train, image, classes = load_param(name, engine)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch,) + image).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.float32)
    last = param.layer[-1]
    if train:
        from pycaffe_lite.solvers import get_solver
        solver_param = caffe_pb2.SolverParameter(
            type="SGD", base_lr=0.001, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
            display=0, max_iter=10 ** 9, random_seed=1, snapshot_after_train=False)
        solver_param.net_param.CopyFrom(param)
        solver = get_solver(solver_param)
        net = solver.net
        step = solver.step
        want = "loss"
    else:
        net = Net(param, caffe_pb2.TEST)
        want = last.bottom[0] if last.type == "Softmax" else net.outputs[0]   # logits: softmax may saturate

        def step(n):
            for _ in range(n):
                net.forward()
    randomize(net)
    net.blobs["data"].data[...] = images
    if train:
        net.blobs["label"].data[...] = labels
    row = dict(net=name, task="training step" if train else "inference", batch=batch)
    if worker is not None:
        # the twin gets these very weights and inputs; one forward of each is compared
        dropout = any(lp.type == "Dropout" for lp in param.layer)
        if not (train and dropout):
            net.forward()
            mine = np.array(net.blobs[want].data, dtype=np.float64).ravel()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "net.npz")
            arrays = {f"param/{layer}/{i}": blob.data for layer, blobs in net.params.items()
                      for i, blob in enumerate(blobs)}
            np.savez(path, data=images, label=labels, **arrays)
            theirs = np.array(worker.ask(cmd="setup", param=text_format.MessageToString(param), npz=path,
                                         train=train, want=want)["check"])
        if not (train and dropout):
            row["agree"] = float(np.abs(theirs - mine).max() / max(np.abs(mine).max(), 1e-12))
    step(1)                                               # warm-up
    ours, theirs_t = [], []
    for _ in range(repeats):                              # interleaved runs
        start = _CLOCK[0]()
        step(iters)
        ours.append((_CLOCK[0]() - start) / iters)
        if worker is not None:
            theirs_t.append(worker.ask(cmd="run", iters=iters)["seconds"])
            time.sleep(float(os.environ.get("BENCH_SLEEP", "0.05")))  # let PyTorch's OpenMP threads settle
    row["ours"] = statistics.median(ours)
    if theirs_t:
        row["torch"] = statistics.median(theirs_t)
    row["engines"] = sorted({layer.engine_name for layer in net.layers if hasattr(layer, "engine_name")})
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    ap.add_argument("--engine", choices=list(ENGINE_VALUES), default="DEFAULT",
                    help="convolution engine for every layer it can run")
    ap.add_argument("--iters", type=int, default=None, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="LeNet and CaffeNet, short runs")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: all cores)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU clock instead of the wall clock: steadier on a busy "
                         "machine, meaningful single-threaded (OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 "
                         "and --threads 1)")
    args = ap.parse_args(argv)
    if args.cpu_time:
        _CLOCK[0] = time.process_time
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    nets = ["LeNet", "CaffeNet"] if args.quick and args.nets == list(NETS) else args.nets
    worker, note = None, "PyTorch left out (--no-torch)"
    if not args.no_torch:
        try:
            worker = TorchWorker(args.threads, args.cpu_time)
            note = (f"PyTorch {worker.info['version']} CPU, {worker.info['threads']} threads, in a worker "
                    "process, runs interleaved with ours")
        except Exception as exc:
            worker, note = None, f"PyTorch not available ({exc}); its columns are skipped"
    rows = []
    for name in nets:
        iters = args.iters or (2 if args.quick else (20 if name == "LeNet" else 3))
        repeats = args.repeats or (2 if args.quick else 3)
        rows.append(run(name, args.engine, iters, repeats, worker))
        print(f"  measured {name}", file=sys.stderr, flush=True)
    if worker is not None:
        worker.close()
    print(f"# Whole nets, pycaffe_lite vs PyTorch CPU ({os.cpu_count()} cores, float32, engine {args.engine})")
    print(_user_blas.blas_header())
    clock = "process CPU time" if args.cpu_time else "wall-clock time"
    print(f"{note}. Times are medians ({clock}) per step; 'x torch' = PyTorch time / ours (above 1: we are faster); "
          "'agree' = relative difference of the two nets' logits (inference) or loss (training) "
          "on the same weights and input.\n")
    print("| net | task | batch | pycaffe_lite ms | images/s | PyTorch ms | images/s | x torch | agree "
          "| conv engines |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, agree = r.get("torch"), r.get("agree")
        cells = [r["net"], r["task"], str(r["batch"]), f"{r['ours'] * 1e3:.1f}", f"{r['batch'] / r['ours']:.1f}"]
        cells += [f"{t * 1e3:.1f}", f"{r['batch'] / t:.1f}", f"{t / r['ours']:.2f}"] if t else ["-", "-", "-"]
        cells += [f"{agree:.1e}" if agree is not None else "-", ", ".join(r["engines"])]
        print("| " + " | ".join(cells) + " |")
    if args.engine == "AUTO":
        from pycaffe_lite import conv
        print("\nAUTO choices:")
        for key, engine in conv.chosen_engines().items():
            print(f"  {key}: {engine}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--torch-worker"]:
        torch_worker_main()
    else:
        main()
