"""Skipping rules and fixtures shared by the GPU tests.

Every test that needs a device takes the `cp` fixture (or calls require_cupy()),
which skips with the reason when CuPy is not installed, CUDA is unusable, or
no device is visible; the modules also carry `pytest.mark.gpu`, so
`pytest -m gpu` runs exactly them and `pytest -m "not gpu"` leaves them out.
"""
import pytest

from conftest import require_cupy
from pycaffe_lite import backend


@pytest.fixture
def cp():
    return require_cupy()


@pytest.fixture
def gpu_mode(cp):
    """GPU mode on device 0 for the test, CPU mode again afterwards."""
    backend.set_device(0)
    backend.set_mode_gpu()
    try:
        yield cp
    finally:
        backend.set_mode_cpu()


@pytest.fixture
def cpu_mode():
    backend.set_mode_cpu()
    yield
    backend.set_mode_cpu()


def rel_err(ours, reference):
    import numpy as np
    ours = np.asarray(backend.to_numpy(ours), np.float64)
    reference = np.asarray(backend.to_numpy(reference), np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    if not reference.size:
        return 0.0
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))
