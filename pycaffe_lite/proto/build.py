"""Regenerate ``caffe_pb2.py`` from ``proto/caffe.proto``.

    python -m pycaffe_lite.proto.build          # rewrite the committed module
    python -m pycaffe_lite.proto.build OUT_DIR  # write OUT_DIR/caffe_pb2.py

Uses the protoc bundled with ``grpcio-tools`` (a development dependency
only: the generated module needs nothing but ``protobuf`` at run time).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
PROTO_FILE = REPO_ROOT / "proto" / "caffe.proto"
GENERATED_NAME = "caffe_pb2.py"


def generate(out_dir, proto_file=PROTO_FILE) -> Path:
    """Compile ``proto_file`` into ``out_dir/caffe_pb2.py``; return its path.

    The module is written to a temporary file and renamed into place, so an
    interrupted run never leaves a truncated ``caffe_pb2.py`` behind.
    """
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise RuntimeError(
            "regenerating caffe_pb2 needs grpcio-tools: pip install grpcio-tools"
        ) from exc

    proto_file = Path(proto_file).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="caffe_pb2_") as tmp:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto_file.parent}",
            f"--python_out={tmp}",
            str(proto_file),
        ])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto_file} (exit status {rc})")
        produced = Path(tmp) / (proto_file.stem + "_pb2.py")
        target = out_dir / GENERATED_NAME
        fd, staging = tempfile.mkstemp(prefix=".caffe_pb2.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            shutil.copyfile(produced, staging)
            os.replace(staging, target)
        except BaseException:
            if os.path.exists(staging):
                os.unlink(staging)
            raise
    return target


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else PACKAGE_DIR
    generate(out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
