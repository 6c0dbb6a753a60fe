#!/usr/bin/env python
"""Fetch MNIST and convert it to LMDBs, as Caffe's get_mnist.sh + create_mnist.sh do.

    python data/mnist/get_mnist.py          # -> data/mnist/mnist_train_lmdb, mnist_test_lmdb

The four IDX files (.gz) are downloaded from the first mirror that answers,
checked against their MD5 sums, and kept in data/mnist/.  Without network
access, download them elsewhere and copy them into data/mnist/ (the script
then only converts), or use the embedded digits set instead:
`python data/digits/build.py`.
"""
import argparse
import hashlib
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from pycaffe_lite.data.convert import convert_mnist  # noqa: E402

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name, folder, timeout=30):
    """Download one file (atomically) from the first mirror that works; return its path."""
    target = folder / name
    if target.exists():
        if md5(target) == FILES[name]:
            return target
        logging.warning("%s has the wrong MD5 sum; downloading it again", target)
    errors = []
    for mirror in MIRRORS:
        url = mirror + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while True:
                    block = response.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
            if md5(tmp) != FILES[name]:
                errors.append(f"{url}: MD5 mismatch")
                os.unlink(tmp)
                continue
            os.replace(tmp, target)
            logging.info("downloaded %s", url)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(
        f"could not download {name}; this machine may have no network access.\n  "
        + "\n  ".join(errors)
        + f"\nDownload the four MNIST files ({', '.join(FILES)}) elsewhere, copy them into {folder}, "
          "and run this script again; or use the embedded digits set: python data/digits/build.py")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE), help="folder for the downloads and LMDBs (default: data/mnist)")
    parser.add_argument("--force", action="store_true", help="rebuild the LMDBs even if they exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = {name: fetch(name, folder) for name in FILES}
    except RuntimeError as exc:
        print(f"get_mnist: {exc}", file=sys.stderr)
        return 1
    for split, prefix in (("train", "train"), ("test", "t10k")):
        db = folder / f"mnist_{split}_lmdb"
        if db.exists() and not args.force:
            logging.info("%s exists (use --force to rebuild)", db)
            continue
        convert_mnist(paths[f"{prefix}-images-idx3-ubyte.gz"], paths[f"{prefix}-labels-idx1-ubyte.gz"], db,
                      overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
