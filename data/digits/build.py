#!/usr/bin/env python
"""Build the embedded default dataset: scikit-learn's 8x8 digits as 28x28 LMDBs.

    python data/digits/build.py            # -> data/digits/digits_train_lmdb, digits_test_lmdb
    python data/digits/build.py --force    # rebuild (each database is replaced atomically)

The clone's command; the work is pycaffe_lite.data.digits (which see), so that an installed
package builds the same databases (`pycaffe-lite example lenet DIR`).
"""
import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from pycaffe_lite.data.digits import build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE),
                        help="folder for the two LMDBs, created if need be (default: data/digits)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the databases exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
