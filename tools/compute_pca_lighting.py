#!/usr/bin/env python
"""PCA of an LMDB's pixel colours, for the 'lighting' augmentation (AlexNet).

A thin wrapper over `pycaffe-lite compute_pca_lighting` (same flags; --help lists them).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycaffe_lite.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compute_pca_lighting", *sys.argv[1:]]))
