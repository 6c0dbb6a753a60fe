"""Draw a NetParameter as a graph (pycaffe's caffe.draw).

    from pycaffe_lite.pycaffe import draw
    from pycaffe_lite.proto.files import read_net_param
    draw.draw_net_to_file(read_net_param("lenet.prototxt"), "lenet.png", rankdir="LR")

Layers are boxes (convolutions red, pooling orange, inner products purple,
in-place neuron layers green), blobs are octagons, edges are labelled with
the layer's output size.  The graph is written in Graphviz's DOT language by
this module itself; rendering it to PNG/SVG/PDF needs Graphviz's `dot`
program (`apt-get install graphviz`, `brew install graphviz`, or
`conda install graphviz`).  Without it, `.dot`/`.gv`/`.raw` outputs still
work: they are the DOT text.  `get_pydot_graph` needs the optional `pydot`.
"""
import shutil
import subprocess

from ..io_utils import write_bytes_atomic
from ..proto import caffe_pb2

# Internal layer and blob styles (pycaffe's).
LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

TEXT_FORMATS = ("dot", "gv", "raw", "canon")
INSTALL_HINT = ("Graphviz's `dot` program is not installed, so the graph cannot be rendered to an image. "
                "Install it with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) "
                "or `conda install graphviz`; or write the DOT text instead by giving a .dot file name.")


def get_pooling_types_dict():
    """Pooling method number -> name (MAX, AVE, STOCHASTIC)."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: k for k, v in desc.values_by_name.items()}


def get_edge_label(layer):
    """The label of a layer's outgoing edges: batch size, or number of outputs."""
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weight, bias) learning-rate multipliers of a Convolution, Deconvolution or InnerProduct layer."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    params = layer.param
    if len(params) == 0:
        return (1.0, 1.0)
    if len(params) == 1:
        return (params[0].lr_mult, 1.0)
    if len(params) == 2:
        return (params[0].lr_mult, params[1].lr_mult)
    raise ValueError("Could not parse the learning rate multiplier")


def get_layer_label(layer, rankdir, display_lrm=False):
    """A layer's node label: name, (type), and kernel/stride/pad for spatial layers."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    descriptors = [layer.name]
    if layer.type == "Pooling":
        descriptors.append("(%s %s)" % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        descriptors.append("(%s)" % layer.type)
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel_size, stride, padding = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel_size = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            padding = p.pad[0] if len(p.pad) else 0
        descriptors.append(separator.join(["kernel size: %d" % kernel_size, "stride: %d" % stride,
                                           "pad: %d" % padding]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if any([lrm0, lrm1]):
            descriptors.append("lr mult: %.1f, %.1f" % (lrm0, lrm1))
    return '"%s"' % separator.join(descriptors).replace('"', r"\"")


def choose_color_by_layertype(layertype):
    """Node colour by layer type."""
    if layertype in ("Convolution", "Deconvolution"):
        return "#FF5050"
    if layertype == "Pooling":
        return "#FF9900"
    if layertype == "InnerProduct":
        return "#CC33FF"
    return "#6495ED"


def _included(layer, phase):
    """pycaffe's phase rule for drawing (include/exclude by phase only)."""
    if phase is None:
        return True
    if layer.include and layer.exclude:
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = not layer.include
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and not rule.phase == phase
    return included


def _graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """(nodes {id: attrs}, edges [(src, dst, label)]) in pycaffe's drawing order."""
    nodes, edges = {}, []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        node_name = "%s_%s" % (layer.name, layer.type)
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            style = dict(NEURON_LAYER_STYLE)      # an in-place neuron layer
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        nodes[node_name] = dict(style, label=label)
        for bottom_blob in layer.bottom:
            nodes[bottom_blob + "_blob"] = dict(BLOB_STYLE, label='"%s"' % bottom_blob)
            edges.append((bottom_blob + "_blob", node_name, '""'))
        for top_blob in layer.top:
            nodes[top_blob + "_blob"] = {"label": '"%s"' % top_blob}   # a plain node, as pycaffe redraws it
            edges.append((node_name, top_blob + "_blob", get_edge_label(layer) if label_edges else '""'))
    return nodes, edges


def _quote(text):
    text = str(text)
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text
    return '"%s"' % text.replace('"', r"\"")


def get_dot_source(caffe_net, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    """The graph in Graphviz's DOT language (no Graphviz or pydot needed)."""
    nodes, edges = _graph(caffe_net, rankdir, label_edges, phase, display_lrm)
    lines = ["digraph %s {" % _quote(caffe_net.name or "Net"), "rankdir=%s;" % rankdir]
    for node_id, attrs in nodes.items():
        body = ", ".join("%s=%s" % (k, _quote(v)) for k, v in attrs.items())
        lines.append("%s [%s];" % (_quote(node_id), body))
    for src, dst, label in edges:
        lines.append("%s -> %s [label=%s];" % (_quote(src), _quote(dst), _quote(label)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The graph as a pydot.Dot (needs `pip install pydot`).

    phase: caffe_pb2.TRAIN / TEST to keep that phase's layers, None for all.
    """
    try:
        import pydot
    except ImportError as exc:
        raise RuntimeError(f"get_pydot_graph needs pydot (pip install pydot): {exc}") from exc
    nodes, edges = _graph(caffe_net, rankdir, label_edges, phase, display_lrm)
    graph = pydot.Dot(_quote(caffe_net.name or "Net"), graph_type="digraph", rankdir=rankdir)
    pydot_nodes = {}
    for node_id, attrs in nodes.items():
        pydot_nodes[node_id] = pydot.Node(_quote(node_id), **attrs)
        graph.add_node(pydot_nodes[node_id])
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(pydot_nodes[src], pydot_nodes[dst], label=label))
    return graph


def dot_available():
    """Whether Graphviz's `dot` program is on the PATH."""
    return shutil.which("dot") is not None


def render_dot(source, ext):
    """DOT text rendered by Graphviz's `dot` to the format `ext` (png, svg, pdf, ...)."""
    if ext in TEXT_FORMATS:
        return source.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(INSTALL_HINT)
    result = subprocess.run([dot, "-T" + ext], input=source.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dot -T{ext} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing of a NetParameter as bytes in the format `ext` ('dot'/'raw' give the DOT text)."""
    return render_dot(get_dot_source(caffe_net, rankdir, phase=phase, display_lrm=display_lrm), ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw a NetParameter to a file whose extension names the format (.png, .svg, .pdf, .dot, .raw)."""
    filename = str(filename)
    ext = filename[filename.rfind(".") + 1:] if "." in filename else "png"
    write_bytes_atomic(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
