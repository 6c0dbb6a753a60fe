#!/usr/bin/env python
"""GPU figures, all measured in one run on one device, printed as markdown tables.

    python benchmarks/gpu.py [--device 0] [--parts sgemm,conv,nets,data] [--iterations 10] [--quick]
    python benchmarks/gpu.py --cpu-smoke      # every part's code on NumPy at toy sizes (no figures)

1. cuBLAS SGEMM peak (float32, square GEMMs through cupy.matmul): the yardstick.
2. Convolution TFLOP/s on the shapes of benchmarks/conv.py (when it defines SHAPES as
   (name, (N, C, H, W), K, ConvGeometry) rows; the list below otherwise) at 4x their batch:
   the im2col engine as the layer runs it, the im2col CUDA kernel + cuBLAS GEMM composed here,
   and PyTorch's cuDNN convolution; forward, and forward + both backward GEMMs.
3. Training images/s, CaffeNet (batch 256) and ResNet-50 (batch 64) from models/, synthetic
   data in Input blobs, SGD with momentum through our Solver, against the same networks in
   PyTorch on the same GPU (float32, cuDNN autotuning on, TF32 off on both sides).
4. Data pipeline: CaffeNet batch 256 fed by the Data layer from a generated JPEG LMDB with
   Caffe's transform plus our augmentation: images/s and the fraction of each iteration the
   net spends waiting for the prefetch thread.

Without CuPy or a CUDA device it prints why and exits with status 0.  Timings of device work
use CUDA events; whole training steps use the host clock around a synchronised step.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pycaffe_lite import backend  # noqa: E402
from pycaffe_lite.conv.geometry import ConvGeometry  # noqa: E402
from pycaffe_lite.gpu import device as gpu_device  # noqa: E402

# name, base input shape, outputs, geometry (base batch 16; the benchmark runs 4x that)
FALLBACK_SHAPES = [
    ("alexnet conv1", (16, 3, 227, 227), 96, ConvGeometry(11, 4, 0)),
    ("alexnet conv2", (16, 96, 27, 27), 256, ConvGeometry(5, 1, 2, group=2)),
    ("alexnet conv3", (16, 256, 13, 13), 384, ConvGeometry(3, 1, 1)),
    ("alexnet conv4", (16, 384, 13, 13), 384, ConvGeometry(3, 1, 1, group=2)),
    ("vgg16 conv3_2", (16, 256, 56, 56), 256, ConvGeometry(3, 1, 1)),
    ("vgg16 conv4_2", (16, 512, 28, 28), 512, ConvGeometry(3, 1, 1)),
    ("resnet50 conv1", (16, 3, 224, 224), 64, ConvGeometry(7, 2, 3)),
    ("resnet50 res2 3x3", (16, 64, 56, 56), 64, ConvGeometry(3, 1, 1)),
    ("resnet50 res2 1x1", (16, 256, 56, 56), 64, ConvGeometry(1)),
    ("mobilenet dw 3x3", (16, 128, 56, 56), 128, ConvGeometry(3, 1, 1, group=128)),
]
SMOKE_SHAPES = [("toy 3x3", (1, 4, 10, 9), 6, ConvGeometry(3, 1, 1)),
                ("toy 1x1 group", (1, 4, 6, 6), 4, ConvGeometry(1, group=2))]


# --------------------------------------------------------------------------
# where we run
# --------------------------------------------------------------------------
def gpu_unavailable_reason(device_id):
    try:
        import cupy
    except Exception as exc:
        return f"CuPy is not importable ({exc.__class__.__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy {cupy.__version__} finds no usable CUDA driver or device ({exc})"
    if count <= device_id:
        return f"device {device_id} was asked for and {count} CUDA device(s) are visible"
    return None


class Env:
    """The array module and timers of this run: CuPy + CUDA events, or NumPy + the host clock."""

    def __init__(self, gpu, device_id=0):
        self.gpu = gpu
        self.device_id = device_id
        if gpu:
            backend.set_device(device_id)
            backend.set_mode_gpu()
            self.xp = backend.cupy_module()
        else:
            backend.set_mode_cpu()
            self.xp = np

    def timer(self):
        return gpu_device.make_timer(self.gpu)

    def sync(self):
        backend.synchronize()

    def random(self, shape, seed=0, dtype=np.float32):
        return self.xp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))

    def time_ms(self, fn, repeat=5, warmup=2):
        return gpu_device.time_call(fn, repeat=repeat, warmup=warmup, timer=self.timer())


def torch_device(env):
    """(torch, device string) for the comparison, or (None, reason)."""
    try:
        import torch
    except Exception as exc:
        return None, f"PyTorch is not importable ({exc})"
    if env.gpu:
        if not torch.cuda.is_available():
            return None, f"PyTorch {torch.__version__} has no CUDA here"
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        return torch, f"cuda:{env.device_id}"
    return torch, "cpu"


def torch_sync(torch, dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------
# 1. SGEMM peak
# --------------------------------------------------------------------------
def sgemm_peak(env, sizes):
    rows = []
    for n in sizes:
        a, b = env.random((n, n), 1), env.random((n, n), 2)
        c = env.xp.empty((n, n), np.float32)
        ms = env.time_ms(lambda a=a, b=b, c=c: env.xp.matmul(a, b, out=c))
        rows.append((n, ms, 2.0 * n ** 3 / (ms / 1e3) / 1e12))
        del a, b, c
    return rows


# --------------------------------------------------------------------------
# 2. convolutions
# --------------------------------------------------------------------------
def conv_shapes(smoke):
    if smoke:
        return SMOKE_SHAPES, 1
    path = REPO / "benchmarks" / "conv.py"
    if path.exists():
        try:
            spec = importlib.util.spec_from_file_location("bench_conv", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            shapes = getattr(module, "SHAPES", None)
            if shapes and all(len(s) == 4 and isinstance(s[3], ConvGeometry) for s in shapes):
                return [(str(n), tuple(x), int(k), g) for n, x, k, g in shapes], 4
        except Exception as exc:  # a benchmark script that does not import here: say so, go on
            print(f"(benchmarks/conv.py not usable here: {exc}; using the built-in shapes)")
    return FALLBACK_SHAPES, 4


def kernel_conv(env, x, w, b, geom):
    """forward / backward closures: our im2col CUDA kernel + one cuBLAS GEMM per group, bias as a
    rank-1 offset; backward: dW GEMM, dcols GEMM, col2im kernel (the engine's algorithm)."""
    from pycaffe_lite.gpu import kernels
    xp = env.xp
    n, c, h, wd = x.shape
    k = w.shape[0]
    g = geom.group
    ho, wo = geom.output_hw(h, wd)
    p = ho * wo
    ckk = w[0].size * g
    wg = w.reshape(g, k // g, ckk // g)

    def forward():
        cols = kernels.im2col(x, geom)
        yk = xp.matmul(wg, cols.reshape(g, ckk // g, n * p)).reshape(k, n, p)
        return (yk.transpose(1, 0, 2) + b.reshape(1, k, 1)).reshape(n, k, ho, wo)

    dy = xp.ones((k, n * p), x.dtype).reshape(g, k // g, n * p)

    def backward():
        cols = kernels.im2col(x, geom)
        dw = xp.matmul(dy, cols.reshape(g, ckk // g, n * p).transpose(0, 2, 1))
        dcols = xp.matmul(wg.transpose(0, 2, 1), dy)
        return dw, kernels.col2im(dcols.reshape(ckk, n, p), x.shape, geom)

    return forward, backward


def kernel_path(env):
    """On the GPU nothing to set up; in the CPU smoke run the CUDA kernels' code runs through
    the C++ emulator (pycaffe_lite.gpu.emulate), so the composition is checked there too."""
    import contextlib
    if env.gpu:
        return contextlib.nullcontext()
    from pycaffe_lite.gpu import emulate, kernels
    if emulate.compiler() is None:
        return contextlib.nullcontext()
    return kernels.emulated(emulate.runner())


def conv_rows(env, shapes, scale, torch_pair, repeat):
    from pycaffe_lite.conv import im2col as engine
    torch, tdev = torch_pair
    rows = []
    for name, base, k, geom in shapes:
        shape = (base[0] * scale,) + tuple(base[1:])
        n, c, h, wd = shape
        x = env.random(shape, 1)
        w = env.random((k, c // geom.group) + geom.kernel, 2) * 0.1
        b = env.random((k,), 3)
        flops = 2.0 * geom.macs(shape, k)
        ho, wo = geom.output_hw(h, wd)
        dy = env.xp.ones((n, k, ho, wo), np.float32)
        row = {"name": name, "shape": shape, "k": k, "geom": geom, "flops": flops}
        row["engine_fwd"] = env.time_ms(lambda x=x, w=w, b=b: engine.forward(x, w, b, geom), repeat)
        row["engine_bwd"] = env.time_ms(lambda x=x, w=w, dy=dy: engine.backward(x, w, dy, geom), repeat)
        if not geom.is_depthwise(c):
            with kernel_path(env):
                fwd, bwd = kernel_conv(env, x, w, b, geom)
                ref_dx, ref_dw = engine.backward(x, w, dy, geom)
                kernel_dw, kernel_dx = bwd()
                for what, ours, ref in (("forward", fwd(), engine.forward(x, w, b, geom)),
                                        ("dx", kernel_dx, ref_dx), ("dw", kernel_dw.reshape(ref_dw.shape), ref_dw)):
                    ours, ref = backend.to_numpy(ours), backend.to_numpy(ref)
                    error = np.abs(ours - ref).max() / np.abs(ref).max()
                    if not error <= 1e-4:
                        raise AssertionError(f"{name}: the kernel path's {what} differs from the engine's "
                                             f"(relative {error:.1e})")
                row["kernel_fwd"] = env.time_ms(fwd, repeat)
                row["kernel_bwd"] = env.time_ms(bwd, repeat)
        if torch is not None:
            tx = torch.randn(shape, device=tdev, requires_grad=True)
            tw = torch.randn((k, c // geom.group) + geom.kernel, device=tdev, requires_grad=True)
            tb = torch.randn((k,), device=tdev, requires_grad=True)

            def tfwd():
                return torch.nn.functional.conv2d(tx, tw, tb, geom.stride, geom.pad, geom.dilation, geom.group)

            ty = tfwd()
            tdy = torch.ones_like(ty)

            def tbwd():
                torch.autograd.grad(tfwd(), (tx, tw), tdy)

            row["torch_fwd"] = torch_time_ms(torch, tdev, tfwd, repeat)
            row["torch_bwd"] = torch_time_ms(torch, tdev, tbwd, repeat) - row["torch_fwd"]
        rows.append(row)
        del x, w, b, dy
    return rows


def torch_time_ms(torch, dev, fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if dev.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def print_conv(rows, peak):
    def tf(row, key, mult):
        return mult * row["flops"] / (row[key] / 1e3) / 1e12 if key in row else None

    def cell(value):
        return "-" if value is None else f"{value:.2f} ({100 * value / peak:.0f} %)"

    print("| layer | input | K | geometry | engine fwd | kernel fwd | PyTorch fwd | engine bwd | kernel bwd "
          "| PyTorch bwd |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['k']} | {r['geom']} "
              f"| {cell(tf(r, 'engine_fwd', 1))} | {cell(tf(r, 'kernel_fwd', 1))} | {cell(tf(r, 'torch_fwd', 1))} "
              f"| {cell(tf(r, 'engine_bwd', 2))} | {cell(tf(r, 'kernel_bwd', 2))} | {cell(tf(r, 'torch_bwd', 2))} |")
    print("TFLOP/s (% of the SGEMM peak above); bwd = data and weight gradients (twice the forward FLOPs). "
          "'engine' is pycaffe_lite.conv.im2col as the layer calls it; 'kernel' composes "
          "pycaffe_lite.gpu.kernels.im2col/col2im with cuBLAS GEMMs here.")


# --------------------------------------------------------------------------
# 3. training steps
# --------------------------------------------------------------------------
def synthetic_train_net(model, batch):
    """models/<model>/train_val.prototxt for TRAIN, its Data layers replaced by Input blobs."""
    from google.protobuf import text_format
    from pycaffe_lite.proto.files import read_net_param
    from pycaffe_lite.proto import caffe_pb2
    param = read_net_param(str(REPO / "models" / model / "train_val.prototxt"))
    data = [l for l in param.layer if l.type == "Data"]
    crop = data[0].transform_param.crop_size if data else 224
    body = [l for l in param.layer if l.type not in ("Data", "Accuracy")
            and not any(r.HasField("phase") and r.phase == caffe_pb2.TEST for r in l.include)]
    out = text_format.Parse(
        f'name: "{param.name}" layer {{ name: "data" type: "Input" top: "data" top: "label" input_param {{ '
        f"shape {{ dim: {batch} dim: 3 dim: {crop} dim: {crop} }} shape {{ dim: {batch} }} }} }}",
        caffe_pb2.NetParameter())
    out.layer.extend(body)
    return out, crop


def missing_layer_types(param):
    from pycaffe_lite.layer import layer_type_list
    known = set(layer_type_list())
    return sorted({l.type for l in param.layer if l.type not in known})


def make_solver(net_param, folder):
    import pycaffe_lite as caffe
    from google.protobuf import text_format
    net_file = Path(folder) / f"{net_param.name or 'net'}.prototxt"
    net_file.write_text(text_format.MessageToString(net_param))
    solver_file = Path(folder) / "solver.prototxt"
    solver_file.write_text(f'net: "{net_file}"\ntype: "SGD"\nbase_lr: 0.001\nmomentum: 0.9\n'
                           f'weight_decay: 0.0005\nlr_policy: "fixed"\nmax_iter: 100000000\ndisplay: 0\n'
                           f'snapshot: 0\nrandom_seed: 1\n')
    return caffe.get_solver(str(solver_file))


def our_train_rate(env, model, batch, iterations, folder):
    param, crop = synthetic_train_net(model, batch)
    missing = missing_layer_types(param)
    if missing:
        return None, f"layer types not registered yet: {', '.join(missing)}"
    solver = make_solver(param, folder)
    net = solver.net
    rng = np.random.default_rng(0)
    backend.copy_into(net.blobs["data"].data, rng.standard_normal(net.blobs["data"].shape).astype(np.float32))
    backend.copy_into(net.blobs["label"].data, rng.integers(0, 1000, batch).astype(np.float32))
    solver.step(2)                         # warm-up: kernels compiled, workspaces grown
    env.sync()
    started = time.perf_counter()
    solver.step(iterations)
    env.sync()
    seconds = time.perf_counter() - started
    net.close()
    return batch * iterations / seconds, f"{1e3 * seconds / iterations:.0f} ms / step"


def torch_caffenet(torch):
    nn = torch.nn
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True), lrn(),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        lrn(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))


def torch_resnet50(torch):
    """ResNet-50 (He et al., the Caffe model's layout: stride in the first 1x1 of a stage)."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                   nn.MaxPool2d(3, 2, ceil_mode=True)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def torch_train_rate(torch, dev, model, batch, crop, iterations):
    net = (torch_caffenet if model == "bvlc_reference_caffenet" else torch_resnet50)(torch).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, crop, crop, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    torch_sync(torch, dev)
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    torch_sync(torch, dev)
    return batch * iterations / (time.perf_counter() - started)


# --------------------------------------------------------------------------
# 4. data pipeline
# --------------------------------------------------------------------------
def data_pipeline_module():
    spec = importlib.util.spec_from_file_location("bench_data_pipeline", REPO / "benchmarks" / "data_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_idle_fraction(env, batch, images, iterations, folder):
    """(images/s, fraction of time waiting for data, note) for CaffeNet fed by its Data layer."""
    import pycaffe_lite as caffe
    dp = data_pipeline_module()
    transform = f"{dp.CAFFE_TRANSFORM} {dp.AUGMENTATION} num_threads: {os.cpu_count() or 1}"
    missing = missing_layer_types(dp.caffenet_net("unused", batch, transform))
    if missing:
        return None, None, f"layer types not registered yet: {', '.join(missing)}"
    param = dp.caffenet_net(dp.jpeg_lmdb(Path(folder), images), batch, transform)
    net = caffe.Net(param, caffe.TRAIN)
    try:
        def step():
            net.forward_backward()
            env.sync()

        step()
        step()
        prefetcher = net.layers[0].prefetcher
        wait0 = prefetcher.wait_seconds
        started = time.perf_counter()
        for _ in range(iterations):
            step()
        total = time.perf_counter() - started
        return batch * iterations / total, (prefetcher.wait_seconds - wait0) / total, \
            f"{os.cpu_count()} decode threads, {images} JPEGs"
    finally:
        net.close()


# --------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--parts", default="sgemm,conv,nets,data")
    parser.add_argument("--iterations", type=int, default=10, help="timed training iterations per net")
    parser.add_argument("--images", type=int, default=1024, help="JPEGs in the generated LMDB (part 4)")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch columns")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and iterations")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every part on NumPy at toy sizes to check the script (figures meaningless)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    smoke = args.cpu_smoke
    if not smoke:
        reason = gpu_unavailable_reason(args.device)
        if reason:
            print(f"benchmarks/gpu.py: no GPU to measure: {reason}. Nothing was run; on a machine with a CUDA "
                  f"device: pip install '.[gpu]' (and torch for the comparison), then run this script again.")
            return 0
    env = Env(gpu=not smoke, device_id=args.device)
    repeat = 1 if smoke else (3 if args.quick else 5)
    iterations = 1 if smoke else (3 if args.quick else args.iterations)
    torch_pair = (None, "left out (--no-torch)") if args.no_torch else torch_device(env)
    try:
        if env.gpu:
            props = gpu_device.device_properties(args.device)
            import cupy
            print(f"# {gpu_device.describe(props)}\nCuPy {cupy.__version__}, CUDA runtime "
                  f"{cupy.cuda.runtime.runtimeGetVersion()}, CUPY_TF32={os.environ.get('CUPY_TF32', '0')}")
        else:
            print("# CPU smoke run (NumPy, toy sizes): checks the script, measures nothing")
        torch = torch_pair[0]
        print(f"PyTorch: {torch.__version__ + ' on ' + torch_pair[1] if torch is not None else torch_pair[1]}")

        peak = None
        if parts & {"sgemm", "conv"}:
            print("\n## 1. cuBLAS SGEMM (float32)" if env.gpu else "\n## 1. SGEMM (NumPy)")
            print("| n | ms | TFLOP/s |\n|---|---|---|")
            sizes = [128] if smoke else ([4096, 8192] if args.quick else [4096, 8192, 12288])
            rows = sgemm_peak(env, sizes)
            for n, ms, tflops in rows:
                print(f"| {n} | {ms:.3f} | {tflops:.2f} |")
            peak = max(r[2] for r in rows)
            print(f"peak: {peak:.2f} TFLOP/s")

        if "conv" in parts:
            shapes, scale = conv_shapes(smoke)
            print(f"\n## 2. Convolutions at {scale}x the base batch")
            print_conv(conv_rows(env, shapes, scale, torch_pair, repeat), peak)

        if "nets" in parts:
            print("\n## 3. Training throughput (images/s, float32, SGD with momentum)")
            print("| net | batch | pycaffe_lite | PyTorch | ratio | note |\n|---|---|---|---|---|---|")
            for model, batch in (("bvlc_reference_caffenet", 256), ("resnet50", 64)):
                batch = 1 if smoke else batch
                with tempfile.TemporaryDirectory(prefix="pycaffe_gpu_bench_") as folder:
                    ours, note = our_train_rate(env, model, batch, iterations, folder)
                theirs = None
                if torch is not None:
                    crop = 227 if model == "bvlc_reference_caffenet" else 224
                    theirs = torch_train_rate(torch, torch_pair[1], model, batch, crop, iterations)
                ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
                print(f"| {model} | {batch} | {f'{ours:,.1f}' if ours else '-'} | "
                      f"{f'{theirs:,.1f}' if theirs else '-'} | {ratio} | {note} |")

        if "data" in parts:
            batch = 4 if smoke else 256
            print(f"\n## 4. Data pipeline: CaffeNet batch {batch}, JPEG LMDB, Caffe transform + augmentation")
            print("| images/s | waiting for data | note |\n|---|---|---|")
            with tempfile.TemporaryDirectory(prefix="pycaffe_gpu_bench_") as folder:
                rate, idle, note = data_idle_fraction(env, batch, 16 if smoke else args.images,
                                                      max(iterations, 2 if smoke else 5), folder)
            print(f"| {f'{rate:,.1f}' if rate else '-'} | {f'{100 * idle:.1f} %' if idle is not None else '-'} "
                  f"| {note} |")
    finally:
        backend.set_mode_cpu()
    return 0


if __name__ == "__main__":
    sys.exit(main())
