"""The kernels package: one switch, and every Numba kernel names its NumPy reference (kernels.REFERENCES),
which the engine, layer and solver tests compare it with."""
import importlib

import pytest

from pycaffe_lite import kernels


@pytest.mark.parametrize("name", sorted(kernels.REFERENCES))
def test_every_kernel_names_a_reference_that_exists(name):
    assert callable(kernels.reference(name)), kernels.REFERENCES[name]
    if kernels.HAVE_NUMBA:
        module, _, attr = name.partition(".")
        assert callable(getattr(importlib.import_module(f"pycaffe_lite.kernels.{module}"), attr)), name


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba is not installed")
def test_every_compiled_kernel_is_listed():
    from numba.core.dispatcher import Dispatcher
    from pycaffe_lite.kernels import conv, elementwise
    def compiled(module):
        return {n for n, v in vars(module).items()
                if isinstance(v, Dispatcher) and v.py_func.__module__ == module.__name__}
    # conv's public kernels (its _helpers are pieces of them, the Winograd codelets their parts);
    # elementwise's kernels are private to it, behind its dispatching functions
    found = {f"conv.{n}" for n in compiled(conv) if not n.startswith("_")}
    found |= {f"elementwise.{n}" for n in compiled(elementwise)}
    assert found and found <= set(kernels.REFERENCES), sorted(found - set(kernels.REFERENCES))
