"""Weight surgery for transfer learning, as pycaffe scripts do it by hand.

Copy weights by layer name from one or more caffemodels into a new net and
say what happened to every layer:

    net = caffe.Net("models/finetune_flickr_style/deploy.prototxt", caffe.TEST)
    report = transplant(net, ["bvlc_reference_caffenet.caffemodel"])
    print(report)          # copied: conv1..fc7; re-initialised: fc8_flickr (renamed from fc8)
    net.save("flickr_init.caffemodel")

Edit a net definition for fine-tuning:

    freeze(net_param, ["conv1", "conv2"])         # lr_mult 0 (and statistics fixed)
    freeze_below(net_param, "fc6")                # every learnable layer before fc6
    apply_lr_mult(net_param, "top=10,mid=1,bottom=1/10", new_layers={"fc8_flickr"})

Transform trained nets:

    fc_to_conv(net_param, weights)        # InnerProduct -> Convolution (Caffe's net_surgery)
    set_input_channels(net_param, weights, 1)     # RGB first conv -> grayscale

Every function works on NetParameter messages and {layer: [arrays]} weights,
so a big net's definition can be edited without building it.
"""
import collections
import fractions
import logging

import numpy as np

from ..layer import layer_class
from ..proto import caffe_pb2
from .convert import weights_to_arrays

log = logging.getLogger("pycaffe_lite")


# ---------------------------------------------------------------------------- learnable blobs
def num_param_blobs(layer):
    """How many parameter blobs Caffe's layer of this definition holds (its type says;
    an unknown type is an error naming the layer)."""
    return len(layer_class(layer.type, layer.name).param_shapes(layer))


def learnable_layers(net_param):
    """Names of the layers that hold parameters, in net order (each once)."""
    names, seen = [], set()
    for layer in net_param.layer:
        if num_param_blobs(layer) and layer.name not in seen:
            seen.add(layer.name)
            names.append(layer.name)
    return names


def _layers_named(net_param, name):
    found = [layer for layer in net_param.layer if layer.name == name]
    if not found:
        raise ValueError(f"net '{net_param.name}' has no layer named '{name}'; layers with "
                         f"parameters: {', '.join(learnable_layers(net_param))}")
    return found


def _param_specs(layer):
    """The layer's ParamSpecs, one per parameter blob (missing ones added with Caffe's defaults)."""
    count = num_param_blobs(layer)
    if not count:
        raise ValueError(f"layer '{layer.name}' of type {layer.type} has no parameters")
    while len(layer.param) < count:
        layer.param.add()
    return list(layer.param)[:count]


# ---------------------------------------------------------------------------- freezing, lr presets
def _spec_targets(net_param, name):
    """The ParamSpecs that freezing or multiplying layer `name` changes, as (layer index, param index).

    The layer's own (one per parameter blob), and every ParamSpec of any layer
    that shares a name with one of its named params: Caffe's Net::AppendParam
    refuses shared params whose lr_mult or decay_mult differ. Unnamed params
    are not shared. Also returns the other layers reached that way, in net order.
    """
    _layers_named(net_param, name)
    own = []
    for li, layer in enumerate(net_param.layer):
        if layer.name == name:
            own += [(li, pi) for pi in range(len(_param_specs(layer)))]
    shared = {net_param.layer[li].param[pi].name for li, pi in own} - {""}
    targets, seen, sharers = list(own), set(own), []
    if shared:
        for li, layer in enumerate(net_param.layer):
            for pi, spec in enumerate(layer.param):
                if spec.name in shared and (li, pi) not in seen:
                    seen.add((li, pi))
                    targets.append((li, pi))
                    if layer.name != name and layer.name not in sharers:
                        sharers.append(layer.name)
    return targets, sharers


def sharing_layers(net_param, name):
    """The other layers holding a ParamSpec that shares a name with one of layer `name`'s params."""
    return _spec_targets(net_param, name)[1]


def freeze(net_param, layer_names):
    """Freeze layers in place: lr_mult 0 and decay_mult 0 on every parameter.

    Params shared by name (`param { name: "conv1_w" }`) are frozen in every
    layer that shares them, as Caffe requires (see `sharing_layers`).
    A frozen BatchNorm also gets `use_global_stats: true`, so its statistics
    stay fixed in training as well (otherwise TRAIN forward passes update them).
    Returns the names frozen.
    """
    frozen = []
    for name in layer_names:
        targets, _ = _spec_targets(net_param, name)
        for li, pi in targets:
            spec = net_param.layer[li].param[pi]
            spec.lr_mult = 0
            spec.decay_mult = 0
        for li in sorted({li for li, _ in targets}):
            if net_param.layer[li].type == "BatchNorm":
                net_param.layer[li].batch_norm_param.use_global_stats = True
        frozen.append(name)
    return frozen


