"""An ONNX graph under construction: the one place that makes nodes, initializers and inputs.

Each layer type's ONNX function (registered beside the layer with
`pycaffe_lite.layer.onnx_export`) writes its nodes through an OnnxGraph:

    @onnx_export("ReLU")
    def _relu_to_onnx(g, layer, bottoms, tops):      # bottoms, tops: ONNX tensor names
        g.node("Relu", bottoms, tops, name=layer.name)

`g.shape(tensor)` is the Caffe blob's shape behind a tensor name (the net as
built), `g.params(layer)` the layer's parameters as float32 host arrays.
`onnx` is an optional dependency, imported when a graph is made.
"""
import numpy as np

from ..backend import to_numpy


def onnx_modules():
    """(onnx, onnx.helper, onnx.numpy_helper), or a RuntimeError saying how to install onnx."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise RuntimeError(f"ONNX export needs the 'onnx' package ({exc}); pip install onnx") from None
    return onnx, helper, numpy_helper


class OnnxGraph:
    def __init__(self):
        self.onnx, self.helper, self.numpy_helper = onnx_modules()
        self.nodes, self.initializers, self.inputs = [], [], []
        self.shapes = {}          # ONNX tensor name -> the Caffe blob's shape
        self.used = set()

    def unique(self, name):
        """`name`, or `name__k` when it is taken."""
        candidate, k = name, 0
        while candidate in self.used:
            k += 1
            candidate = f"{name}__{k}"
        self.used.add(candidate)
        return candidate

    def tmp(self, layer_name, what):
        """A fresh name for an intermediate tensor of one layer."""
        return self.unique(f"{layer_name}/{what}")

    def shape(self, tensor):
        return tuple(self.shapes[tensor])

    def const(self, name, array):
        """An initializer holding `array`; returns its tensor name."""
        tensor_name = self.unique(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), tensor_name))
        return tensor_name

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=name, **attrs))

    def input(self, tensor, shape):
        """A float graph input of a static shape."""
        self.inputs.append(self.helper.make_tensor_value_info(tensor, self.onnx.TensorProto.FLOAT, list(shape)))

    def reshape(self, name, x, y, shape):
        """y = x reshaped to a static shape."""
        self.node("Reshape", [x, self.const(f"{name}/shape", np.array(shape, np.int64))], [y], name=name)

    @staticmethod
    def params(layer):
        """The layer's parameter blobs as float32 host arrays."""
        return [np.asarray(to_numpy(b.data), np.float32) for b in layer.blobs]
