"""Net: a NetParameter made into connected layers, run forward and backward.

The steps follow Caffe's Net::Init: read and upgrade the prototxt, keep the
layers whose include/exclude rules meet the net's state (phase, level,
stages), insert Split layers where one top feeds several bottoms, then
create and set up each layer, wiring blobs by name (a top named like its
bottom is computed in place), sharing parameters by `param { name }`, and
working out which layers need a backward pass.
"""
import collections
import logging
import os

import numpy as np

from . import backend
from .blob import Blob, MemoryLimitError, allocation_budget
from .io_utils import FormatError, write_bytes_atomic
from .kernels import jit_log
from .kernels.quantize import FixedPoint
from .layer import create_layer, deferred_fills, run_fills
from .net_helpers import NetHelpersMixin
from .proto import caffe_pb2
from .proto.blobs import (
    array_to_blob_proto,
    blob_proto_shape,
    blob_proto_to_array,
    blob_shape_matches,
    signs_to_blob_proto,
)
from .proto.files import check_finite, read_net_param, read_weights, upgraded_net
from .proto.types import more_precise, type_name, type_of_dtype

log = logging.getLogger("pycaffe_lite")

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


# --------------------------------------------------------------------------
# Phase / level / stage filtering (Caffe's StateMeetsRule, FilterNet)
# --------------------------------------------------------------------------
def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_net(param, state):
    """A copy of `param` keeping only the layers the state includes."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if layer.include and layer.exclude:
            raise ValueError(f"layer '{layer.name}' specifies both include and exclude rules; use one")
        if layer.include:
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out


# --------------------------------------------------------------------------
# Split insertion (Caffe's InsertSplits, with its blob and layer names)
# --------------------------------------------------------------------------
def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(param):
    """Where one top feeds several bottoms (or a bottom and a loss), add a Split layer."""
    last_top = {}                 # blob name -> (layer index, top index) that last wrote it
    source = {}                   # (layer, bottom index) -> (layer, top index)
    uses = collections.Counter()  # (layer, top index) -> number of consumers
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise ValueError(f"layer '{layer.name}' (type {layer.type}): unknown bottom blob '{name}' "
                                 f"(bottom index {j}); no earlier layer produces it")
            source[i, j] = last_top[name]
            uses[last_top[name]] += 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top = last_top[layer.top[j]]
            loss_weight[top] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                uses[top] += 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = collections.Counter()
    for i, original in enumerate(param.layer):
        layer = out.layer.add()
        layer.CopyFrom(original)
        for j, name in enumerate(layer.bottom):
            top = source[i, j]
            if uses[top] > 1:
                owner = param.layer[top[0]].name
                layer.bottom[j] = split_blob_name(owner, name, top[1], next_split[top])
                next_split[top] += 1
        for j, name in enumerate(layer.top):
            count = uses[(i, j)]
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = out.layer.add()
            split.name = split_layer_name(layer.name, name, j)
            split.type = "Split"
            split.bottom.append(name)
            split.top.extend(split_blob_name(layer.name, name, j, k) for k in range(count))
            if weight:                   # the loss moves to the split's first top (Caffe's ConfigureSplitLayer)
                split.loss_weight.extend([weight] + [0.0] * (count - 1))
                del layer.loss_weight[:]
                next_split[(i, j)] += 1
    return out


# --------------------------------------------------------------------------
# NVCaffe's precision fields (issue 18): parsed; until their semantics land, a Net
# refuses any it cannot honour rather than run float32 pretending otherwise.
# --------------------------------------------------------------------------
def _layer_types(net, layer):
    """(field, Type) of a layer's storage and math types as NVCaffe resolves them (its own, else the
    net's default; an unset math is the more precise of FLOAT and the storage type); None when unset."""
    out = []
    for way in ("forward", "backward"):
        kind, math = f"{way}_type", f"{way}_math"
        stored = next(((f, getattr(p, f)) for p, f in ((layer, kind), (net, "default_" + kind))
                       if p.HasField(f)), None)
        out.append(stored)
        if layer.HasField(math):
            out.append((math, getattr(layer, math)))
        elif layer.HasField(kind):
            out.append((f"{math} (from {kind})", more_precise(caffe_pb2.FLOAT, getattr(layer, kind))))
        elif net.HasField("default_" + math):
            out.append(("default_" + math, getattr(net, "default_" + math)))
        elif stored is not None:
            out.append((f"{math} (from {stored[0]})", more_precise(caffe_pb2.FLOAT, stored[1])))
    return [t for t in out if t is not None]


