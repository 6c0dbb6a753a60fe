"""Atomic writes: all or nothing, with the permissions a plain open() gives."""
import os
import stat

import pytest

from pycaffe_lite.io_utils import atomic_write, write_bytes_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.caffemodel"
    write_bytes_atomic(target, b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["model.caffemodel"]


def test_written_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "mean.binaryproto", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "mean.binaryproto").st_mode) == 0o644
