"""Small builders shared by the data-pipeline tests (images, list files, LMDBs, layers)."""
import threading
import time
from pathlib import Path

import numpy as np

from conftest import FIXTURES, REPO, fixture_path  # noqa: F401  (re-exported for the data tests)


def write_images(folder, n=8, size=(20, 24), color=True, ext="png", seed=0, vary=False):
    """n random images under folder/img, and a list file 'img/NNN.ext label'; returns (list path, paths)."""
    import cv2
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines, paths = [], []
    for i in range(n):
        h, w = size
        if vary:
            h, w = h + i % 3, w + (i * 2) % 5
        shape = (h, w, 3) if color else (h, w)
        # Smooth-ish content so JPEG keeps it recognisable, plus noise so every image differs.
        base = np.linspace(0, 200, h * w).reshape(h, w)
        image = base[..., None] if color else base
        image = np.clip(image + rng.integers(0, 55, size=shape), 0, 255).astype(np.uint8)
        name = f"img/{i:03d}.{ext}"
        cv2.imwrite(str(folder / name), image)
        lines.append(f"{name} {i % 5}")
        paths.append(folder / name)
    list_file = folder / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    return list_file, paths


def make_lmdb(folder, name="db", n=8, size=(20, 24), color=True, encoded=False, ext="png", **kw):
    """An LMDB written by our convert_imageset; returns its path."""
    from pycaffe_lite.data.convert import convert_imageset
    list_file, _ = write_images(folder, n, size, color, ext, **kw)
    db = Path(folder) / name
    convert_imageset(str(folder) + "/", str(list_file), str(db), gray=not color, encoded=encoded)
    return db


def layer_param(text):
    from google.protobuf import text_format
    from pycaffe_lite.proto import caffe_pb2
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def build_layer(text, phase=None, num_tops=2, dtype=np.float32):
    """Set up one layer from prototxt text; returns (layer, tops)."""
    import pycaffe_lite.layers  # noqa: F401  (registers every layer)
    from pycaffe_lite.blob import Blob
    from pycaffe_lite.layer import create_layer
    from pycaffe_lite.proto import caffe_pb2
    layer = create_layer(layer_param(text), caffe_pb2.TRAIN if phase is None else phase)
    tops = [Blob((), dtype) for _ in range(num_tops)]
    layer.SetUp([], tops)
    return layer, tops


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("prefetch:", "decode:")) and t.is_alive()]


def wait_no_prefetch_threads(timeout=5.0):
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return prefetch_threads()
