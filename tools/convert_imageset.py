#!/usr/bin/env python
"""Caffe's convert_imageset: images listed in a text file -> an LMDB of Datums.

A thin wrapper over `pycaffe-lite convert_imageset` (same flags; --help lists them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycaffe_lite.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["convert_imageset", *sys.argv[1:]]))
