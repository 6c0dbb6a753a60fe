"""Python net specification, as pycaffe's caffe.net_spec.

Nets are written in a functional style and serialized to a NetParameter:

    from pycaffe_lite import layers as L, params as P, NetSpec
    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2,
                             transform_param=dict(scale=1. / 255))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=10)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    print(n.to_proto())            # text-format prototxt

Keyword arguments go to the layer's own `<type>_param` message when it has
that field (kernel_size -> convolution_param.kernel_size), else to the
LayerParameter itself (name, param, include, loss_weight, ...); arguments
ending in `param` are assigned to the LayerParameter as given.  Dicts become
messages, lists become repeated fields, a single value given to a repeated
field becomes a one-element list.  `ntop=k` makes k tops (0 gives the
Function itself), `in_place=True` reuses the bottom as the top.  Tops that
are not assigned to a NetSpec attribute get automatic names: the layer type
and a counter (Convolution1, ...), in the order they are reached.
"""
import collections

from google.protobuf.message import Message

from ..proto import caffe_pb2


def param_name_dict():
    """Layer type -> the prefix of its parameter field, e.g. 'InnerProduct' -> 'inner_product'.

    Found from LayerParameter's `*_param` fields and their message type names
    (InnerProductParameter -> inner_product_param), as pycaffe does.
    """
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


def to_proto(*tops):
    """A NetParameter with every layer needed to compute the given tops."""
    layers = collections.OrderedDict()
    autonames = collections.Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def assign_proto(proto, name, val):
    """Assign a Python value to field `name` of a protobuf message, recursively.

    Lists become repeated fields (of messages when they hold dicts), dicts become
    messages, a scalar given to a repeated field becomes a one-element list.
    """
    field = getattr(proto, name)
    is_repeated_field = hasattr(field, "extend")
    if is_repeated_field and not isinstance(val, (list, tuple)):
        val = [val]
    if isinstance(val, (list, tuple)):
        val = list(val)
        if val and isinstance(val[0], dict):
            for item in val:
                proto_item = field.add()
                for k, v in item.items():
                    assign_proto(proto_item, k, v)
        elif val and isinstance(val[0], Message):
            for item in val:
                field.add().CopyFrom(item)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(field, k, v)
    elif isinstance(val, Message):
        field.CopyFrom(val)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer (a Function may have several)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """A layer: its type, its inputs (Tops of other layers) and its parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, input_ in enumerate(inputs):
            if not isinstance(input_, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(input_)})")
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params):
        self.params.update(params)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)

        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)

        for k, v in self.params.items():
            if k.endswith("param"):
                # generic *param arguments (param, convolution_param, ...) go to the layer
                assign_proto(layer, k, v)
            else:
                try:
                    assign_proto(getattr(layer, _param_names[self.type_name] + "_param"), k, v)
                except (AttributeError, KeyError):
                    assign_proto(layer, k, v)

        layers[self] = layer


class NetSpec:
    """Tops assigned as attributes (or items) by name; to_proto() gives the NetParameter
    with every layer needed to compute them, named by the assigned names."""

    def __init__(self):
        super().__setattr__("tops", collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.tops[item]

    def __delattr__(self, name):
        del self.tops[name]

    def __delitem__(self, name):
        del self.tops[name]

    def update(self, name, params):
        """Add or change parameters of the layer that computes top `name`."""
        self.tops[name]._update(params)

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return list(self.tops)

    def vals(self):
        return list(self.tops.values())

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """A pseudo-module making layer functions: L.Convolution(bottom, kernel_size=3)
    is a Top for a 3x3 convolution of bottom (a tuple of Tops when ntop > 1, the
    Function when ntop == 0)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            elif fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """A pseudo-module of parameter constants: P.Pooling.MAX is
    caffe_pb2.PoolingParameter.MAX."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter")

        class Param:
            def __getattr__(self, param_name):
                return getattr(message, param_name)
        return Param()


_param_names = param_name_dict()
# Deconvolution has no DeconvolutionParameter: its settings live in convolution_param
# (pycaffe raises on L.Deconvolution(x, num_output=...); we route them there instead).
_param_names.setdefault("Deconvolution", "convolution")
layers = Layers()
params = Parameters()
