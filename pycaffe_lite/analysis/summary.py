"""Per-layer figures of a built Net: output shapes, parameters, multiply-adds,
receptive field and stride relative to the input, activation memory.

Everything comes from the shapes the Net worked out when it was built (and
the layers' own parameters): no forward pass is run.

    from pycaffe_lite.analysis import summarize, format_summary
    summary = summarize(net)              # or summarize("deploy.prototxt", batch=1)
    print(format_summary(summary))
    summary.total_params, summary.total_madds_per_image

What is counted:
  * parameters: the elements of every parameter blob (weights, biases,
    BatchNorm statistics), a blob shared between layers counted once;
  * multiply-adds: those of Convolution (output elements x inputs per output:
    C_in/group x kh x kw), Deconvolution (input elements x C_out/group x kh x kw),
    InnerProduct (output elements x K), per image; pooling, normalisation and
    elementwise layers are taken as free, the usual convention;
  * receptive field: the extent of input pixels that can reach one output
    pixel, and the stride between neighbouring outputs in input pixels.  Two
    stacked 3x3 convolutions see 5x5, three 7x7.  Outputs with no spatial
    axes (after an InnerProduct, say) see the whole input: "global";
  * each layer type says its own multiply-adds and receptive-field step
    (Layer.madds, Layer.field_step, through the registry);
  * activation memory: the bytes of every blob the layer writes, for the
    whole batch (a top computed in place reuses its bottom and adds nothing);
    training keeps as much again for the gradients (diff).
"""
import dataclasses

import numpy as np

from ..geometry import GLOBAL
from ..layer import layer_class


@dataclasses.dataclass
class LayerSummary:
    name: str
    type: str
    top_shapes: list            # [(n, c, h, w), ...]
    params: int                 # elements of parameter blobs this layer owns
    madds_per_image: int        # multiply-adds for one item of the batch
    receptive_field: object     # (h, w), GLOBAL, or None when not spatial / unknown
    stride: object              # (h, w) in input pixels, GLOBAL or None
    activation_bytes: int       # bytes of the tops this layer allocates, whole batch


@dataclasses.dataclass
class NetSummary:
    name: str
    batch: int
    dtype: str
    input_shapes: dict
    layers: list

    @property
    def total_params(self):
        return sum(layer.params for layer in self.layers)

    @property
    def total_madds_per_image(self):
        return sum(layer.madds_per_image for layer in self.layers)

    @property
    def total_madds(self):
        return self.total_madds_per_image * self.batch

    @property
    def total_activation_bytes(self):
        return sum(layer.activation_bytes for layer in self.layers)

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer '{name}' in the summary of {self.name}")


def _is_spatial(shape):
    return shape is not None and len(shape) >= 4


def _widest(fields):
    """The receptive field of several bottoms: the largest extent, the largest stride."""
    known = [f for f in fields if f is not None]
    if not known:
        return None
    if any(f == GLOBAL for f in known):
        return GLOBAL
    rf = tuple(max(f[0][i] for f in known) for i in range(len(known[0][0])))
    stride = tuple(max(f[1][i] for f in known) for i in range(len(known[0][1])))
    return rf, stride


def _propagate(step, bottom_fields, bottom_shapes, top_shape):
    """The (receptive field, stride) of a layer's top from its bottoms' and the layer's FieldStep
    (None: the layer does not say), or GLOBAL / None."""
    if not bottom_fields:   # a data or input layer: the input itself
        if _is_spatial(top_shape):
            n = len(top_shape) - 2
            return (1,) * n, (1,) * n
        return None
    used = bottom_fields if step is None or step.bottoms is None else bottom_fields[:step.bottoms]
    source = _widest(used)
    if source is None or source == GLOBAL:
        return source
    if not _is_spatial(top_shape):
        return GLOBAL
    if step is None:
        return None  # a layer whose spatial mapping we do not know
    return step.apply(*source, bottom_shapes, top_shape)


