"""Layers the Net itself relies on: Input, Split, Silence, DummyData, Python."""
import importlib

from .. import fillers
from ..backend import get_array_module
from ..geometry import SAME
from ..layer import Layer, onnx_export, register
from ..proto import caffe_pb2


def _shape(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


def _per_top(values, num_top, layer, what):
    """Caffe's rule for repeated settings: none, one for all tops, or one per top."""
    if len(values) not in (0, 1, num_top):
        raise ValueError(layer.error(f"needs 0, 1 or {num_top} {what} (one per top), got {len(values)}"))
    return [values[0] if len(values) == 1 else values[i] for i in range(num_top)] if values else None


@register("Input")
class InputLayer(Layer):
    """Net inputs: tops shaped by `input_param { shape }`, filled from Python."""
    num_bottom = (0, 0)
    num_top = (1, None)

    def setup(self, bottom, top):
        shapes = _per_top(self.layer_param.input_param.shape, len(top), self, "input shapes")
        for blob, shape in zip(top, shapes or []):
            blob.reshape(_shape(shape))

    def reshape(self, bottom, top):
        pass  # the shape is whatever the user last set

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Split", v1="SPLIT")
class SplitLayer(Layer):
    """One bottom shared by several tops; the gradients of the tops add up."""
    num_bottom = (1, 1)
    num_top = (1, None)
    field = SAME

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        for blob in top:
            blob.share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        total = top[0].diff.copy()
        for blob in top[1:]:
            total += blob.diff
        bottom[0].diff = total


@register("Silence", v1="SILENCE")
class SilenceLayer(Layer):
    """Swallows its bottoms (so they are not net outputs); passes zero gradients."""
    num_bottom = (1, None)
    num_top = (0, 0)
    field = SAME

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff[...] = 0


@register("DummyData", v1="DUMMY_DATA")
class DummyDataLayer(Layer):
    """Tops filled by `dummy_data_param` fillers; non-constant fillers refill every forward."""
    num_bottom = (0, 0)
    num_top = (1, None)

    def setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = [list(v) for v in (p.num, p.channels, p.height, p.width)]
        if any(legacy):
            if p.shape:
                raise ValueError(self.error("uses both shape and num/channels/height/width; use one"))
            dims = [_per_top(v, n, self, name) for v, name in zip(legacy, ("num", "channels", "height", "width"))]
            if any(d is None for d in dims):
                raise ValueError(self.error("needs all of num, channels, height and width"))
            shapes = [tuple(d[i] for d in dims) for i in range(n)]
        else:
            shapes = [_shape(s) for s in (_per_top(p.shape, n, self, "shapes") or [])]
            if len(shapes) != n:
                raise ValueError(self.error(f"needs a shape for its {n} top(s)"))
        self.fillers = _per_top(p.data_filler, n, self, "data_filler") or [caffe_pb2.FillerParameter()] * n
        self.refill = [f.type != "constant" for f in self.fillers]
        for blob, shape, filler in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            self.fill_blob(blob, filler)     # in the net's order of random draws

    def _fill(self, blob, filler):
        xp = get_array_module(blob.data)
        blob.data[...] = xp.asarray(fillers.fill(filler, blob.shape, blob.dtype))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                self._fill(blob, filler)

    def backward(self, top, propagate_down, bottom):
        pass


_before_python_import = []


def before_python_layer_import(hook):
    """Call `hook()` before a Python layer's module is imported.  The package face registers
    alias_as_caffe, so that layers written for pycaffe can `import caffe` (Caffe's own examples do)."""
    if hook not in _before_python_import:
        _before_python_import.append(hook)


def python_layer_class(layer_param):
    """The user's class named by python_param { module layer } (importing runs its code)."""
    p = layer_param.python_param
    for hook in _before_python_import:
        hook()
    try:
        module = importlib.import_module(p.module)
    except ImportError as exc:
        raise ValueError(f"layer '{layer_param.name}' (type Python): cannot import module "
                         f"'{p.module}': {exc}") from exc
    try:
        return getattr(module, p.layer)
    except AttributeError:
        raise ValueError(f"layer '{layer_param.name}' (type Python): module '{p.module}' "
                         f"has no class '{p.layer}'") from None


@register("Python")
class PythonLayer(Layer):
    """`type: "Python"`: builds the user's Layer subclass from python_param, as pycaffe does."""
    field = SAME

    def __new__(cls, layer_param=None, phase=None):
        if cls is PythonLayer and layer_param is not None:
            user_class = python_layer_class(layer_param)
            if not (isinstance(user_class, type) and issubclass(user_class, Layer)):
                raise ValueError(f"layer '{layer_param.name}': {layer_param.python_param.module}."
                                 f"{layer_param.python_param.layer} must subclass pycaffe_lite.Layer")
            layer = user_class.__new__(user_class)
            layer.__init__(layer_param, phase)
            layer.type = "Python"
            return layer
        return super().__new__(cls)


# ---- ONNX ---------------------------------------------------------------------
@onnx_export("Input")
def _input_to_onnx(g, layer, bottoms, tops):
    for top in tops:
        g.input(top, g.shape(top))


@onnx_export("Split")
def _split_to_onnx(g, layer, bottoms, tops):
    for top in tops:
        g.node("Identity", bottoms[:1], [top], name=f"{layer.name}/{top}")


@onnx_export("Silence")
def _silence_to_onnx(g, layer, bottoms, tops):
    pass