def freeze_below(net_param, layer_name):
    """Freeze every learnable layer before `layer_name` in the net (it stays trainable)."""
    order = learnable_layers(net_param)
    all_names = [layer.name for layer in net_param.layer]
    if layer_name not in all_names:
        raise ValueError(f"--freeze-below: net '{net_param.name}' has no layer named '{layer_name}'")
    boundary = all_names.index(layer_name)
    below = [name for name in order if all_names.index(name) < boundary]
    return freeze(net_param, below)


def parse_multiplier(text):
    """'10', '0.1', '1/10' -> float."""
    try:
        return float(fractions.Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"learning-rate multiplier '{text}' is not a number or a fraction like 1/10") from None


GROUPS = ("top", "mid", "bottom")


def lr_groups(net_param, new_layers=(), mid_from=None):
    """Split the learnable layers into top / mid / bottom for the lr presets.

    top: the new (re-initialised) layers, or the last learnable layer when
    there are none. The others, in net order, are cut in two: bottom is the
    first half, mid the second, unless `mid_from` names the first mid layer.
    """
    order = learnable_layers(net_param)
    frozen = {layer.name for layer in net_param.layer
              if num_param_blobs(layer) and layer.type != "BatchNorm"
              and all(s.lr_mult == 0 for s in layer.param[:num_param_blobs(layer)])
              and len(layer.param) >= num_param_blobs(layer)}
    top = [n for n in order if n in set(new_layers)] or order[-1:]
    rest = [n for n in order if n not in top]
    if mid_from is not None:
        if mid_from not in rest:
            raise ValueError(f"--mid-from '{mid_from}' is not a pre-trained learnable layer of "
                             f"net '{net_param.name}'")
        cut = rest.index(mid_from)
    else:
        cut = len(rest) // 2
    groups = {"top": top, "mid": rest[cut:], "bottom": rest[:cut]}
    return {g: [n for n in names if n not in frozen] for g, names in groups.items()}


def apply_lr_mult(net_param, spec, new_layers=(), mid_from=None):
    """Multiply layers' lr_mult in place; returns {layer: factor}.

    spec: 'top=10,mid=1,bottom=1/10' (groups from `lr_groups`), or layer names
    ('conv1=0.1,fc8=10'), or both. Each parameter's lr_mult is multiplied, so
    a bias keeps its usual 2x. A factor of 0 freezes the layer. Params shared
    by name are multiplied once, in every layer sharing them; two layers that
    share a param with different factors are an error.
    """
    factors = collections.OrderedDict()
    groups = None
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--lr-mult: expected NAME=FACTOR, got '{item}'")
        key, factor = key.strip(), parse_multiplier(value)
        if key in GROUPS:
            groups = groups or lr_groups(net_param, new_layers, mid_from)
            for name in groups[key]:
                factors[name] = factor
        else:
            _layers_named(net_param, key)
            factors[key] = factor
    # A param shared by name gets one factor, whichever of its layers names it.
    given = {}                        # (layer index, param index) -> (factor, layer that gave it)
    for name, factor in factors.items():
        targets, _ = _spec_targets(net_param, name)
        for li, pi in targets:
            if net_param.layer[li].type == "BatchNorm":
                continue   # statistics, not learned by the solver
            if (li, pi) in given:
                first, who = given[(li, pi)]
                if first != factor:
                    spec_name = net_param.layer[li].param[pi].name
                    raise ValueError(f"--lr-mult: layers '{who}' and '{name}' share param "
                                     f"'{spec_name}' but get different factors ({first:g} and "
                                     f"{factor:g}); give layers that share params the same factor")
                continue
            given[(li, pi)] = (factor, name)
    for name, factor in factors.items():
        if factor == 0:
            freeze(net_param, [name])
    for (li, pi), (factor, _name) in given.items():
        if factor != 0:
            spec_ = net_param.layer[li].param[pi]
            spec_.lr_mult = spec_.lr_mult * factor
    return factors