# ---------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------
def summarize(net, batch=None, phase=None, level=0, stages=(), include_splits=False, allow_python=None):
    """A NetSummary of a Net (or of a prototxt path / NetParameter, built here without drawing weights).

    batch: reshape the inputs to this batch size first (default: as declared).
    include_splits: list the Split layers the Net inserted (hidden by default).
    """
    from ..net import Net, build_net_for_shapes
    if not isinstance(net, Net):
        net = build_net_for_shapes(net, phase, level, stages, allow_python)
    if batch is not None:
        if not net.inputs:
            raise ValueError("--batch needs a net with Input layers (this one is fed by data layers)")
        for name in net.inputs:
            shape = net.blobs[name].shape
            if shape:
                net.blobs[name].reshape((int(batch),) + tuple(shape[1:]))
        net.reshape()
    sources = [n for n in net.inputs] or [t for lname, layer in zip(net.layer_names, net.layers)
                                          if not net.bottom_names[lname] for t in net.top_names[lname]]
    input_shapes = {name: tuple(net.blobs[name].shape) for name in sources if name in net.blobs}
    spatial_inputs = [s for s in input_shapes.values() if s]
    batch_size = int(spatial_inputs[0][0]) if spatial_inputs else 1

    fields = {}          # blob name -> (rf, stride) / GLOBAL / None
    seen_params = set()
    seen_blobs = set()
    rows = []
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        bottoms, tops = net.bottom_vecs[i], net.top_vecs[i]
        bottom_names, top_names = net.bottom_names[name], net.top_names[name]
        bottom_fields = [fields.get(b) for b in bottom_names]
        bottom_shapes = [tuple(b.shape) for b in bottoms]
        kind = layer_class(layer.type, name)     # the registered type (a Python layer's too)
        step = kind.field_step(layer.layer_param, bottom_shapes) if bottom_shapes else None
        for top_name, top in zip(top_names, tops):
            fields[top_name] = _propagate(step, bottom_fields, bottom_shapes, tuple(top.shape))
        params = 0
        for blob in layer.blobs:
            if id(blob) not in seen_params:
                seen_params.add(id(blob))
                params += blob.count
        activation = 0
        for top in tops if layer.type != "Split" else ():   # Split's tops alias its bottom's data
            if id(top) not in seen_blobs and not any(top is b for b in bottoms):
                activation += top.count * top.dtype.itemsize
            seen_blobs.add(id(top))
        for b in bottoms:
            seen_blobs.add(id(b))
        if layer.type == "Split" and not include_splits:
            continue
        field = fields[top_names[0]] if top_names else None
        madds = kind.madds(layer.layer_param, bottom_shapes, [tuple(t.shape) for t in tops])
        n = tops[0].shape[0] if tops and tops[0].shape else batch_size
        rows.append(LayerSummary(
            name=name, type=layer.type, top_shapes=[tuple(t.shape) for t in tops], params=params,
            madds_per_image=int(madds // n) if n else int(madds),
            receptive_field=field[0] if isinstance(field, tuple) else field,
            stride=field[1] if isinstance(field, tuple) else field,
            activation_bytes=activation))
    return NetSummary(name=net.name, batch=batch_size, dtype=str(net.dtype), input_shapes=input_shapes,
                      layers=rows)


# ---------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------
def human(n, unit=""):
    """1234567 -> '1.23M' (powers of 1000; bytes use powers of 1024 with unit 'B')."""
    base, names = (1024.0, ["", "Ki", "Mi", "Gi", "Ti"]) if unit == "B" else (1000.0, ["", "K", "M", "G", "T"])
    value = float(n)
    for name in names:
        if abs(value) < base or name == names[-1]:
            if name == "":
                return f"{int(value)}{unit}" if value == int(value) else f"{value:.2f}{unit}"
            return f"{value:.2f}{name}{unit}"
        value /= base
    return str(n)


def _extent(value):
    if value is None:
        return "-"
    if value == GLOBAL:
        return GLOBAL
    values = [int(v) if float(v).is_integer() else round(float(v), 3) for v in value]
    if len(set(values)) == 1:
        return str(values[0])
    return "x".join(str(v) for v in values)


def _rf(value):
    if value is None or value == GLOBAL:
        return _extent(value)
    values = [int(v) for v in value]
    return "x".join(str(v) for v in values)


def format_summary(summary):
    """A table: one row per layer, then the totals."""
    header = ("layer", "type", "output shape", "params", "madds/image", "rf", "stride", "activations")
    rows = []
    for layer in summary.layers:
        shapes = ", ".join("x".join(str(d) for d in s) or "scalar" for s in layer.top_shapes) or "-"
        rows.append((layer.name, layer.type, shapes, f"{layer.params:,}", f"{layer.madds_per_image:,}",
                     _rf(layer.receptive_field), _extent(layer.stride), human(layer.activation_bytes, "B")))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = {3, 4, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    inputs = ", ".join(f"{k} {'x'.join(str(d) for d in v)}" for k, v in summary.input_shapes.items())
    out = [f"Net '{summary.name}': batch {summary.batch}, {summary.dtype}; inputs: {inputs or '-'}",
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(line(["-" * w for w in widths]))
    out.append(f"Total parameters:      {summary.total_params:,} ({human(summary.total_params)}), "
               f"{human(summary.total_params * np.dtype(summary.dtype).itemsize, 'B')} as {summary.dtype}")
    out.append(f"Total multiply-adds:   {summary.total_madds_per_image:,} per image "
               f"({human(summary.total_madds_per_image)}), {human(summary.total_madds)} per batch of {summary.batch}")
    out.append(f"Activation memory:     {human(summary.total_activation_bytes, 'B')} for the batch "
               f"(forward; training keeps about as much again for the diffs)")
    return "\n".join(out)


def summary_to_dict(summary):
    """A JSON-ready dict of the summary."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return float(v)
        return v
    return {
        "name": summary.name, "batch": summary.batch, "dtype": summary.dtype,
        "inputs": {k: list(v) for k, v in summary.input_shapes.items()},
        "layers": [{k: plain(v) if not isinstance(v, list) else [plain(x) for x in v]
                    for k, v in dataclasses.asdict(layer).items()} for layer in summary.layers],
        "total_params": summary.total_params, "total_madds_per_image": summary.total_madds_per_image,
        "total_madds": summary.total_madds, "total_activation_bytes": summary.total_activation_bytes,
    }


__all__ = ["GLOBAL", "LayerSummary", "NetSummary", "format_summary", "human",
           "summarize", "summary_to_dict"]
