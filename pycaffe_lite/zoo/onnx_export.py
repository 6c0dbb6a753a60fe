"""Export a deploy net and its weights to ONNX (opset 13).

    net = caffe.Net("lenet.prototxt", "lenet.caffemodel", caffe.TEST)
    model = to_onnx(net)                # an onnx.ModelProto
    save_onnx(net, "lenet.onnx")

`onnx` is an optional dependency, imported only here. Shapes are those of
the net as built (batch size included), so the exported graph is static;
reshape the net's input before exporting for another batch size. Caffe's
semantics carry over: pooling rounds up (`ceil_mode=1`), average pooling
counts the padding (`count_include_pad=1`), within-channel LRN is spelt out
as an average pool of squares. Layers with no inference meaning (losses,
accuracies, data readers) are refused: export a deploy net.
"""
import numpy as np

from ..backend import to_numpy
from ..geometry import conv_spatial, pool_window

OPSET = 13


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise RuntimeError(f"ONNX export needs the 'onnx' package ({exc}); pip install onnx") from None
    return onnx, helper, numpy_helper


class _Graph:
    def __init__(self, net):
        _, self.helper, self.numpy_helper = _onnx()
        self.net = net
        self.nodes, self.initializers = [], []
        self.current = {}         # Caffe blob name -> ONNX tensor name now holding it
        self.used = set()
        self.count = 0

    def const(self, name, array):
        tensor_name = self.unique(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), tensor_name))
        return tensor_name

    def unique(self, name):
        candidate, k = name, 0
        while candidate in self.used:
            k += 1
            candidate = f"{name}__{k}"
        self.used.add(candidate)
        return candidate

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=name, **attrs))

    def tmp(self, layer, what):
        return self.unique(f"{layer}/{what}")