def frozen_layers(net_param):
    """Layers all of whose parameters have lr_mult 0."""
    out = []
    for layer in net_param.layer:
        count = num_param_blobs(layer)
        if count and len(layer.param) >= count and all(s.lr_mult == 0 for s in layer.param[:count]):
            out.append(layer.name)
    return out


# ---------------------------------------------------------------------------- weight transplant
class SurgeryReport:
    """What a transplant did to each layer of the target net."""

    def __init__(self):
        self.copied = collections.OrderedDict()         # target layer -> (source file, source layer)
        self.reinitialised = collections.OrderedDict()  # target layer -> reason
        self.ignored = collections.OrderedDict()        # source layer -> source file

    def as_dict(self):
        return {"copied": {k: {"from": f, "layer": s} for k, (f, s) in self.copied.items()},
                "reinitialised": dict(self.reinitialised),
                "ignored": dict(self.ignored)}

    def __str__(self):
        lines = [f"copied ({len(self.copied)}):"]
        for name, (origin, source) in self.copied.items():
            via = "" if source == name else f" (from layer '{source}')"
            lines.append(f"  {name:<24} <- {origin}{via}")
        lines.append(f"re-initialised ({len(self.reinitialised)}):")
        lines += [f"  {name:<24} {reason}" for name, reason in self.reinitialised.items()]
        lines.append(f"ignored ({len(self.ignored)}, in the weights but not in the net):")
        lines += [f"  {name:<24} {origin}" for name, origin in self.ignored.items()]
        return "\n".join(lines)


def _source_layers(weights):
    """[(origin, NetParameter)] for paths or NetParameters."""
    from ..proto.files import read_weights
    out = []
    for item in weights:
        if isinstance(item, caffe_pb2.NetParameter):
            out.append(("<NetParameter>", item))
        else:
            out.append((str(item), read_weights(str(item))))
    return out


def transplant(net, weights, rename=None, strict=False):
    """Copy parameters by layer name from `weights` (caffemodel paths or NetParameters) into `net`.

    Later files override earlier ones (Caffe's `--weights a,b`). `rename` maps
    a target layer to the source layer to copy from. Target layers with no
    source keep the values their fillers gave them and are reported as
    re-initialised: 'renamed from X' when a source layer of the same type
    reading the same bottoms exists under another name, 'new layer'
    otherwise, or 'shape mismatch' (an error with `strict`, as in Caffe).
    """
    rename = dict(rename or {})
    report = SurgeryReport()
    sources = _source_layers(weights)
    target = collections.OrderedDict(
        (name, layer) for name, layer in zip(net.layer_names, net.layers) if layer.blobs)
    for missing in set(rename) - set(target):
        raise ValueError(f"--map: the net has no layer '{missing}' with parameters")
    available = []            # source layers holding weights, in file order (each name once)
    for _origin, param in sources:
        available += [src.name for src in param.layer if src.blobs and src.name not in available]
    for new, old in rename.items():
        if old not in available:
            files = ", ".join(origin for origin, _ in sources)
            shown = ", ".join(available[:8]) + (f", ... ({len(available) - 8} more)"
                                                 if len(available) > 8 else "")
            raise ValueError(f"--map {new}={old}: no layer '{old}' with weights in {files}; "
                             f"its layers with weights: {shown or 'none'}")
    wanted = {rename.get(name, name): name for name in target}       # source name -> target name
    used = set()
    mismatch = {}
    from ..proto.blobs import blob_proto_shape, blob_proto_to_array, blob_shape_matches
    for origin, param in sources:
        for src in param.layer:
            if not src.blobs:
                continue
            name = wanted.get(src.name)
            if name is None:
                continue
            layer = target[name]
            shapes_ok = (len(src.blobs) == len(layer.blobs)
                         and all(blob_shape_matches(b.shape, p) for b, p in zip(layer.blobs, src.blobs)))
            if not shapes_ok:
                detail = (f"shape mismatch: '{src.name}' in {origin} has "
                          f"{[blob_proto_shape(p) for p in src.blobs]}, the net "
                          f"{[b.shape for b in layer.blobs]}")
                if strict:
                    raise ValueError(f"cannot copy layer '{name}': {detail}. Rename the layer to "
                                     "learn it from scratch.")
                mismatch[name] = detail
                used.add((origin, src.name))
                continue
            for blob, proto in zip(layer.blobs, src.blobs):
                blob.data[...] = blob._xp.asarray(blob_proto_to_array(proto).reshape(blob.shape))
            report.copied[name] = (origin, src.name)
            mismatch.pop(name, None)
            used.add((origin, src.name))
    # What was not copied, and why.
    unused = [(origin, src) for origin, param in sources for src in param.layer
              if src.blobs and (origin, src.name) not in used]
    for name, layer in target.items():
        if name in report.copied:
            continue
        if name in mismatch:
            report.reinitialised[name] = mismatch[name]
            continue
        bottoms = list(net.bottom_names.get(name, []))
        guess = next((src.name for origin, src in unused
                      if src.type == layer.type and list(src.bottom) == bottoms), None)
        if guess is None:   # bottoms may differ after Split insertion or in-place renames
            guess = next((src.name for origin, src in unused if src.type == layer.type
                          and len(src.blobs) == len(layer.blobs)
                          and blob_proto_shape(src.blobs[-1]) != tuple(layer.blobs[-1].shape)
                          and src.name not in target), None)
        report.reinitialised[name] = f"renamed from '{guess}'" if guess else "new layer"
    for origin, src in unused:
        if src.name not in report.ignored:
            report.ignored[src.name] = origin
    return report


