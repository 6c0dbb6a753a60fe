"""`import caffe` as pycaffe_lite, for code written for pycaffe that one cannot edit."""
import importlib
import importlib.util
import sys

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
    if "caffe" in sys.modules or importlib.util.find_spec("caffe") is not None:
        return False
    sys.modules["caffe"] = face
    for name, here in SUBMODULES.items():
        sys.modules["caffe." + name] = importlib.import_module(f"{_FACE}.{here}")
    sys.modules["caffe.pycaffe"] = face
    return True
