"""pycaffe_lite: Caffe's workflow in Python.  `import pycaffe_lite as caffe`
is a drop-in for pycaffe.

    import pycaffe_lite as caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
    out = net.forward(data=images)              # {output blob: array}
    solver = caffe.get_solver("solver.prototxt"); solver.step(100)

The solver classes (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
AdaDeltaSolver, AdamSolver, get_solver) come from `pycaffe_lite.solvers`,
imported the first time one of them is asked for.
"""
import logging as _logging
import sys as _sys
import time as _time

from .cli import _startup  # noqa: F401  (first: Ctrl-C while `pycaffe-lite` imports is one line, exit 130)

from . import data as _data_config
from . import layers as _layer_implementations  # noqa: F401  (importing registers every built-in layer)
from . import proto  # noqa: F401  (caffe.proto.caffe_pb2)
from .backend import set_device, set_memory_limit, set_mode_cpu, set_mode_gpu, set_random_seed
from .blob import Blob, MemoryLimitError
from .io_utils import FormatError, MissingFileError
from .layer import Layer, layer_type_list, register
from .layers.core import before_python_layer_import
from .net import TEST, TRAIN, Net, allow_python_layers
from .proto import caffe_pb2
from .pycaffe import classifier, coord_map, detector, draw, io, net_spec  # noqa: F401  (caffe.io, caffe.draw, ...)
from .pycaffe.alias import SUBMODULES as _PYCAFFE_SUBMODULES, alias_as_caffe
from .pycaffe.classifier import Classifier
from .pycaffe.detector import Detector
# As BVLC's caffe/__init__.py: `caffe.layers` is NetSpec's layer factory L (L.Convolution(...)), bound
# after the implementation package was imported; that package is reached by module path
# (`from pycaffe_lite.layers.conv import ...`, importlib), never as the attribute `pycaffe_lite.layers`.
from .pycaffe.net_spec import NetSpec, layers, params, to_proto

before_python_layer_import(alias_as_caffe)
# `import pycaffe_lite.io`, `from pycaffe_lite.classifier import Classifier`: pycaffe's module names
for _name, _here in _PYCAFFE_SUBMODULES.items():
    if _here.startswith("pycaffe."):
        _sys.modules.setdefault(f"{__name__}.{_name}", _sys.modules[f"{__name__}.{_here}"])
del _name, _here

__version__ = "0.1.0"   # the one place: setup.py reads this line

_LAZY = {"NCCL": "distributed"}
_SOLVER_NAMES = ("SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "Solver", "get_solver")


def __getattr__(name):
    """Solvers are looked up lazily in pycaffe_lite.solvers (no import cycle, no cost until used)."""
    if name in _SOLVER_NAMES:
        from . import solvers
        try:
            value = getattr(solvers, name)
        except AttributeError:
            raise AttributeError(f"pycaffe_lite.solvers does not provide {name} yet") from None
        globals()[name] = value
        return value
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pycaffe_lite' has no attribute '{name}'")


# ---- small parts of pycaffe's _caffe surface -------------------------------------
def init_log(level=0, use_stderr=False):
    """pycaffe's init_log: route pycaffe_lite's log (Caffe-style lines) to stderr at `level`.

    level: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL (glog's numbering).
    """
    logger = _logging.getLogger("pycaffe_lite")
    logger.setLevel({0: _logging.INFO, 1: _logging.WARNING, 2: _logging.ERROR}.get(level, _logging.CRITICAL))
    if not logger.handlers:
        logger.addHandler(_logging.StreamHandler())


def log(message):
    """pycaffe's caffe.log: one INFO line in the pycaffe_lite log."""
    _logging.getLogger("pycaffe_lite").info(message)


def has_nccl():
    """True when CuPy can reach NCCL (pycaffe: built with USE_NCCL)."""
    try:
        from .distributed.nccl import nccl_module
        nccl_module()
    except RuntimeError:
        return False
    return True


def solver_count():
    return _data_config.solver_count()


def set_solver_count(count):
    """Caffe::set_solver_count: how many solvers (ranks) train one model; call it before building
    the solver (its Data layers read it).  A count above 1 needs caffe.NCCL(solver, uid)."""
    if int(count) < 1:
        raise ValueError(f"solver_count must be at least 1, got {count}")
    _data_config.set_solver_count(count)


def solver_rank():
    return _data_config.solver_rank()


def set_solver_rank(rank):
    if not 0 <= int(rank) < max(1, solver_count()):
        raise ValueError(f"solver_rank must be in 0..{solver_count() - 1} (solver_count is {solver_count()}), "
                         f"got {rank}: call set_solver_count first")
    _data_config.set_solver_rank(rank)


_multiprocess = {"on": False}


def set_multiprocess(multiprocess):
    """Caffe::set_multiprocess: each solver in its own process (always so here)."""
    _multiprocess["on"] = bool(multiprocess)


def multiprocess():
    return _multiprocess["on"]


class Timer:
    """pycaffe's Timer: start(), stop(), ms (milliseconds between them)."""

    def __init__(self):
        self._start = None
        self._ms = 0.0

    def start(self):
        self._start = _time.perf_counter()

    def stop(self):
        if self._start is not None:
            self._ms = (_time.perf_counter() - self._start) * 1000.0
            self._start = None

    @property
    def ms(self):
        return self._ms


__all__ = [
    "TEST",
    "TRAIN",
    "Blob",
    "Classifier",
    "Detector",
    "FormatError",
    "Layer",
    "MemoryLimitError",
    "MissingFileError",
    "Net",
    "NetSpec",
    "Timer",
    "__version__",
    "alias_as_caffe",
    "allow_python_layers",
    "caffe_pb2",
    "has_nccl",
    "init_log",
    "io",
    "layer_type_list",
    "layers",
    "log",
    "params",
    "proto",
    "register",
    "set_device",
    "set_memory_limit",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_multiprocess",
    "set_random_seed",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
    "to_proto",
]
# The solver names are left out of __all__: they resolve lazily through __getattr__.