def check_precision(net, dtype, source="<NetParameter>"):
    """Raise NotImplementedError for a type field this Net cannot run: every layer runs in the Net's
    dtype, so a set type must name it (FLOAT: float32, DOUBLE: float64); FLOAT16 / BFLOAT16 storage
    or math and loss scaling (global_grad_scale) are parsed but not yet supported."""
    runs = type_of_dtype(dtype)
    if net.global_grad_scale != 1 or net.global_grad_scale_adaptive:
        raise NotImplementedError(f"{source}: global_grad_scale {net.global_grad_scale:g} (adaptive: "
                                  f"{str(net.global_grad_scale_adaptive).lower()}) is parsed but loss "
                                  "scaling is not yet supported")
    for layer in net.layer:
        for field, value in _layer_types(net, layer):
            if value == runs:
                continue
            where = f"{source}: layer '{layer.name}' (type {layer.type}): {type_name(value)} {field}"
            if value in (caffe_pb2.FLOAT, caffe_pb2.DOUBLE):
                wanted = "float32" if value == caffe_pb2.FLOAT else "float64"
                raise NotImplementedError(f"{where} asks for {wanted} but this Net runs {np.dtype(dtype)}: "
                                          f"build it with dtype=np.{wanted}")
            raise NotImplementedError(f"{where} is parsed but not yet supported: this Net runs "
                                      f"{np.dtype(dtype)} in every layer")


