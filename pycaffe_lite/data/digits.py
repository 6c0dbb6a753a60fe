"""The embedded default dataset: scikit-learn's 8x8 digits as 28x28 MNIST-style LMDBs.

    from pycaffe_lite.data import digits
    train, test = digits.build("data/digits")     # digits_train_lmdb, digits_test_lmdb

sklearn.datasets.load_digits ships 1797 8x8 images with values 0..16.  Each
is scaled by 255/16, upscaled to 28x28 with OpenCV's INTER_LINEAR geometry
(computed in float64: horizontal pass, then vertical) and rounded to uint8,
which reproduces the images of ../shared/fixtures/caffe_e2e bit for bit.
Split (fixed, deterministic): images 0..1499 train, 1500..1796 test.
Records are MNIST-style Datums (1x28x28 uint8, keys "%08d"), so LeNet's
prototxt reads them with `scale: 0.00390625` like MNIST.

In the package (not only in the clone's data/digits/build.py) so that
`pycaffe-lite example lenet DIR` builds them wherever pycaffe_lite is installed.
"""
import logging
from pathlib import Path

import numpy as np

from .convert import mnist_datum
from .lmdb_io import LMDBWriter

log = logging.getLogger("pycaffe_lite.data.digits")

SIZE = 28
NUM_TRAIN = 1500


def _linear_taps(n_in, n_out):
    """Source indices and weights of OpenCV's INTER_LINEAR (half-pixel centres, edges clamped)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(int)
    frac = src - i0
    frac = np.where(i0 < 0, 0.0, frac)
    i0 = np.maximum(i0, 0)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac


def upscale(image, size=SIZE):
    """8x8 float64 -> size x size float64, bilinear, columns first then rows."""
    r0, r1, fr = _linear_taps(image.shape[0], size)
    c0, c1, fc = _linear_taps(image.shape[1], size)
    cols = image[:, c0] * (1 - fc)[None] + image[:, c1] * fc[None]
    return cols[r0] * (1 - fr)[:, None] + cols[r1] * fr[:, None]


def load_digits_arrays():
    """sklearn's digits as (images (1797, 8, 8) float64 0..16, labels).

    Reads the CSV that scikit-learn ships (what load_digits parses) without
    importing scikit-learn itself, which takes seconds; falls back to
    load_digits if the file is not where it used to be.
    """
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("the digits set comes from scikit-learn: pip install scikit-learn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.exists():
        table = np.loadtxt(csv, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images.astype(np.float64), digits.target.astype(np.int64)


def digits_images():
    """(images (1797, 28, 28) uint8, labels (1797,))."""
    raw, labels = load_digits_arrays()
    scaled = raw * (255.0 / 16.0)
    images = np.stack([np.clip(np.rint(upscale(im)), 0, 255).astype(np.uint8) for im in scaled])
    return images, labels


def write_lmdb(path, images, labels, overwrite):
    with LMDBWriter(path, overwrite=overwrite) as db:
        for i, (image, label) in enumerate(zip(images, labels)):
            db.put(f"{i:08d}".encode(), mnist_datum(image.ravel(), SIZE, SIZE, label).SerializeToString())


def build(out_dir, force=False):
    """Write out_dir/digits_train_lmdb and digits_test_lmdb (kept when both exist, unless `force`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = out_dir / "digits_train_lmdb", out_dir / "digits_test_lmdb"
    if train.exists() and test.exists() and not force:
        log.info("%s and %s exist (use --force to rebuild)", train, test)
        return train, test
    images, labels = digits_images()
    write_lmdb(train, images[:NUM_TRAIN], labels[:NUM_TRAIN], overwrite=True)
    write_lmdb(test, images[NUM_TRAIN:], labels[NUM_TRAIN:], overwrite=True)
    log.info("wrote %s (%d images) and %s (%d images)", train, NUM_TRAIN, test, len(images) - NUM_TRAIN)
    return train, test
