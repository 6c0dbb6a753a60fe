"""Layer base class and the layer registry.

A layer is pycaffe's four methods, for built-in and Python layers alike:

    setup(bottom, top)                     read parameters, create self.blobs
    reshape(bottom, top)                   shape the tops (and any buffers)
    forward(bottom, top)                   top.data from bottom.data
    backward(top, propagate_down, bottom)  bottom.diff (assigned) and the
                                           parameter diffs (accumulated, +=)

The Net calls the wrappers `SetUp`, `Forward` and `Backward`, which check
the blob counts declared as class attributes before any layer code runs
(Caffe's Layer::SetUp), and keep the loss bookkeeping.  A new layer type is
one decorated class:

    @register("AbsVal", v1="ABSVAL")
    class AbsValLayer(NeuronLayer):
        def forward(self, bottom, top): ...
"""
import contextlib
import importlib
import threading

import numpy as np

from .blob import Blob
from .geometry import SAME
from .kernels.quantize import NEAREST, FixedPoint
from .proto import caffe_pb2, upgrade

_REGISTRY = {}
_V1_NAMES = {}
_ONNX_EXPORTS = {}


def register(type_name, v1=None):
    """Class decorator: make the class the layer for prototxt `type: "<type_name>"`.

    `v1` is the legacy V1LayerParameter enum name (e.g. "CONVOLUTION"), used
    when old nets are upgraded.
    """
    def decorate(cls):
        if type_name in _REGISTRY:
            raise ValueError(f"layer type '{type_name}' is registered twice "
                             f"({_REGISTRY[type_name].__module__} and {cls.__module__})")
        cls.type = type_name
        _REGISTRY[type_name] = cls
        if v1:
            _V1_NAMES[v1] = type_name
        return cls
    return decorate


def _load_builtin_layers():
    # Importing the package registers every layer.  By module path, not `from . import
    # layers`: the package attribute `layers` is pycaffe's NetSpec `L` once __init__ ran.
    importlib.import_module(f"{__package__}.layers")


def layer_type_list():
    _load_builtin_layers()
    return sorted(_REGISTRY)


def v1_type_names():
    """V1 enum name -> type string, for the legacy upgrade."""
    _load_builtin_layers()
    return dict(_V1_NAMES)


upgrade.register_v1_names(v1_type_names)   # legacy nets upgrade to the registered types


def onnx_export(*type_names):
    """Function decorator, beside the layer: `fn(g, layer, bottoms, tops)` writes the ONNX nodes of
    a layer of these types into g, a proto.onnx_graph.OnnxGraph (bottoms and tops: tensor names)."""
    def decorate(fn):
        for type_name in type_names:
            if type_name in _ONNX_EXPORTS:
                raise ValueError(f"layer type '{type_name}' has two ONNX exports "
                                 f"({_ONNX_EXPORTS[type_name].__module__} and {fn.__module__})")
            _ONNX_EXPORTS[type_name] = fn
        return fn
    return decorate


def onnx_exporter(type_name):
    """The ONNX function registered for a layer type, or None (a type with no inference meaning)."""
    _load_builtin_layers()
    return _ONNX_EXPORTS.get(type_name)


def layer_class(type_name, layer_name="?"):
    _load_builtin_layers()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise ValueError(f"layer '{layer_name}': unknown layer type '{type_name}'; known types: "
                         + ", ".join(sorted(_REGISTRY))) from None


def create_layer(layer_param, phase=None):
    """Build the registered layer for a LayerParameter (not yet set up)."""
    return layer_class(layer_param.type, layer_param.name)(layer_param, phase)


class BlobVec(list):
    """A layer's parameter blobs: a list, plus pycaffe's `add_blob(*shape)` for Python layers."""

    def add_blob(self, *shape):
        self.append(Blob(shape, np.float32))


