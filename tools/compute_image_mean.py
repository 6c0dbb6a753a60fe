#!/usr/bin/env python
"""Caffe's compute_image_mean: the mean image of an LMDB -> .binaryproto.

A thin wrapper over `pycaffe-lite compute_image_mean` (same flags; --help lists them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycaffe_lite.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compute_image_mean", *sys.argv[1:]]))
