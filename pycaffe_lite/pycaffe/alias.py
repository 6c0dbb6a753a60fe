"""`import caffe` as pycaffe_lite, for code written for pycaffe that one cannot edit."""
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys

log = logging.getLogger("pycaffe_lite")

_FACE = __name__.split(".")[0]   # the package face, pycaffe's `caffe`
# pycaffe's submodules (caffe.<name>) and where they live here
SUBMODULES = {"proto": "proto", "proto.caffe_pb2": "proto.caffe_pb2", "io": "pycaffe.io", "draw": "pycaffe.draw",
              "net_spec": "pycaffe.net_spec", "classifier": "pycaffe.classifier", "detector": "pycaffe.detector",
              "coord_map": "pycaffe.coord_map"}


def alias_as_caffe():
    """Make `import caffe` (and `from caffe.proto import caffe_pb2`, `caffe.io`, ...) give
    pycaffe_lite, for code written for pycaffe that one cannot edit: Caffe's own Python layers
    and notebooks.  Nothing is done when a module named caffe can be imported already (a real
    pycaffe wins).  Loading a Python layer calls this; returns True when the alias is in place."""
    face = sys.modules[_FACE]
    if sys.modules.get("caffe") is face:
        return True
    if "caffe" in sys.modules:
        return False
    spec = importlib.util.find_spec("caffe")
    if spec is not None:
        checkout = _uncompiled_checkout(spec)
        if checkout is None:
            return False        # a working pycaffe: it wins
        log.warning("caffe at %s is BVLC's source without its compiled _caffe; `import caffe` gives "
                    "pycaffe_lite instead", checkout)
    sys.modules["caffe"] = face
    for name, here in SUBMODULES.items():
        sys.modules["caffe." + name] = importlib.import_module(f"{_FACE}.{here}")
    sys.modules["caffe.pycaffe"] = face
    return True


def _uncompiled_checkout(spec):
    """The folder of a `caffe` package that cannot work: pycaffe's sources (a BVLC checkout's python/caffe,
    which every example notebook puts on sys.path) without the compiled _caffe extension; else None."""
    folders = list(spec.submodule_search_locations or [])
    if not folders:
        return None
    folder = folders[0]
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    if any(name.startswith("_caffe") and name.endswith(suffixes) for name in names):
        return None
    return folder if "pycaffe.py" in names else None