# ---------------------------------------------------------------------------- fully connected -> convolution
def _blob_shapes(net_param, phase=None):
    """Every blob's shape in `net_param` (builds the net: parameters are allocated)."""
    import importlib

    from ..net import Net
    importlib.import_module("pycaffe_lite.layers")
    net = Net(net_param, phase=caffe_pb2.TEST if phase is None else phase)
    return {name: tuple(blob.shape) for name, blob in net.blobs.items()}, net


def fc_to_conv(net_param, weights, layers=None, suffix="-conv", input_shape=None, bottom_shapes=None):
    """Cast InnerProduct layers as Convolutions (Caffe's net_surgery example).

    net_param: a deploy NetParameter; weights: caffemodel path, NetParameter or
    {layer: [arrays]}. Each InnerProduct (all of them, or those in `layers`)
    becomes a Convolution named `<name><suffix>` whose kernel covers its
    bottom's spatial extent at the net's input size (6x6 for CaffeNet's fc6,
    1x1 for fc7 and fc8); its top is renamed the same way. The weights are the
    same numbers, reshaped (num_output, C, H, W). `input_shape` (N, C, H, W)
    then enlarges the Input so the net yields a map of class scores.

    Returns (new NetParameter, {layer: [arrays]}).
    """
    arrays = weights if isinstance(weights, dict) else weights_to_arrays(weights)
    if bottom_shapes is None:
        bottom_shapes, _ = _blob_shapes(net_param)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    new_arrays = collections.OrderedDict((k, list(v)) for k, v in arrays.items())
    renamed_tops = {}
    chosen = None if layers is None else set(layers)
    for layer in out.layer:
        # Follow renamed blobs through the rest of the net.
        for i, name in enumerate(layer.bottom):
            layer.bottom[i] = renamed_tops.get(name, name)
        for i, name in enumerate(layer.top):
            layer.top[i] = renamed_tops.get(name, name)
        if layer.type != "InnerProduct" or (chosen is not None and layer.name not in chosen):
            continue
        ip = layer.inner_product_param
        if ip.axis != 1:
            raise ValueError(f"layer '{layer.name}': only InnerProduct with axis 1 becomes a "
                             f"convolution (got axis {ip.axis})")
        original_bottom = next(l for l in net_param.layer if l.name == layer.name).bottom[0]
        shape = bottom_shapes[original_bottom]
        if len(shape) == 4:
            channels, height, width = shape[1:]
        elif len(shape) == 2:
            channels, height, width = shape[1], 1, 1
        else:
            raise ValueError(f"layer '{layer.name}': bottom '{original_bottom}' has shape {shape}; "
                             "a convolution needs (N, C, H, W) or (N, C)")
        old_name, old_top = layer.name, layer.top[0]
        conv = caffe_pb2.ConvolutionParameter(num_output=ip.num_output)
        if not ip.bias_term:
            conv.bias_term = False
        if height == width:
            conv.kernel_size.append(height)
        else:
            conv.kernel_h, conv.kernel_w = height, width
        if ip.HasField("weight_filler"):
            conv.weight_filler.CopyFrom(ip.weight_filler)
        if ip.HasField("bias_filler"):
            conv.bias_filler.CopyFrom(ip.bias_filler)
        layer.ClearField("inner_product_param")
        layer.type = "Convolution"
        layer.convolution_param.CopyFrom(conv)
        layer.name = old_name + suffix
        new_top = old_top + suffix
        renamed_tops[old_top] = new_top
        layer.top[0] = new_top
        blobs = new_arrays.pop(old_name, None)
        if blobs is None:
            raise ValueError(f"the weights hold no layer '{old_name}' to cast as a convolution")
        weight = np.asarray(blobs[0])
        if ip.transpose:
            weight = weight.T
        weight = weight.reshape(ip.num_output, channels, height, width)
        new_arrays[layer.name] = [weight] + [np.asarray(b).reshape(-1) for b in blobs[1:]]
    if input_shape is not None:
        _set_input_shape(out, input_shape)
    return out, new_arrays


