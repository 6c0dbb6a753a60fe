"""pycaffe_lite: Caffe's workflow in Python.  `import pycaffe_lite as caffe`
is a drop-in for pycaffe."""
from .backend import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .blob import Blob
from .layer import Layer, layer_type_list, register
from .net import TEST, TRAIN, Net, allow_python_layers
from .proto import caffe_pb2

__version__ = "0.1.0"

__all__ = ["Blob", "Layer", "Net", "TEST", "TRAIN", "__version__", "allow_python_layers", "caffe_pb2",
           "layer_type_list", "register", "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed"]
