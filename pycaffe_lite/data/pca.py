"""PCA lighting statistics for AlexNet's colour augmentation (`lighting`).

    eigval, eigvec, mean = compute_pca_lighting("train_lmdb", "pca.yaml")

Pixels are taken in the units and channel order of the stored images (0..255,
BGR for Caffe's colour LMDBs), which is what the augmentation works on.
"""
import logging
import os

import numpy as np

from .convert import _datum_values
from .datum import DataError, parse_datum
from .lmdb_io import iter_lmdb, lmdb_size

log = logging.getLogger("pycaffe_lite.data")


def compute_pca_lighting(db_name, output_file=None, max_images=0, pixels_per_image=0, seed=0, progress=None):
    """Eigenvalues and eigenvectors of the pixel colour covariance over an LMDB's images.

    Pixels are in the units and channel order of the stored images (0..255,
    BGR for Caffe's colour LMDBs), which is what the `lighting` augmentation
    works on.  Returns (eigval (C,), eigvec (C, C) with eigvec[:, k] the k-th
    component, mean (C,)), largest eigenvalue first; with output_file, writes
    a YAML file usable as `lighting { pca_file }` or as an augmentation_file.
    progress(images_done, images_total) is called after each image.
    """
    source = os.fspath(db_name)
    to_read = None
    if progress:
        to_read = lmdb_size(source)
        to_read = min(to_read, max_images) if max_images else to_read
    rng = np.random.default_rng(seed)
    n = 0
    total = None
    outer = None
    images = 0
    for key, value in iter_lmdb(source):
        datum = parse_datum(value, source, key)
        shape, values = _datum_values(datum, source, key)
        pixels = values.reshape(shape[0], -1).T.astype(np.float64)   # (H*W, C)
        if pixels_per_image and len(pixels) > pixels_per_image:
            pixels = pixels[rng.choice(len(pixels), pixels_per_image, replace=False)]
        if total is None:
            total = np.zeros(shape[0])
            outer = np.zeros((shape[0], shape[0]))
        if pixels.shape[1] != len(total):
            raise DataError(f"record '{key.decode(errors='replace')}' of '{source}' has {pixels.shape[1]} "
                            f"channels, the first had {len(total)}", source, key)
        total += pixels.sum(axis=0)
        outer += pixels.T @ pixels
        n += len(pixels)
        images += 1
        if progress:
            progress(images, to_read)
        if max_images and images >= max_images:
            break
    if not n:
        raise DataError(f"LMDB '{source}' has no records", source)
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval = np.clip(eigval[order], 0, None)
    eigvec = eigvec[:, order]
    # A fixed sign per component (largest entry positive) makes the output reproducible.
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(eigvec.shape[1])])
    eigvec = eigvec * np.where(signs == 0, 1, signs)
    log.info("%d images, %d pixels; eigenvalues %s", images, n, " ".join(f"{v:.4g}" for v in eigval))
    if output_file:
        write_pca_yaml(output_file, eigval, eigvec, mean, source, images, n)
    return eigval, eigvec, mean


def write_pca_yaml(path, eigval, eigvec, mean, source="?", images=0, pixels=0):
    from ..io_utils import atomic_write

    def fmt(values):
        return "[" + ", ".join(f"{float(v):.9g}" for v in values) + "]"

    text = (
        "# PCA lighting statistics (AlexNet's colour augmentation), written by\n"
        "# `pycaffe-lite compute_pca_lighting`.\n"
        f"# database: {source}; images: {images}; pixels: {pixels}\n"
        "# Pixel units 0..255, channel order as stored (BGR for Caffe's colour LMDBs).\n"
        f"# channel mean: {fmt(mean)}\n"
        "# Use as transform_param { augmentation { lighting { pca_file: \"<this file>\" alphastd: 0.1 } } }\n"
        "# or as transform_param { augmentation_file: \"<this file>\" } (alphastd 0.1).\n"
        "lighting:\n"
        f"  eigval: {fmt(eigval)}\n"
        "  # row-major C x C: eigvec[c * C + k] = channel c of component k\n"
        f"  eigvec: {fmt(np.asarray(eigvec).ravel())}\n")
    with atomic_write(path, "w") as handle:
        handle.write(text)