def _input_layer(net_param):
    for layer in net_param.layer:
        if layer.type == "Input":
            return layer
    raise ValueError(f"net '{net_param.name}' has no Input layer to reshape (use a deploy net)")


def _set_input_shape(net_param, shape):
    layer = _input_layer(net_param)
    del layer.input_param.shape[:]
    layer.input_param.shape.add().dim.extend(int(d) for d in shape)


# ---------------------------------------------------------------------------- input channels
def first_convolution(net_param):
    """The first Convolution reading a net input (Input or data layer top)."""
    data_tops = {t for layer in net_param.layer
                 if layer.type in ("Input", "Data", "ImageData", "DummyData", "MemoryData",
                                   "HDF5Data", "WindowData")
                 for t in layer.top}
    for layer in net_param.layer:
        if layer.type == "Convolution" and set(layer.bottom) & data_tops:
            return layer
    raise ValueError(f"net '{net_param.name}' has no Convolution reading its input")


def set_input_channels(net_param, weights, channels, layer=None, mode=None):
    """Adapt the first convolution to `channels` input channels.

    Reducing to 1 channel (mode 'sum', the default there) sums the filters
    over their input channels: a grey image then gives exactly the response
    the colour net gave to that grey image repeated in every channel.
    Reducing otherwise (mode 'first') keeps the first `channels` channels.
    Adding channels (mode 'mean', the default) fills the new ones with the
    mean filter over the old channels and scales all by old/new, so an input
    whose channels are all equal still gives the original response; mode
    'zero' leaves the new channels at zero (the original response exactly
    when the new channels are ignored).

    Returns (new NetParameter, {layer: [arrays]}).
    """
    arrays = weights if isinstance(weights, dict) else weights_to_arrays(weights)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    target = next(l for l in out.layer if l.name == layer) if layer else first_convolution(out)
    if target.convolution_param.group != 1:
        raise ValueError(f"layer '{target.name}' has group {target.convolution_param.group}; "
                         "only an ungrouped first convolution can change its input channels")
    new_arrays = collections.OrderedDict((k, list(v)) for k, v in arrays.items())
    if target.name not in new_arrays:
        raise ValueError(f"the weights hold no layer '{target.name}'")
    weight = np.asarray(new_arrays[target.name][0])
    old = weight.shape[1]
    if channels < 1:
        raise ValueError(f"input channels must be positive, got {channels}")
    if channels < old:
        mode = mode or ("sum" if channels == 1 else "first")
        if mode == "sum" and channels == 1:
            new = weight.sum(axis=1, keepdims=True)
        elif mode == "first":
            new = weight[:, :channels].copy()
        else:
            raise ValueError(f"mode '{mode}' cannot reduce {old} channels to {channels} "
                             "(use 'sum' for 1 channel, or 'first')")
    elif channels > old:
        mode = mode or "mean"
        extra_shape = (weight.shape[0], channels - old) + weight.shape[2:]
        if mode == "mean":
            extra = np.broadcast_to(weight.mean(axis=1, keepdims=True), extra_shape)
            new = np.concatenate([weight, extra], axis=1) * (old / channels)
        elif mode == "zero":
            new = np.concatenate([weight, np.zeros(extra_shape, weight.dtype)], axis=1)
        else:
            raise ValueError(f"mode '{mode}' cannot add channels (use 'mean' or 'zero')")
    else:
        new = weight.copy()
    new_arrays[target.name][0] = new.astype(weight.dtype, copy=False)
    for layer_ in out.layer:
        if layer_.type == "Input" and set(layer_.top) & set(target.bottom):
            for shape in layer_.input_param.shape:
                if len(shape.dim) >= 2:
                    shape.dim[1] = channels
    return out, new_arrays
