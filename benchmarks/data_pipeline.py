#!/usr/bin/env python
"""Data pipeline throughput: decode + transform/augment per core, and how long the net waits for data.

    python benchmarks/data_pipeline.py [--iterations 20] [--images 256] [--quick]

Part 1, images/s of read + decode + transform (+ augment), timed in the
calling thread (one core; `num_threads` > 1 adds decode workers):
  - LeNet on the digits set (raw 28x28 Datums, scale only: the vectorized path), then
    with the affine warps of the main job's net (models/lenet), one resampling per image
  - CaffeNet-style 227x227 crops from an LMDB of encoded JPEGs (256x256) that this script
    generates: Caffe's transform (crop, mirror, mean_value), then with our augmentation on top
Part 2, the fraction of iteration time the net spends waiting for the prefetch
thread, training LeNet on digits and CaffeNet on the JPEG LMDB through the
Net when its layers are registered; otherwise a stand-in compute step (BLAS
GEMMs taking about Caffe's time for the net on this machine) is used, and
the table says so.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _user_blas  # noqa: E402  (re-executes without the OpenBLAS pin, before NumPy loads)

_user_blas.user_blas()
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pycaffe_lite as caffe  # noqa: E402
import pycaffe_lite.layers  # noqa: E402,F401
from google.protobuf import text_format  # noqa: E402
from pycaffe_lite.data.batches import BatchLoader, LMDBRecords  # noqa: E402
from pycaffe_lite.data.transformer import DataTransformer  # noqa: E402
from pycaffe_lite.layer import _REGISTRY  # noqa: E402
from pycaffe_lite.proto import caffe_pb2  # noqa: E402

FIXTURES = Path(os.environ.get("PYCAFFE_LITE_FIXTURES", REPO.parent / "shared" / "fixtures"))

CAFFE_TRANSFORM = "crop_size: 227 mirror: true mean_value: 104 mean_value: 117 mean_value: 123"
AUGMENTATION = ("augmentation { scale_jitter { min_size: 227 max_size: 288 } rotation: 10 translation: 0.05 "
                "color_jitter { brightness: 0.4 contrast: 0.4 saturation: 0.4 } "
                "lighting { eigval: [55.46, 4.794, 1.148] "
                "eigvec: [-0.5675, 0.7192, 0.4009, -0.5808, -0.0045, -0.814, -0.5836, -0.6948, 0.4203] } }")


# --------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------
def digits_lmdbs(folder):
    from pycaffe_lite.data import digits as build
    return build.build(folder)


def jpeg_lmdb(folder, count):
    """count JPEG photos-like images (smooth shapes + noise), stored as Caffe's ImageNet example does
    (convert_imageset --encoded --resize_height=256 --resize_width=256)."""
    import cv2
    from pycaffe_lite.data.convert import convert_imageset
    rng = np.random.default_rng(0)
    images = folder / "jpg"
    images.mkdir()
    lines = []
    for i in range(count):
        h, w = int(rng.integers(300, 400)), int(rng.integers(380, 500))
        image = np.empty((h, w, 3), np.uint8)
        image[:] = rng.integers(0, 256, 3)
        for _ in range(12):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(image, centre, int(rng.integers(10, 120)), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        image = cv2.GaussianBlur(image, (0, 0), 3)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(images / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"jpg/{i:05d}.jpg {i % 1000}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    db = folder / "jpeg_lmdb"
    convert_imageset(f"{folder}/", str(folder / "list.txt"), str(db), encoded=True, encode_type="jpg",
                     resize_height=256, resize_width=256)
    return db


# --------------------------------------------------------------------------
# Part 1: images/s
# --------------------------------------------------------------------------
def loader_rate(db, transform_text, batch_size, threads=1, phase=caffe_pb2.TRAIN, seconds=3.0):
    tp = text_format.Parse(transform_text, caffe_pb2.TransformationParameter())
    transformer = DataTransformer(tp, phase)
    loader = BatchLoader(LMDBRecords(str(db), transformer), transformer, batch_size, seed=1, num_threads=threads)
    try:
        loader.next_batch()                      # warm up (thread pool, caches)
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            loader.next_batch()
            images += batch_size
        return images / (time.perf_counter() - started)
    finally:
        loader.close()


# --------------------------------------------------------------------------
# Part 2: waiting for data
# --------------------------------------------------------------------------
def data_layer_text(source, batch_size, transform, phase="TRAIN", prefetch=4):
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: {phase} }} '
            f'transform_param {{ {transform} }} '
            f'data_param {{ source: "{source}" batch_size: {batch_size} backend: LMDB prefetch: {prefetch} }} }}\n')


def main_job_transform():
    """The TRAIN transform_param of models/lenet (scale and affine warps), as prototxt text."""
    param = text_format.Parse((REPO / "models" / "lenet" / "lenet_train_test.prototxt").read_text(),
                              caffe_pb2.NetParameter())
    layer = next(layer for layer in param.layer if layer.type == "Data"
                 and any(rule.phase == caffe_pb2.TRAIN for rule in layer.include))
    return text_format.MessageToString(layer.transform_param, as_one_line=True)


def lenet_net(source, batch_size, transform="scale: 0.00390625"):
    path = FIXTURES / "caffe" / "examples" / "mnist" / "lenet_train_test.prototxt"
    param = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    body = [layer for layer in param.layer if layer.type not in ("Data", "Accuracy")]
    text = data_layer_text(source, batch_size, transform)
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    net.layer.extend(body)
    return net


def caffenet_net(source, batch_size, transform):
    path = FIXTURES / "caffe" / "models" / "bvlc_reference_caffenet" / "train_val.prototxt"
    param = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    body = [layer for layer in param.layer if layer.type not in ("Data", "Accuracy")]
    net = text_format.Parse(data_layer_text(source, batch_size, transform), caffe_pb2.NetParameter())
    net.layer.extend(body)
    return net


def net_available(param):
    return all(layer.type in _REGISTRY for layer in param.layer)


def _gemm_step(target_ms):
    """A stand-in for a training step: BLAS GEMMs (they release the GIL, as a real net's do)."""
    a = np.random.default_rng(0).random((512, 512), np.float32)
    reps, started = 0, time.perf_counter()
    while (time.perf_counter() - started) * 1000 < 200:
        a @ a
        reps += 1
    per = (time.perf_counter() - started) / reps
    count = max(1, int(round(target_ms / 1000 / per)))

    def step():
        for _ in range(count):
            a @ a
    return step


def wait_fraction(param, iterations, stand_in_ms):
    """(seconds per iteration, fraction waiting for data, what ran)."""
    if net_available(param):
        net = caffe.Net(param, caffe.TRAIN)
        what = "Net forward+backward"

        def step():
            net.forward_backward()
    else:
        sub = caffe_pb2.NetParameter()
        sub.layer.extend([layer for layer in param.layer if layer.type == "Data"])
        net = caffe.Net(sub, caffe.TRAIN)
        gemm = _gemm_step(stand_in_ms)
        what = f"stand-in GEMMs, {stand_in_ms:.0f} ms (net layers missing: " + ", ".join(
            sorted({layer.type for layer in param.layer if layer.type not in _REGISTRY})) + ")"

        def step():
            net.forward()
            gemm()
    try:
        step()                                   # first batch and warm-up are not steady state
        prefetcher = net.layers[0].prefetcher
        wait0 = prefetcher.wait_seconds
        started = time.perf_counter()
        for _ in range(iterations):
            step()
        total = time.perf_counter() - started
        return total / iterations, (prefetcher.wait_seconds - wait0) / total, what
    finally:
        net.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--images", type=int, default=256, help="JPEGs in the generated LMDB")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window of each throughput row")
    parser.add_argument("--quick", action="store_true", help="short runs (for a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.images, args.seconds = 3, 32, 0.5
    import cv2
    print(_user_blas.blas_header())
    print(f"machine: {os.cpu_count()} cores, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"NumPy {np.__version__}")
    with tempfile.TemporaryDirectory(prefix="pycaffe_lite_bench_") as tmp:
        tmp = Path(tmp)
        train, _ = digits_lmdbs(tmp)
        jpegs = jpeg_lmdb(tmp, args.images)
        warps = main_job_transform()

        print("\n## Read + decode + transform, images/s")
        print("| data | transform | decode threads | images/s |")
        print("|---|---|---|---|")
        rows = [
            ("digits 28x28 raw", "scale 1/256 (LeNet)", train, "scale: 0.00390625", 64, 1),
            ("digits 28x28 raw", "+ the main job's affine warps", train, warps, 64, 1),
            ("JPEG 256x256 -> 227", "Caffe: crop, mirror, mean", jpegs, CAFFE_TRANSFORM, 32, 1),
            ("JPEG 256x256 -> 227", "Caffe: crop, mirror, mean", jpegs, CAFFE_TRANSFORM, 32, 2),
            ("JPEG 256x256 -> 227", "+ scale jitter, rotate, shift, colour, lighting", jpegs,
             CAFFE_TRANSFORM + " " + AUGMENTATION, 32, 1),
            ("JPEG 256x256 -> 227", "+ scale jitter, rotate, shift, colour, lighting", jpegs,
             CAFFE_TRANSFORM + " " + AUGMENTATION, 32, 2),
        ]
        for name, what, db, transform, batch, threads in rows:
            rate = loader_rate(db, transform, batch, threads, seconds=args.seconds)
            print(f"| {name} | {what} | {threads} | {rate:,.0f} |")

        print("\n## Time the net waits for data (prefetch thread, data_param.prefetch 4)")
        print("| net | batch | step | s / iteration | waiting for data |")
        print("|---|---|---|---|---|")
        cases = [
            ("LeNet, digits", lenet_net(train, 64), 64, 31.6),
            ("LeNet, digits, + the main job's affine warps", lenet_net(train, 64, warps), 64, 31.6),
            ("CaffeNet, JPEG LMDB, Caffe transform", caffenet_net(jpegs, 32, CAFFE_TRANSFORM), 32, 1680.0),
            ("CaffeNet, JPEG LMDB, + augmentation", caffenet_net(jpegs, 32, CAFFE_TRANSFORM + " " + AUGMENTATION),
             32, 1680.0),
        ]
        for name, param, batch, stand_in_ms in cases:
            seconds, fraction, what = wait_fraction(param, args.iterations if batch == 64 else
                                                    max(2, args.iterations // 4), stand_in_ms)
            print(f"| {name} | {batch} | {what} | {seconds:.3f} | {100 * fraction:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