def to_onnx(net, graph_name=None):
    """An onnx.ModelProto computing `net`'s forward pass (inference) with its current weights."""
    onnx, helper, _ = _onnx()
    g = _Graph(net)
    # Which layer writes each blob last: it gets the Caffe name as its ONNX output.
    last_writer = {}
    for index, tops in enumerate(net.top_names.values()):
        for top in tops:
            last_writer[top] = index
    inputs = []
    for index, (layer, name) in enumerate(zip(net.layers, net.layer_names)):
        bottoms = [g.current[b] for b in net.bottom_names[name]]
        tops = []
        for top in net.top_names[name]:
            wanted = top if last_writer.get(top) == index and top not in g.used else f"{top}__{name}"
            tops.append(g.unique(wanted))
        if layer.type == "Input":
            for top, caffe_top in zip(tops, net.top_names[name]):
                shape = list(net.blobs[caffe_top].shape)
                inputs.append(helper.make_tensor_value_info(top, onnx.TensorProto.FLOAT, shape))
        else:
            _emit(g, layer, name, bottoms, tops, net)
        for top, caffe_top in zip(tops, net.top_names[name]):
            g.current[caffe_top] = top
    outputs = [helper.make_tensor_value_info(g.current[b], onnx.TensorProto.FLOAT, list(net.blobs[b].shape))
               for b in net.outputs]
    graph = helper.make_graph(g.nodes, graph_name or net.name or "caffe_net", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pycaffe_lite")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def save_onnx(net, path):
    from ..io_utils import write_bytes_atomic
    model = to_onnx(net)
    write_bytes_atomic(path, model.SerializeToString())
    return model


def _params(layer):
    return [np.asarray(to_numpy(b.data), np.float32) for b in layer.blobs]


def _emit(g, layer, name, bottoms, tops, net):
    p = layer.layer_param
    kind = layer.type
    x = bottoms[0] if bottoms else None
    y = tops[0] if tops else None
    if kind in ("Split",):
        for top in tops:
            g.node("Identity", [x], [top], name=f"{name}/{top}")
    elif kind == "Dropout":
        g.node("Identity", [x], [y], name=name)
    elif kind in ("Convolution", "Deconvolution"):
        c = p.convolution_param
        if c.axis != 1 or len(net.blobs[net.bottom_names[name][0]].shape) != 4:
            raise ValueError(f"layer '{name}': only 2-D convolutions (N, C, H, W) export to ONNX")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv_spatial(p, 2)
        params = _params(layer)
        inputs = [x, g.const(f"{name}/W", params[0])]
        if len(params) > 1:
            inputs.append(g.const(f"{name}/B", params[1]))
        op = "Conv" if kind == "Convolution" else "ConvTranspose"
        g.node(op, inputs, [y], name=name, kernel_shape=[kh, kw], strides=[sh, sw],
               pads=[ph, pw, ph, pw], dilations=[dh, dw], group=int(c.group))
    elif kind == "Pooling":
        q = p.pooling_param
        shape = net.blobs[net.bottom_names[name][0]].shape
        method = {0: "Max", 1: "Average"}.get(q.pool)
        if method is None:
            raise ValueError(f"layer '{name}': STOCHASTIC pooling has no ONNX counterpart")
        if q.global_pooling:
            g.node(f"Global{method}Pool", [x], [y], name=name)
            return
        (kh, kw), (sh, sw), (ph, pw) = pool_window(p, shape)
        if (kh, kw) == tuple(shape[2:]) and not (ph or pw):
            g.node(f"Global{method}Pool", [x], [y], name=name)
            return
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], ceil_mode=1)
        if method == "Average":
            attrs["count_include_pad"] = 1
        g.node(f"{method}Pool", [x], [y], name=name, **attrs)
    elif kind == "InnerProduct":
        q = p.inner_product_param
        weight, *bias = _params(layer)
        flat = g.tmp(name, "flat")
        g.node("Flatten", [x], [flat], name=f"{name}/flatten", axis=int(q.axis))
        inputs = [flat, g.const(f"{name}/W", weight)]
        if bias:
            inputs.append(g.const(f"{name}/B", bias[0]))
        out_shape = net.blobs[net.top_names[name][0]].shape
        gemm_out = y if len(out_shape) == 2 else g.tmp(name, "gemm")
        g.node("Gemm", inputs, [gemm_out], name=name, transB=0 if q.transpose else 1)
        if gemm_out != y:
            g.node("Reshape", [gemm_out, g.const(f"{name}/shape", np.array(out_shape, np.int64))], [y],
                   name=f"{name}/reshape")
    elif kind == "ReLU":
        slope = p.relu_param.negative_slope
        if slope:
            g.node("LeakyRelu", [x], [y], name=name, alpha=float(slope))
        else:
            g.node("Relu", [x], [y], name=name)
    elif kind in ("Sigmoid", "TanH", "AbsVal", "BNLL"):
        g.node({"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}[kind],
               [x], [y], name=name)
    elif kind == "ELU":
        g.node("Elu", [x], [y], name=name, alpha=float(p.elu_param.alpha))
    elif kind == "PReLU":
        slope = _params(layer)[0]
        channels = net.blobs[net.bottom_names[name][0]].shape[1]
        rank = len(net.blobs[net.bottom_names[name][0]].shape)
        slope = np.broadcast_to(slope.reshape(-1), (channels,)).reshape((channels,) + (1,) * (rank - 2))
        g.node("PRelu", [x, g.const(f"{name}/slope", np.ascontiguousarray(slope))], [y], name=name)
    elif kind == "Softmax":
        axis = p.softmax_param.axis
        g.node("Softmax", [x], [y], name=name, axis=int(axis))
    elif kind == "LRN":
        _lrn(g, p.lrn_param, name, x, y)
    elif kind == "Concat":
        axis = p.concat_param.axis if p.concat_param.HasField("axis") or not p.concat_param.HasField(
            "concat_dim") else p.concat_param.concat_dim
        g.node("Concat", bottoms, [y], name=name, axis=int(axis))
    elif kind == "Eltwise":
        _eltwise(g, p.eltwise_param, name, bottoms, y)
    elif kind == "BatchNorm":
        mean, var, factor = _params(layer)
        s = 0.0 if factor.reshape(-1)[0] == 0 else 1.0 / factor.reshape(-1)[0]
        if layer.phase == 0 and not (p.batch_norm_param.HasField("use_global_stats")
                                     and p.batch_norm_param.use_global_stats):
            raise ValueError(f"layer '{name}': a BatchNorm using batch statistics (TRAIN phase) "
                             "cannot be exported; build the net in the TEST phase")
        channels = mean.size
        g.node("BatchNormalization",
               [x, g.const(f"{name}/scale", np.ones(channels, np.float32)),
                g.const(f"{name}/bias", np.zeros(channels, np.float32)),
                g.const(f"{name}/mean", (mean * s).astype(np.float32)),
                g.const(f"{name}/var", (var * s).astype(np.float32))],
               [y], name=name, epsilon=float(p.batch_norm_param.eps))
    elif kind in ("Scale", "Bias"):
        _scale_bias(g, layer, name, bottoms, y, net)
    elif kind == "Flatten":
        q = p.flatten_param
        rank = len(net.blobs[net.bottom_names[name][0]].shape)
        end = q.end_axis if q.end_axis >= 0 else rank + q.end_axis
        if end == rank - 1:
            g.node("Flatten", [x], [y], name=name, axis=int(q.axis))
        else:
            _static_reshape(g, name, x, y, net)
    elif kind == "Reshape":
        _static_reshape(g, name, x, y, net)
    elif kind == "Power":
        q = p.power_param
        cur = x
        if q.scale != 1:
            nxt = g.tmp(name, "scaled")
            g.node("Mul", [cur, g.const(f"{name}/scale", np.array(q.scale, np.float32))], [nxt],
                   name=f"{name}/mul")
            cur = nxt
        if q.shift != 0:
            nxt = g.tmp(name, "shifted")
            g.node("Add", [cur, g.const(f"{name}/shift", np.array(q.shift, np.float32))], [nxt],
                   name=f"{name}/add")
            cur = nxt
        g.node("Pow", [cur, g.const(f"{name}/power", np.array(q.power, np.float32))], [y], name=name)
    elif kind == "Slice":
        q = p.slice_param
        axis = q.axis if q.HasField("axis") or not q.HasField("slice_dim") else q.slice_dim
        sizes = [net.blobs[t].shape[axis] for t in net.top_names[name]]
        g.node("Split", [x, g.const(f"{name}/split", np.array(sizes, np.int64))], tops, name=name,
               axis=int(axis))
    elif kind == "Crop":
        _crop(g, layer, name, bottoms, y, net)
    elif kind in ("Silence",):
        return
    else:
        raise ValueError(f"layer '{name}' of type {kind} has no ONNX export; export a deploy net "
                         "(no data, loss or accuracy layers)")


def _lrn(g, q, name, x, y):
    if q.norm_region == 0:   # ACROSS_CHANNELS: ONNX's LRN is Caffe's formula
        g.node("LRN", [x], [y], name=name, size=int(q.local_size), alpha=float(q.alpha),
               beta=float(q.beta), bias=float(q.k))
        return
    # WITHIN_CHANNEL: x / (1 + alpha * avgpool(x^2))^beta, the pool padded and counting the padding.
    size, pad = int(q.local_size), (int(q.local_size) - 1) // 2
    square = g.tmp(name, "square")
    g.node("Mul", [x, x], [square], name=f"{name}/square")
    pooled = g.tmp(name, "pooled")
    g.node("AveragePool", [square], [pooled], name=f"{name}/pool", kernel_shape=[size, size],
           strides=[1, 1], pads=[pad, pad, pad, pad], count_include_pad=1)
    scaled = g.tmp(name, "scaled")
    g.node("Mul", [pooled, g.const(f"{name}/alpha", np.array(q.alpha, np.float32))], [scaled],
           name=f"{name}/alpha")
    base = g.tmp(name, "base")
    g.node("Add", [scaled, g.const(f"{name}/one", np.array(1.0, np.float32))], [base], name=f"{name}/one")
    denom = g.tmp(name, "denom")
    g.node("Pow", [base, g.const(f"{name}/beta", np.array(q.beta, np.float32))], [denom], name=f"{name}/pow")
    g.node("Div", [x, denom], [y], name=name)


def _eltwise(g, q, name, bottoms, y):
    op = q.operation
    if op == 1:   # SUM, with optional coefficients
        terms = []
        coeffs = list(q.coeff) or [1.0] * len(bottoms)
        for i, (b, c) in enumerate(zip(bottoms, coeffs)):
            if c == 1:
                terms.append(b)
            else:
                t = g.tmp(name, f"coeff{i}")
                g.node("Mul", [b, g.const(f"{name}/c{i}", np.array(c, np.float32))], [t], name=f"{name}/mul{i}")
                terms.append(t)
        g.node("Sum", terms, [y], name=name)
    elif op == 0:
        if len(bottoms) == 2:
            g.node("Mul", bottoms, [y], name=name)
        else:
            cur = bottoms[0]
            for i, b in enumerate(bottoms[1:]):
                nxt = y if i == len(bottoms) - 2 else g.tmp(name, f"prod{i}")
                g.node("Mul", [cur, b], [nxt], name=f"{name}/mul{i}")
                cur = nxt
    else:
        g.node("Max", bottoms, [y], name=name)


def _scale_bias(g, layer, name, bottoms, y, net):
    p = layer.layer_param
    q = p.scale_param if layer.type == "Scale" else p.bias_param
    params = _params(layer)
    in_shape = net.blobs[net.bottom_names[name][0]].shape
    axis = q.axis if q.axis >= 0 else len(in_shape) + q.axis

    def broadcast(array):
        return array.reshape(array.shape + (1,) * (len(in_shape) - axis - array.ndim))

    cur = bottoms[0]
    if layer.type == "Scale":
        if len(bottoms) > 1:
            factor = bottoms[1]
            other = net.blobs[net.bottom_names[name][1]].shape
            trailing = len(in_shape) - axis - len(other)
            if trailing:
                shaped = g.tmp(name, "factor")
                g.node("Reshape", [factor, g.const(f"{name}/fshape", np.array(
                    list(other) + [1] * trailing, np.int64))], [shaped], name=f"{name}/reshape")
                factor = shaped
            rest = params
        else:
            factor = g.const(f"{name}/gamma", broadcast(params[0]))
            rest = params[1:]
        out = y if not rest else g.tmp(name, "scaled")
        g.node("Mul", [cur, factor], [out], name=name if not rest else f"{name}/mul")
        cur = out
        bias = rest[0] if rest else None
    else:
        bias = params[0] if params else None
        if bias is None:
            g.node("Add", [cur, bottoms[1]], [y], name=name)
            return
    if bias is not None:
        g.node("Add", [cur, g.const(f"{name}/beta", broadcast(bias))], [y], name=f"{name}/add")


def _static_reshape(g, name, x, y, net):
    shape = net.blobs[net.top_names[name][0]].shape
    g.node("Reshape", [x, g.const(f"{name}/shape", np.array(shape, np.int64))], [y], name=name)


def _crop(g, layer, name, bottoms, y, net):
    q = layer.layer_param.crop_param
    in_shape = net.blobs[net.bottom_names[name][0]].shape
    ref_shape = net.blobs[net.bottom_names[name][1]].shape
    axis = q.axis if q.axis >= 0 else len(in_shape) + q.axis
    offsets = list(q.offset)
    starts, ends, axes = [], [], []
    for i, a in enumerate(range(axis, len(in_shape))):
        off = offsets[0] if len(offsets) == 1 else (offsets[i] if offsets else 0)
        starts.append(off)
        ends.append(off + ref_shape[a])
        axes.append(a)
    g.node("Slice", [bottoms[0], g.const(f"{name}/starts", np.array(starts, np.int64)),
                     g.const(f"{name}/ends", np.array(ends, np.int64)),
                     g.const(f"{name}/axes", np.array(axes, np.int64))], [y], name=name)
