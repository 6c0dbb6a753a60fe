"""Convolution engines side by side with PyTorch CPU, and against this machine's GEMM peak.

    python benchmarks/conv.py            # every shape, 5 repeats
    python benchmarks/conv.py --quick    # three shapes, 2 repeats (a smoke run)
    python benchmarks/conv.py --shapes vgg1 vgg2 --engines im2col winograd4 --repeats 9

For each layer shape every applicable engine (im2col, winograd = F(2x2,3x3),
winograd4 = F(4x4,3x3), fft) and PyTorch's conv2d run forward, and forward +
backward (dx, dw, db).  Effective GFLOP/s count the direct algorithm's work:
2 x multiply-adds for a forward, three times that for forward + backward,
whatever the engine really computes (so Winograd and FFT can pass 100 %).
The "gemm" row is not an engine: it runs only the GEMMs that im2col runs
(W @ cols forward; cols @ dY^T and W^T @ dY backward) on columns made once,
so it is the ceiling the im2col engine can reach with NumPy's BLAS.
"x torch" is PyTorch's time over ours (above 1: we are faster); "% peak" is
against the best float32 GEMM NumPy reaches (2048^3) in the rounds of the
same case: a shared VM's speed drifts (a run's best GEMM was once 1.5x its
usual), and a layer is compared with the GEMM measured beside it.  Runs alternate between
engines, and each figure is the best (or
--stat median) of the repeats, so that a busy machine disturbs the columns
alike.  PyTorch is optional (`pip install torch==2.13.0` gives a CPU build).
"""
import os
import sys

# OpenBLAS's workers should sleep as soon as a GEMM is done (read when NumPy
# loads), so that they do not spin against the Numba kernels between GEMMs.
# PyTorch runs in a worker process of its own with the environment as it was,
# so that its OpenMP runtime keeps PyTorch's defaults and its threads do not
# share a runtime with Numba's (the two would otherwise load one libgomp).
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
import platform
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas  # noqa: E402  (re-executes without the OpenBLAS pin, before NumPy loads)

_user_blas.user_blas()
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.conv import ConvGeometry, get_engine, workspace_bytes  # noqa: E402
from pycaffe_lite.conv.im2col import im2col  # noqa: E402

# name: (N, C, H, W), K, kernel, stride, pad, group, label
SHAPES = {
    "lenet1": ((64, 1, 28, 28), 20, 5, 1, 0, 1, "LeNet conv1"),
    "lenet2": ((64, 20, 12, 12), 50, 5, 1, 0, 1, "LeNet conv2"),
    "alex1": ((16, 3, 227, 227), 96, 11, 4, 0, 1, "AlexNet conv1"),
    "alex2": ((16, 96, 27, 27), 256, 5, 1, 2, 2, "AlexNet conv2 g2"),
    "alex3": ((16, 256, 13, 13), 384, 3, 1, 1, 1, "AlexNet conv3"),
    "vgg1": ((8, 64, 56, 56), 64, 3, 1, 1, 1, "VGG 64ch 56x56"),
    "vgg2": ((8, 256, 28, 28), 256, 3, 1, 1, 1, "VGG 256ch 28x28"),
    "res1x1": ((8, 256, 56, 56), 64, 1, 1, 0, 1, "ResNet 1x1"),
    "fact1x3": ((8, 128, 28, 28), 128, (1, 3), 1, (0, 1), 1, "factorised 1x3"),
    "fact3x1": ((8, 128, 28, 28), 128, (3, 1), 1, (1, 0), 1, "factorised 3x1"),
    "depthwise": ((8, 256, 28, 28), 256, 3, 1, 1, 256, "depthwise 3x3"),
    "large9": ((8, 64, 64, 64), 64, 9, 1, 4, 1, "large kernel 9x9"),
}
QUICK = ["lenet2", "vgg1", "large9"]
ENGINES = ["im2col", "gemm", "winograd", "winograd4", "fft"]


_CLOCK = [time.perf_counter]


def _timed(fn):
    clock = _CLOCK[0]
    start = clock()
    fn()
    return clock() - start


class TorchWorker:
    """PyTorch's conv2d timed in a child process, one run per request (interleaved with ours)."""

    def __init__(self, threads, cpu_time):
        env = dict(_ORIGINAL_ENV)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        self.info = self.ask(cmd="info", threads=threads, cpu_time=cpu_time)

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def fns(self, name):
        self.ask(cmd="setup", name=name)

        def run(what):
            seconds = self.ask(cmd="run", what=what)["seconds"]
            time.sleep(0.02)            # let PyTorch's spinning OpenMP threads go to sleep
            return seconds
        return (lambda: run("fwd")), (lambda: run("fb"))

    def close(self):
        try:
            self.ask(cmd="quit")
        except Exception:
            pass
        self.proc.wait(timeout=10)


