"""Binary layers on packed bits against the float32 path, on the same shapes, in the same run.

    flock /tmp/pycaffe_bench.lock python benchmarks/binary.py             # every shape, 5 repeats
    flock /tmp/pycaffe_bench.lock python benchmarks/binary.py --quick     # two shapes, 2 repeats
    flock /tmp/pycaffe_bench.lock python benchmarks/binary.py --threads 1 # one core each (a busy machine)

For each layer shape (LeNet conv2 / ip1, CaffeNet conv3-5 and fc6-7 at batch 10):

  float32 layer   what BinaryConvolution's FLOAT engine runs: im2col + SGEMM on the +-1
                  values (pycaffe_lite.conv.im2col), or one SGEMM for an inner product
  packed layer    what its PACKED engine runs from the same float input: sign bits packed
                  64 to a uint64, im2col on words, the XNOR + popcount GEMM, the padding
                  correction, the integer sums written out as float32
  float32 GEMM    the SGEMM alone, on columns made beforehand
  XNOR GEMM       the popcount GEMM alone, on words packed beforehand

Effective binary operations per second count 2 x multiply-adds of the layer (one
multiply and one add per bit pair, as FLOP/s count them), whatever the path really
computes.  Each figure is the best of the repeats, the paths alternating, so a
busy machine disturbs them alike; every packed result is checked equal to the
float32 one before it is timed.
"""
import os
import sys

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if "--threads" in sys.argv:          # both paths on N threads: set before NumPy and Numba load
    _threads = sys.argv[sys.argv.index("--threads") + 1]
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_name] = _threads
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas

_user_blas.user_blas()

import argparse
import platform
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pycaffe_lite.conv import ConvGeometry, get_engine
from pycaffe_lite.conv import binary as packed
from pycaffe_lite.conv.im2col import im2col
from pycaffe_lite.kernels import xnor

# name: ("conv", (N, C, H, W), K, kernel, stride, pad, group) or ("fc", M, K, N)
SHAPES = {
    "lenet_conv2": ("conv", (64, 20, 12, 12), 50, 5, 1, 0, 1),
    "lenet_ip1": ("fc", 64, 800, 500),
    "caffenet_conv3": ("conv", (10, 256, 13, 13), 384, 3, 1, 1, 1),
    "caffenet_conv4": ("conv", (10, 384, 13, 13), 384, 3, 1, 1, 2),
    "caffenet_conv5": ("conv", (10, 384, 13, 13), 256, 3, 1, 1, 2),
    "caffenet_fc6": ("fc", 10, 9216, 4096),
    "caffenet_fc7": ("fc", 10, 4096, 4096),
}
QUICK = ["lenet_conv2", "caffenet_conv3"]


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def signs(rng, shape):
    return np.where(rng.standard_normal(shape) >= 0, 1.0, -1.0).astype(np.float32)


def conv_case(rng, x_shape, k, kernel, stride, pad, group):
    n, c = x_shape[:2]
    geom = ConvGeometry((kernel, kernel), (stride, stride), (pad, pad), (1, 1), group)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = signs(rng, (k, c // group, kernel, kernel))
    ho, wo = geom.output_hw(*x_shape[2:])
    macs = n * k * ho * wo * (c // group) * kernel * kernel
    engine = get_engine("im2col")
    xs = np.where(x >= 0, np.float32(1), np.float32(-1))
    weights = packed.PackedConvWeights(w > 0, geom)

    def float_layer():
        return engine.forward(np.where(x >= 0, np.float32(1), np.float32(-1)), w, None, geom)

    def packed_layer():
        return packed.conv_packed(packed.sign_bits(x), weights).astype(np.float32)

    cols = im2col(xs, geom).reshape(c * kernel * kernel, -1)
    cg = c // group
    w_groups = w.reshape(group, k // group, -1)
    col_groups = cols.reshape(group, cg * kernel * kernel, -1)
    pixels = packed.pack_pixels(xs >= 0, group)
    word_cols = [packed.columns(pixels[g], geom, packed.pad_word(cg)) for g in range(group)]

    def float_gemm():
        return [w_groups[g] @ col_groups[g] for g in range(group)]

    def xnor_gemm():
        return [xnor.xnor_gemm(weights.packed[g], word_cols[g], weights.k_bits) for g in range(group)]

    np.testing.assert_array_equal(packed_layer(), float_layer())
    return macs, float_layer, packed_layer, float_gemm, xnor_gemm


def fc_case(rng, m, k, n):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = signs(rng, (n, k))
    w_rows = packed.pack_rows(w > 0)
    wt = np.ascontiguousarray(w.T)
    x_rows = packed.pack_rows(x >= 0)
    xs = np.where(x >= 0, np.float32(1), np.float32(-1))

    def float_layer():
        return np.where(x >= 0, np.float32(1), np.float32(-1)) @ wt

    def packed_layer():
        return packed.inner_product_packed(packed.pack_rows(packed.sign_bits(x)), w_rows, k).astype(np.float32)

    np.testing.assert_array_equal(packed_layer(), float_layer())
    return m * k * n, float_layer, packed_layer, lambda: xs @ wt, lambda: xnor.xnor_gemm(x_rows, w_rows, k)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", choices=sorted(SHAPES), help="default: all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two shapes, 2 repeats")
    parser.add_argument("--threads", type=int, help="BLAS and Numba threads (default: every core)")
    args = parser.parse_args()
    names = QUICK if args.quick else (args.shapes or list(SHAPES))
    repeats = 2 if args.quick else args.repeats
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}, "
          f"Numba kernels: {xnor.HAVE_NUMBA}, threads: {args.threads or 'all'}")
    print(f"# {_user_blas.blas_header()}")
    print("# effective G binary op/s = 2 x multiply-adds / best time; ratio = packed over float32")
    print("| shape | MACs | float32 layer | packed layer | ratio | float32 GEMM | XNOR GEMM | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in names:
        spec = SHAPES[name]
        case = conv_case(rng, *spec[1:]) if spec[0] == "conv" else fc_case(rng, *spec[1:])
        macs, paths = case[0], case[1:]
        for fn in paths:                                   # warm up: Numba compiles, pages fault in
            fn()
        times = [float("inf")] * 4
        for _ in range(repeats):                           # alternate, so that drift hits all alike
            for i, fn in enumerate(paths):
                times[i] = min(times[i], best_time(fn, 1))
        rate = [2 * macs / t / 1e9 for t in times]
        print(f"| {name} | {macs / 1e6:.0f} M | {rate[0]:.0f} | {rate[1]:.0f} | {rate[1] / rate[0]:.1f}x "
              f"| {rate[2]:.0f} | {rate[3]:.0f} | {rate[3] / rate[2]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