class Layer:
    """Base of every layer.  Subclasses override setup/reshape/forward/backward.

    Blob-count rules (Caffe's ExactNumBottomBlobs & co.), checked before setup:
      num_bottom, num_top = (min, max), max None for unbounded
      equal_bottom_top    = True when #tops must equal #bottoms
      auto_top_blobs      = True to let the Net create missing anonymous tops
    """
    type = None
    num_bottom = (0, None)
    num_top = (0, None)
    equal_bottom_top = False
    auto_top_blobs = False
    fixed_point = None       # a FixedPoint when the layer trains in fixed point (see Forward)

    def __init__(self, layer_param=None, phase=None):
        # A private copy, as Caffe's layers keep one: setup may add ParamSpecs to it.
        self.layer_param = caffe_pb2.LayerParameter()
        if layer_param is not None:
            self.layer_param.CopyFrom(layer_param)
        self.name = self.layer_param.name
        self.phase = self.layer_param.phase if phase is None else phase
        self.blobs = BlobVec()   # learnable parameters (list of Blob)
        self.loss_weights = []   # one per top, set by SetUp
        self.param_propagate_down = []   # per parameter blob, set by the Net from lr_mult (missing: True)
        # Python layers read their configuration here, as in pycaffe.
        self.param_str = self.layer_param.python_param.param_str
        if self.layer_param.HasField("fixed_point_param"):   # else the Net may give the net's
            self.fixed_point = FixedPoint.from_param(self.layer_param.fixed_point_param)

    # ---- the four methods a layer writes --------------------------------
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement reshape")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(self.error("has no backward"))

    # ---- what the type says about itself, from its definition alone -----
    # Class methods, reached through the registry (`layer_class(type)`), so that tools
    # (surgery, convert, summary) know a layer without building the net.
    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        """The shapes of the parameter blobs SetUp creates, in order, from the definition and
        the bottoms' shapes.  With bottom_shapes None (unknown), a dimension the bottoms decide
        is None, and a whole shape is None when even its rank depends on them; the number of
        blobs is always known.  A layer with parameters overrides this (the default: none)."""
        return []

    @classmethod
    def madds(cls, layer_param, bottom_shapes, top_shapes):
        """Multiply-adds of one forward pass over the whole batch.  The default, 0, counts the
        layer as free, the usual convention for all but the products (convolution, inner product)."""
        return 0

    field = None       # a geometry.FieldStep for the layers whose step is always the same

    @classmethod
    def field_step(cls, layer_param, bottom_shapes):
        """How an output pixel's receptive field follows from the bottoms' (a geometry.FieldStep:
        the same pixels, a window, the whole input), or None when the layer does not say."""
        return cls.field

    # ---- hooks with Caffe's defaults ------------------------------------
    def allow_force_backward(self, bottom_index):
        return True

    def exact_num_top_blobs(self):
        return self.num_top[0] if self.num_top[0] == self.num_top[1] else None

    @property
    def is_loss(self):
        return False

    def after_update(self):
        """Called for every layer after each solver update (and net.update()): a layer whose
        parameters must stay in a format or range restores them here.  The default rounds
        them into the layer's fixed-point format, if any (so the update itself is rounded);
        binary layers also clip their latent weights to [-1, 1].  Caffe has no such hook."""
        self.trim_fixed_point_params()

    def packed_param(self, i):
        """(positive bits, scale or None, scale axis) when parameter blob i may be stored as
        sign bits in a packed weights file (Net.save(path, packed=True)); None: as floats."""

    # ---- what the Net calls ---------------------------------------------
    def SetUp(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def Forward(self, bottom, top):
        """reshape, forward, then the weighted loss this layer contributes (Caffe's Layer::Forward)."""
        self.reshape(bottom, top)
        fixed = self.fixed_point
        if fixed and fixed.weights:
            self.trim_fixed_point_params(NEAREST)    # loaded or user-set weights (exact when on the grid)
        self.forward(bottom, top)
        if fixed and fixed.activations:
            for blob in top:
                fixed.trim(blob.data)
        loss = 0.0
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                if not blob.has_diff:    # a new batch size reallocated the top: put the multiplier back
                    blob.diff[...] = weight
                loss += weight * float(blob.data.sum())
        return loss

    def Backward(self, top, propagate_down, bottom):
        self.backward(top, propagate_down, bottom)
        fixed = self.fixed_point
        if fixed and fixed.gradients:
            for blob, down in zip(bottom, propagate_down):
                if down:
                    fixed.trim(blob.diff)
            for i, blob in enumerate(self.blobs):
                if self.learns_param(i):
                    fixed.trim(blob.diff)

    def learns_param(self, i):
        """Whether parameter i gets a gradient (the Net's param_propagate_down, from lr_mult)."""
        flags = self.param_propagate_down
        return True if i >= len(flags) else bool(flags[i])

    def trim_fixed_point_params(self, rounding=None):
        """Round this layer's parameters into its fixed-point format in place (the solver
        calls it after each update, so the update itself is rounded; Forward with NEAREST)."""
        fixed = self.fixed_point
        if fixed and fixed.weights:
            for blob in self.blobs:
                fixed.trim(blob.data, rounding)

    def check_blob_counts(self, bottom, top):
        for what, blobs, (lo, hi) in (("bottom", bottom, self.num_bottom), ("top", top, self.num_top)):
            n = len(blobs)
            if n < lo or (hi is not None and n > hi):
                want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                raise ValueError(self.error(f"takes {want} {what} blob(s), got {n}"))
        if self.equal_bottom_top and len(bottom) != len(top):
            raise ValueError(self.error(f"needs as many tops as bottoms, got {len(bottom)} "
                                        f"bottom(s) and {len(top)} top(s)"))

    def set_loss_weights(self, top):
        """loss_weight from the prototxt, defaulting to 1 for a loss layer's first top."""
        given = list(self.layer_param.loss_weight)
        if given and len(given) != len(top):
            raise ValueError(self.error(f"has {len(given)} loss_weight values for {len(top)} tops"))
        if not given:
            given = [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(len(top))]
        self.loss_weights = given
        for blob, weight in zip(top, given):
            if weight:
                blob.diff[...] = weight   # Caffe keeps the weight in the top's diff

    # ---- helpers for layer code -----------------------------------------
    def error(self, message):
        return f"layer '{self.name}' (type {self.type}) {message}"

    def saved_input(self, bottom, top):
        """bottom[0]'s data as backward will need it: the array itself, or, when the layer
        runs in place (its top overwrites it), a copy in a buffer the layer reuses (a fresh
        copy each pass page-faults on every first touch)."""
        from .backend import get_array_module, reused
        x = bottom[0].data
        if top[0] is not bottom[0]:
            return x
        saved = self._saved_input = reused(getattr(self, "_saved_input", None), x.shape, x.dtype,
                                           get_array_module(x))
        saved[...] = x
        return saved

    def param_arrays(self):
        """The parameter arrays forward and backward compute with: the blobs' own here; a
        quantizing subclass (layers/ristretto.py) returns trimmed copies while the blobs
        keep the full-precision values the solver updates."""
        return [blob.data for blob in self.blobs]

    def make_blob(self, shape, dtype, like=None):
        """A parameter or buffer blob on the same device as `like`'s data."""
        from .backend import get_array_module
        xp = get_array_module(like.data) if like is not None else None
        return Blob(shape, dtype, xp=xp)

    def fill_param(self, shape, filler, dtype, like=None):
        """A new parameter blob filled by a FillerParameter (after the whole net is set up, when a Net
        is being built: see deferred_fills)."""
        blob = self.make_blob(shape, dtype, like)
        self.fill_blob(blob, filler)
        return blob

    @staticmethod
    def fill_blob(blob, filler):
        """Fill `blob` by a FillerParameter now, or, while a Net is built, once every layer is set up."""
        pending = getattr(_deferred, "fills", None)
        if pending is not None:
            pending.append((blob, filler))
        else:
            _fill_now(blob, filler)


def normalization_mode(loss_param, default):
    """The NormalizationMode in force: `normalization` if set, else the legacy `normalize`
    (true = VALID, false = BATCH_SIZE), else `default`."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return caffe_pb2.LossParameter.VALID if loss_param.normalize else caffe_pb2.LossParameter.BATCH_SIZE
    return default


_deferred = threading.local()


def _fill_now(blob, filler):
    from .fillers import fill
    blob.data[...] = blob._xp.asarray(fill(filler, blob.shape, blob.dtype))


@contextlib.contextmanager
def deferred_fills():
    """While a Net is built, fillers wait until every layer is set up, then run in the order they were
    asked for (the random draws come as before): a net that a later layer refuses is refused before
    minutes of filling a large parameter.  Yields the list to run with run_fills, or None inside a
    net already being built (a recurrent layer's unrolled net), whose fills join the outer net's."""
    if getattr(_deferred, "fills", None) is not None:
        yield None
        return
    _deferred.fills = []
    try:
        yield _deferred.fills
    finally:
        _deferred.fills = None


def run_fills(fills):
    _deferred.fills = None    # fills are immediate again
    for blob, filler in fills:
        _fill_now(blob, filler)
    fills.clear()


class LossLayer(Layer):
    """Loss layers: (prediction, label[, ...]) -> a scalar; no gradient to the label.

    A loss that reads loss_param's `ignore_label` and `normalization` (SoftmaxWithLoss,
    SigmoidCrossEntropyLoss, InfogainLoss) names its default mode in `normalization`; setup
    then sets `self.ignore_label` (None when unset) and `self.mode`, as Caffe's losses read them.
    """
    num_bottom = (2, 2)
    num_top = (1, 1)
    auto_top_blobs = True
    normalization = None     # a LossParameter.NormalizationMode, or None for a loss without these fields

    def setup(self, bottom, top):
        if self.normalization is not None:
            p = self.layer_param.loss_param
            self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
            self.mode = normalization_mode(p, self.normalization)

    @property
    def is_loss(self):
        return True

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise ValueError(self.error(f"needs the same number of predictions and labels, got shapes "
                                        f"{bottom[0].shape} and {bottom[1].shape}"))
        top[0].reshape(())


class NeuronLayer(Layer):
    """Elementwise layers: one bottom, one top of the same shape (in-place allowed)."""
    num_bottom = (1, 1)
    num_top = (1, 1)
    field = SAME

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