def torch_worker_main():
    """The child side of TorchWorker: JSON requests on stdin, replies on stdout."""
    try:
        import torch
    except Exception as exc:
        for _line in sys.stdin:
            print(json.dumps({"error": f"{exc.__class__.__name__}: {exc}"}), flush=True)
        return
    F = torch.nn.functional
    state = {}
    clock = time.perf_counter
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "quit":
            print(json.dumps({}), flush=True)
            return
        if cmd == "info":
            torch.set_num_threads(req.get("threads") or os.cpu_count() or 1)
            if req.get("cpu_time"):
                clock = time.process_time
            print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
        elif cmd == "setup":
            x_shape, k, kernel, stride, pad, group, _ = SHAPES[req["name"]]
            g = ConvGeometry(kernel, stride, pad, 1, group)
            x = torch.randn(x_shape)
            w = torch.randn((k, x_shape[1] // group) + g.kernel) * 0.1
            b = torch.randn(k)
            args = dict(stride=g.stride, padding=g.pad, dilation=g.dilation, groups=g.group)
            with torch.no_grad():
                dy = torch.randn(F.conv2d(x, w, b, **args).shape)
            xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

            def fwd():
                with torch.no_grad():
                    F.conv2d(x, w, b, **args)

            def fb():
                xg.grad = wg.grad = bg.grad = None
                F.conv2d(xg, wg, bg, **args).backward(dy)
            fwd(), fb()                                   # warm-up: oneDNN primitives
            state = {"fwd": fwd, "fb": fb}
            print(json.dumps({}), flush=True)
        elif cmd == "run":
            fn = state[req["what"]]
            start = clock()
            fn()
            print(json.dumps({"seconds": clock() - start}), flush=True)


class Case:
    """One layer shape: arrays, the runnable (forward, forward+backward) pairs."""

    def __init__(self, name):
        x_shape, k, kernel, stride, pad, group, self.label = SHAPES[name]
        self.name = name
        self.geom = ConvGeometry(kernel, stride, pad, 1, group)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(x_shape).astype(np.float32)
        self.w = (rng.standard_normal((k, x_shape[1] // group) + self.geom.kernel) * 0.1).astype(np.float32)
        self.b = rng.standard_normal(k).astype(np.float32)
        ho, wo = self.geom.output_hw(*x_shape[2:])
        self.dy = rng.standard_normal((x_shape[0], k, ho, wo)).astype(np.float32)
        self.y = np.empty_like(self.dy)
        self.dx = np.empty_like(self.x)
        self.flops = 2.0 * self.geom.macs(x_shape, k)
        self.x_shape, self.k = x_shape, k

    def describe(self):
        n, c, h, w = self.x_shape
        return f"{self.label}: {n}x{c}x{h}x{w} -> {self.k} {self.geom}"

    def engine_fns(self, name):
        if name == "gemm":
            return self.gemm_fns()
        engine = get_engine(name)
        if not engine.supports(self.geom):
            return None
        ctx, ctx_fwd = {}, {}       # what a layer keeps per bottom (transforms reused while valid)
        geom = self.geom

        def fwd():
            engine.forward(self.x, self.w, self.b, geom, out=self.y, ctx=ctx_fwd)

        def fwd_bwd():
            engine.forward(self.x, self.w, self.b, geom, out=self.y, ctx=ctx)
            engine.backward(self.x, self.w, self.dy, geom, dx_out=self.dx, ctx=ctx)
            self.dy.sum(axis=(0, 2, 3))
        return fwd, fwd_bwd


    def gemm_fns(self):
        """im2col's GEMMs alone, on columns made once (None where it runs no columns)."""
        geom, (n, c, _, _), k = self.geom, self.x_shape, self.k
        if geom.is_1x1 or geom.is_depthwise(c):
            return None
        g = geom.group
        cols = im2col(self.x, geom)                        # (C*kh*kw, N, P)
        ckk, p = cols.shape[0], cols.shape[2]
        cols_g = cols.reshape(g, ckk // g, n * p)
        w_g = self.w.reshape(g, k // g, ckk // g)
        dy_g = np.ascontiguousarray(self.dy.reshape(n, k, p).transpose(1, 0, 2)).reshape(g, k // g, n * p)
        y_g, dcols = np.empty_like(dy_g), np.empty_like(cols_g)

        def fwd():
            np.matmul(w_g, cols_g, out=y_g)

        def fwd_bwd():
            fwd()
            np.matmul(cols_g, dy_g.transpose(0, 2, 1))
            np.matmul(w_g.transpose(0, 2, 1), dy_g, out=dcols)
        return fwd, fwd_bwd


def _peak_run(n=2048):
    """GFLOP/s of one reference GEMM."""
    a = getattr(_peak_run, "a", None)
    if a is None:
        a = _peak_run.a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return 2.0 * n ** 3 / _timed(lambda: a @ a) / 1e9


def measure(case, engines, repeats, stat, torch_worker=None):
    """({column: (forward seconds, forward+backward seconds)}, the GEMM peak beside them), runs interleaved."""
    runs = {}
    for name in engines:
        fns = case.engine_fns(name)
        if fns:
            fwd, fwd_bwd = fns
            runs[name] = ((lambda f=fwd: _timed(f)), (lambda f=fwd_bwd: _timed(f)))
    if torch_worker is not None:
        runs["pytorch"] = torch_worker.fns(case.name)   # these return the worker's own timing
    for fwd, fwd_bwd in runs.values():      # warm-up: Numba compiles, FFT plans
        fwd()
        fwd_bwd()
    times = {name: ([], []) for name in runs}
    peaks = []
    for _ in range(repeats):
        peaks.append(_peak_run())            # the GEMM peak, measured alongside
        for name, (fwd, fwd_bwd) in runs.items():
            times[name][0].append(fwd())
            times[name][1].append(fwd_bwd())
    peaks.append(_peak_run())
    pick = min if stat == "min" else statistics.median
    return {name: (pick(f), pick(fb)) for name, (f, fb) in times.items()}, max(peaks)


def table(rows, have_torch):
    head = ("| layer | engine | fwd ms | fwd GFLOP/s | fwd % peak | fwd x torch "
            "| f+b ms | f+b GFLOP/s | f+b % peak | f+b x torch | GEMM peak |")
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for case, (result, peak) in rows:
        torch_t = result.get("pytorch")
        first = True
        for name, (tf, tfb) in result.items():
            gf, gfb = case.flops / tf / 1e9, 3 * case.flops / tfb / 1e9
            xt = f"{torch_t[0] / tf:.2f}" if torch_t and name != "pytorch" else "-"
            xtb = f"{torch_t[1] / tfb:.2f}" if torch_t and name != "pytorch" else "-"
            label = case.describe() if first else ""
            lines.append(f"| {label} | {name} | {tf * 1e3:.1f} | {gf:.1f} | {100 * gf / peak:.0f} | {xt} "
                         f"| {tfb * 1e3:.1f} | {gfb:.1f} | {100 * gfb / peak:.0f} | {xtb} "
                         f"| {f'{peak:.0f}' if first else ''} |")
            first = False
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="three shapes, two repeats (a smoke run)")
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="which layer shapes")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=ENGINES)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--stat", choices=("min", "median"), default="min")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU clock instead of the wall clock: steadier on a busy "
                         "machine, meaningful single-threaded (OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 "
                         "and --threads 1)")
    ap.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: all cores)")
    args = ap.parse_args(argv)
    if args.cpu_time:
        _CLOCK[0] = time.process_time
    shapes = args.shapes or (QUICK if args.quick else list(SHAPES))
    repeats = args.repeats or (2 if args.quick else 5)

    worker, torch_note = None, "PyTorch left out (--no-torch)"
    if not args.no_torch:
        try:
            worker = TorchWorker(args.threads, args.cpu_time)
            torch_note = (f"PyTorch {worker.info['version']} (CPU, {worker.info['threads']} threads, "
                          "in a worker process, runs interleaved with ours)")
        except Exception as exc:
            worker, torch_note = None, f"PyTorch not available ({exc}); its columns are skipped"
    _peak_run()                              # warm-up: BLAS threads started, pages touched
    rows = []
    for name in shapes:
        case = Case(name)
        rows.append((case, measure(case, args.engines, repeats, args.stat, worker)))
        print(f"  measured {case.describe()}", file=sys.stderr, flush=True)

    print(f"# Convolution engines vs PyTorch CPU ({platform.machine()}, {os.cpu_count()} cores, float32)")
    print(_user_blas.blas_header())
    peaks = [peak for _, (_, peak) in rows]
    print(f"NumPy {np.__version__} float32 GEMM peak (2048^3, the best of the {repeats + 1} runs beside each "
          f"case): {min(peaks):.0f}-{max(peaks):.0f} GFLOP/s. {torch_note}.")
    clock = "process CPU time" if args.cpu_time else "wall-clock time"
    print(f"Each time is the {args.stat} {clock} of {repeats} interleaved runs; GFLOP/s count the direct "
          "algorithm's 2*MACs (x3 for forward+backward); 'x torch' = PyTorch time / ours.\n")
    if worker is not None:
        worker.close()
    print(table(rows, worker is not None))
    print(f"\nconvolution workspace after the run: {workspace_bytes() / 2 ** 20:.1f} MiB")


if __name__ == "__main__":
    if sys.argv[1:] == ["--torch-worker"]:
        torch_worker_main()
    else:
        main()