# --------------------------------------------------------------------------
# The Net
# --------------------------------------------------------------------------
class Net(NetHelpersMixin):
    """A network built from a prototxt (or NetParameter), as pycaffe's caffe.Net.

    Net(model, phase) / Net(model, weights, phase) / Net(model, weights=..., phase=...,
    level=0, stages=(), allow_python=False, dtype=np.float32); `network_file=` names the
    model as pycaffe's keyword does.  From a file the state's level is `level` (0 unless
    given) and `stages` are added, as pycaffe's Net sets them; a NetParameter keeps its own
    state's level unless `level` is given (Caffe's Net(NetParameter), which the solver uses).
    """

    def __init__(self, model=None, *args, network_file=None, weights=None, phase=None, level=None,
                 stages=(), allow_python=None, dtype=np.float32):
        if (model is None) == (network_file is None):
            raise TypeError("Net() needs the model once: Net(model, ...) or Net(network_file=...)")
        model = network_file if model is None else model
        jit_log.watch_jit_compiles()   # the first run says what the kernels' compile is doing
        weights, phase = _positional_weights_phase(args, weights, phase)
        if isinstance(model, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(model)
            upgraded_net(param, "<NetParameter>")
            check_finite(param)
            self.source = "<NetParameter>"
        else:
            param = read_net_param(os.fspath(model))
            self.source = os.fspath(model)
        self.dtype = np.dtype(dtype)
        self.allow_python = python_layers_allowed() if allow_python is None else allow_python
        state = caffe_pb2.NetState()
        state.CopyFrom(param.state)
        state.phase = TEST if phase is None else phase
        if level is not None or not isinstance(model, caffe_pb2.NetParameter):
            state.level = level or 0
        state.stage.extend(s for s in stages or () if s not in state.stage)
        self.phase = state.phase
        try:
            self._init(param, state)
        except FormatError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
            # the net's description is wrong: say where, whatever check found it
            message = str(exc) if self.source in str(exc) else f"{self.source}: {exc}"
            raise FormatError(message, self.source) from exc
        if weights is not None:
            self.copy_from(weights)

    # ---- construction ---------------------------------------------------
    def _init(self, param, state):
        self.name = param.name
        filtered = filter_net(param, state)
        check_precision(filtered, self.dtype, self.source)
        self.param = insert_splits(filtered)
        self.blobs = collections.OrderedDict()
        self.layers, self.layer_names = [], []
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_blob_names, self.top_blob_names = [], []   # per layer index
        self.bottom_need_backward, self.layer_need_backward = [], []
        self.inputs = []
        self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
        self._has_lr, self._has_decay = [], []
        self._param_names = {}    # shared param name -> owner Blob
        self._need_backward = {}  # blob name -> bool
        # training in fixed point: the net's setting, for each layer that learns and has none of its own
        self.fixed_point = (FixedPoint.from_param(param.fixed_point_param)
                            if param.HasField("fixed_point_param") else None)
        # pycaffe's before_forward / after_forward / before_backward / after_backward: f(layer index)
        self._hooks = {"before_forward": [], "after_forward": [], "before_backward": [], "after_backward": []}
        available = set()
        # every blob and parameter counted before it is allocated; filled once all layers are set up
        with allocation_budget(), deferred_fills() as fills:
            for layer_param in self.param.layer:
                self._append_layer(layer_param, available)
            if fills is not None:
                run_fills(fills)
        if any(layer_param.blobs for layer_param in self.param.layer):
            self.copy_from(self.param)       # weights written in the prototxt (Caffe's Layer constructor)
        self._prune_backward(self.param.force_backward)
        self.outputs = sorted(available)  # Caffe keeps them in a std::set: sorted by name
        self.blob_loss_weights = collections.OrderedDict(
            (name, 0.0) for name in self.blobs)
        for layer, tops in zip(self.layers, self.top_blob_names):
            for name, weight in zip(tops, layer.loss_weights):
                if weight:
                    self.blob_loss_weights[name] = weight

    def _create(self, layer_param):
        if layer_param.type == "Python" and not self.allow_python:
            raise PermissionError(
                f"layer '{layer_param.name}' is a Python layer: loading module "
                f"'{layer_param.python_param.module}' from {self.source} would run its code. "
                "Allow it with Net(..., allow_python=True), pycaffe_lite.allow_python_layers(), "
                "or the --allow-python flag of pycaffe-lite.")
        if not layer_param.HasField("phase"):     # a layer's own phase wins (Caffe's Net::Init)
            layer_param.phase = self.phase
        return create_layer(layer_param)

    def _append_layer(self, layer_param, available):
        name = layer_param.name
        if layer_param.propagate_down and len(layer_param.propagate_down) != len(layer_param.bottom):
            raise ValueError(f"layer '{name}': propagate_down has {len(layer_param.propagate_down)} "
                             f"entries for {len(layer_param.bottom)} bottoms")
        layer = self._create(layer_param)
        bottom, need_down, layer_needs = [], [], False
        for j, blob_name in enumerate(layer_param.bottom):
            if blob_name not in available:
                raise ValueError(f"layer '{name}' (type {layer_param.type}): bottom blob '{blob_name}' "
                                 "is not produced by any earlier layer (or was already consumed)")
            available.discard(blob_name)
            bottom.append(self.blobs[blob_name])
            needs = self._need_backward[blob_name]
            layer_needs |= needs
            need_down.append(bool(layer_param.propagate_down[j]) if layer_param.propagate_down else needs)
        tops = list(layer_param.top)
        exact = layer.exact_num_top_blobs()
        if layer.auto_top_blobs:
            wanted = max(exact or 0, layer.num_top[0])
            tops += [f"(automatic) {name}_{k}" for k in range(len(tops), wanted)]
        top = []
        for j, blob_name in enumerate(tops):
            in_place = j < len(layer_param.bottom) and layer_param.bottom[j] == blob_name
            if in_place:
                blob = self.blobs[blob_name]
            elif blob_name in self.blobs and not blob_name.startswith("(automatic)"):
                raise ValueError(f"layer '{name}': top blob '{blob_name}' is produced by more than one layer")
            else:
                blob = Blob((), self.dtype)
                self.blobs[blob_name] = blob
                self._need_backward[blob_name] = False
            if layer_param.type == "Input":
                self.inputs.append(blob_name)
            if j < len(layer_param.top):         # an automatic top is never a net output (Caffe's AppendTop)
                available.add(blob_name)
            top.append(blob)
        try:
            layer.SetUp(bottom, top)
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, ZeroDivisionError) as exc:
            message = str(exc)
            if f"'{name}'" not in message:
                message = f"layer '{name}' (type {layer_param.type}): {message}"
            error = MemoryLimitError if isinstance(exc, MemoryLimitError) else FormatError
            raise error(message, self.source, getattr(exc, "line", None), name) from exc
        log.debug("Setting up %s", name)
        for blob in top:
            log.debug("Top shape: %s", blob.shape_string())
        layer.param_propagate_down = []
        for j in range(len(layer.blobs)):
            spec = layer.layer_param.param[j] if j < len(layer.layer_param.param) else caffe_pb2.ParamSpec()
            learns = spec.lr_mult != 0
            layer.param_propagate_down.append(learns)
            layer_needs |= learns
            self._append_param(layer, j, spec)
        if any(layer.param_propagate_down) and not layer_param.HasField("fixed_point_param"):
            layer.fixed_point = self.fixed_point
        if layer_needs:
            for blob_name in tops:
                self._need_backward[blob_name] = True
        self.layers.append(layer)
        self.layer_names.append(name)
        self.bottom_vecs.append(bottom)
        self.top_vecs.append(top)
        self.bottom_blob_names.append(list(layer_param.bottom))
        self.top_blob_names.append(tops)
        self.bottom_need_backward.append(need_down)
        self.layer_need_backward.append(layer_needs)

    def _append_param(self, layer, j, spec):
        """Register layer.blobs[j]; a named param seen before is shared (Caffe's AppendParam)."""
        blob = layer.blobs[j]
        owner = self._param_names.get(spec.name) if spec.name else None
        if owner is None:
            if spec.name:
                self._param_names[spec.name] = blob
            self.learnable_params.append(blob)
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            self._has_lr.append(spec.HasField("lr_mult"))
            self._has_decay.append(spec.HasField("decay_mult"))
            return
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        same = owner.count == blob.count if permissive else owner.shape == blob.shape
        if not same:
            raise ValueError(f"layer '{layer.name}': cannot share param '{spec.name}': owner shape "
                             f"{owner.shape} vs this layer's {blob.shape}"
                             + (" (share_mode PERMISSIVE needs equal counts)" if permissive else ""))
        k = next(i for i, p in enumerate(self.learnable_params) if p is owner)
        for has, values, field in ((self._has_lr, self.params_lr, "lr_mult"),
                                   (self._has_decay, self.params_weight_decay, "decay_mult")):
            if spec.HasField(field):
                if has[k] and values[k] != getattr(spec, field):
                    raise ValueError(f"layer '{layer.name}': shared param '{spec.name}' has mismatched {field}")
                has[k], values[k] = True, getattr(spec, field)
        if owner.shape == blob.shape:
            layer.blobs[j] = owner
        else:  # PERMISSIVE: same values under this layer's shape
            blob.share_data(owner)
            blob.share_diff(owner)

    def _prune_backward(self, force_backward):
        """Skip backward where nothing reaches a loss (Caffe's Net::Init, second pass)."""
        under_loss, skip = set(), set()
        for i in reversed(range(len(self.layers))):
            layer, tops = self.layers[i], self.top_blob_names[i]
            contributes = any(w for w in layer.loss_weights) or any(t in under_loss for t in tops)
            skip_down = all(t in skip for t in tops)
            if self.layer_need_backward[i] and skip_down:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_vecs[i])
            if not contributes:
                self.layer_need_backward[i] = False
            for j, name in enumerate(self.bottom_blob_names[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip.add(name)
        if force_backward:
            for i, layer in enumerate(self.layers):
                self.layer_need_backward[i] = True
                self.bottom_need_backward[i] = [
                    need or layer.allow_force_backward(j) for j, need in enumerate(self.bottom_need_backward[i])]
                layer.param_propagate_down = [True] * len(layer.blobs)

    # ---- running ----------------------------------------------------------
    def _index(self, layer_name, default):
        if layer_name is None:
            return default
        try:
            return self.layer_names.index(layer_name)
        except ValueError:
            raise ValueError(f"net '{self.name}' has no layer '{layer_name}'") from None

    def forward_from_to(self, start=0, end=None):
        """Run layers start..end (inclusive); returns the summed weighted loss."""
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        before, after = self._hooks["before_forward"], self._hooks["after_forward"]
        for i in range(start, end + 1):
            for hook in before:
                hook(i)
            loss += self.layers[i].Forward(self.bottom_vecs[i], self.top_vecs[i])
            for hook in after:
                hook(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        before, after = self._hooks["before_backward"], self._hooks["after_backward"]
        for i in range(start, end - 1, -1):
            for hook in before:
                hook(i)
            if self.layer_need_backward[i]:
                self.layers[i].Backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
            for hook in after:      # every layer, as Caffe's BackwardFromTo runs its callbacks
                hook(i)

    def _add_hook(self, when, run):
        """run(layer index); an object with a .run method (pycaffe's NCCL) is taken as its run."""
        run = getattr(run, "run", run)
        if not callable(run):
            raise TypeError(f"net.{when} needs a callable taking the layer index, got {type(run).__name__}")
        self._hooks[when].append(run)

    def before_forward(self, run):
        self._add_hook("before_forward", run)

    def after_forward(self, run):
        self._add_hook("after_forward", run)

    def before_backward(self, run):
        self._add_hook("before_backward", run)

    def after_backward(self, run):
        """pycaffe's net.after_backward(f) and net.after_backward(nccl) (layer-wise reduction)."""
        self._add_hook("after_backward", run)

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe's Net.forward: set inputs by keyword, run, return {blob: data}."""
        start_i, end_i = self._index(start, 0), self._index(end, len(self.layers) - 1)
        # ending early returns the end layer's tops (pycaffe since BVLC PR #5519)
        wanted = set((self.top_names[end] if end is not None else self.outputs) + list(blobs or []))
        if inputs:
            if set(inputs) != set(self.inputs):
                raise ValueError(f"input blob arguments {sorted(inputs)} do not match net inputs {self.inputs}")
            for name, value in inputs.items():
                if value.shape[0] != self.blobs[name].shape[0]:
                    raise ValueError(f"input '{name}' has batch {value.shape[0]}, the blob "
                                     f"{self.blobs[name].shape[0]}; call reshape first")
                backend.copy_into(self.blobs[name].data, value)
        self.forward_from_to(start_i, end_i)
        return {name: self.blobs[name].data for name in wanted}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe's Net.backward: set output diffs by keyword, run, return {blob: diff}."""
        start_i, end_i = self._index(start, len(self.layers) - 1), self._index(end, 0)
        wanted = set((self.bottom_names[end] if end is not None else self.inputs) + list(diffs or []))
        if top_diffs:
            if set(top_diffs) != set(self.outputs):
                raise ValueError(f"top diff arguments {sorted(top_diffs)} do not match net outputs {self.outputs}")
            for name, value in top_diffs.items():
                backend.copy_into(self.blobs[name].diff, value)
        self.backward_from_to(start_i, end_i)
        return {name: self.blobs[name].diff for name in wanted}

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[i], self.top_vecs[i])

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    def update(self):
        for blob in self.learnable_params:
            blob.data -= blob.diff
        self.after_update()

    def after_update(self):
        """Each layer's after_update hook, in layer order (the solver calls it after every update)."""
        for layer in self.layers:
            layer.after_update()

    def close(self):
        """Stop background work (data prefetch threads) of every layer."""
        for layer in self.layers:
            closer = getattr(layer, "close", None)
            if closer:
                closer()

    # ---- pycaffe views ------------------------------------------------------
    @property
    def params(self):
        return collections.OrderedDict(
            (name, layer.blobs) for name, layer in zip(self.layer_names, self.layers) if layer.blobs)

    @property
    def bottom_names(self):
        """pycaffe's layer name -> bottom blob names (a later layer of the same name wins)."""
        return collections.OrderedDict(zip(self.layer_names, self.bottom_blob_names))

    @property
    def top_names(self):
        return collections.OrderedDict(zip(self.layer_names, self.top_blob_names))

    @property
    def layer_dict(self):
        return collections.OrderedDict(zip(self.layer_names, self.layers))

    @property
    def _layer_names(self):
        return self.layer_names

    # ---- weights ------------------------------------------------------------
    def copy_from(self, weights, origin=None):
        """Copy parameters by layer name from a .caffemodel (binary, or HDF5 when the name
        ends in .h5, as Caffe decides) or a NetParameter (`origin` names its file in errors)."""
        if not isinstance(weights, caffe_pb2.NetParameter) and os.fspath(weights).endswith(".h5"):
            return self.load_hdf5(os.fspath(weights))
        source = weights if isinstance(weights, caffe_pb2.NetParameter) else read_weights(os.fspath(weights))
        if origin is None:
            origin = "<NetParameter>" if isinstance(weights, caffe_pb2.NetParameter) else os.fspath(weights)
        by_name = self.layer_dict
        for src in source.layer:
            target = by_name.get(src.name)
            if target is None:
                if src.blobs:
                    log.info("Ignoring source layer %s", src.name)
                continue
            if len(src.blobs) != len(target.blobs):
                if not src.blobs:
                    continue
                raise FormatError(f"{origin}: incompatible number of blobs for layer '{src.name}': "
                                 f"source has {len(src.blobs)}, target {len(target.blobs)}")
            for j, (proto, blob) in enumerate(zip(src.blobs, target.blobs)):
                if not blob_shape_matches(blob.shape, proto):
                    raise FormatError(
                        f"{origin}: cannot copy param {j} weights from layer '{src.name}'; shape mismatch. "
                        f"Source param shape is {blob_proto_shape(proto)}; target param shape is {blob.shape}. "
                        "To learn this layer's parameters from scratch rather than copying from a saved "
                        "net, rename the layer.")
                backend.copy_into(blob.data, blob_proto_to_array(proto).reshape(blob.shape))

    copy_trained_layers_from = copy_from

    def share_trained_layers(self, other):
        """Use `other`'s parameter blobs for layers of the same name (test nets share the train net's)."""
        theirs = other.layer_dict
        for name, layer in zip(self.layer_names, self.layers):
            source = theirs.get(name)
            if source is None or not layer.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise ValueError(f"layer '{name}': {len(source.blobs)} blobs in the other net, "
                                 f"{len(layer.blobs)} here")
            for j, blob in enumerate(source.blobs):
                if blob.shape != layer.blobs[j].shape:
                    raise ValueError(f"layer '{name}' param {j}: shape {blob.shape} in the other net, "
                                     f"{layer.blobs[j].shape} here")
                layer.blobs[j] = blob

    share_with = share_trained_layers

    def to_proto(self, write_diff=False, packed=False):
        """The net's NetParameter with its weights; `packed`: the blobs a layer offers as sign bits
        (Layer.packed_param: binary layers' weights) are written packed, 32x smaller."""
        param = caffe_pb2.NetParameter()
        param.name = self.name
        for layer in self.layers:
            entry = param.layer.add()
            entry.CopyFrom(layer.layer_param)
            del entry.blobs[:]
            for i, blob in enumerate(layer.blobs):
                signs = layer.packed_param(i) if packed else None
                proto = (signs_to_blob_proto(*signs) if signs is not None
                         else array_to_blob_proto(blob.data, blob.diff if write_diff else None))
                entry.blobs.add().CopyFrom(proto)
        return param

    def save(self, path, packed=False):
        """Write the weights as a binary .caffemodel (atomically); `packed` as in to_proto."""
        write_bytes_atomic(path, self.to_proto(packed=packed).SerializeToString())


def _positional_weights_phase(args, weights, phase):
    """pycaffe accepts Net(file, phase) and Net(file, weights, phase)."""
    if len(args) == 1:
        if isinstance(args[0], int):
            phase = args[0]
        else:
            weights = args[0]
    elif len(args) == 2:
        weights, phase = args
    elif len(args) > 2:
        raise TypeError("Net(model, [weights], phase) takes at most 3 positional arguments")
    if phase is not None and phase not in (TRAIN, TEST):
        raise ValueError(f"phase must be caffe.TRAIN ({TRAIN}) or caffe.TEST ({TEST}), got {phase!r}")
    return weights, phase


_python_layers = {"allowed": os.environ.get("PYCAFFE_LITE_ALLOW_PYTHON_LAYERS") == "1"}


def allow_python_layers(allowed=True):
    """Let nets load Python layers (their modules run code) without a per-Net keyword."""
    _python_layers["allowed"] = bool(allowed)


def python_layers_allowed():
    return _python_layers["allowed"]


_FILLER_FIELDS = ("weight_filler", "bias_filler", "filler")


def _without_weight_fillers(param):
    """A copy of a NetParameter whose parameter fillers are Caffe's default (constant 0)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    for layer in out.layer:
        for field, value in layer.ListFields():
            if field.message_type is not None and field.name.endswith("_param") and field.name != "dummy_data_param":
                for name in _FILLER_FIELDS:
                    if name in value.DESCRIPTOR.fields_by_name and value.HasField(name):
                        value.ClearField(name)
    return out


def build_net_for_shapes(model, phase=None, level=0, stages=(), allow_python=None):
    """A Net of a prototxt path or NetParameter built with cheap (zero) parameter fillers, for
    tools that need only its shapes (summary, convert's checks): drawing 61M Gaussian numbers
    for CaffeNet (138M for VGG16) would be most of their cost."""
    param = model if isinstance(model, caffe_pb2.NetParameter) else read_net_param(model)
    return Net(_without_weight_fillers(param), phase=TEST if phase is None else phase, level=level,
               stages=stages, allow_python=allow_python)
