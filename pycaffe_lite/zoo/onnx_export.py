"""Export a deploy net and its weights to ONNX (opset 13).

    net = caffe.Net("lenet.prototxt", "lenet.caffemodel", caffe.TEST)
    model = to_onnx(net)                # an onnx.ModelProto
    save_onnx(net, "lenet.onnx")

Each layer type's nodes come from the function registered beside the layer
(`pycaffe_lite.layer.onnx_export`), written through proto/onnx_graph.py's
OnnxGraph. `onnx` is an optional dependency, imported only when a graph is
made. Shapes are those of the net as built (batch size included), so the
exported graph is static; reshape the net's input before exporting for
another batch size. Caffe's
semantics carry over: pooling rounds up (`ceil_mode=1`), average pooling
counts the padding (`count_include_pad=1`), within-channel LRN is spelt out
as an average pool of squares. Layers with no inference meaning (losses,
accuracies, data readers) are refused: export a deploy net.
"""
from ..layer import onnx_exporter
from ..proto.onnx_graph import OnnxGraph

OPSET = 13


def to_onnx(net, graph_name=None):
    """An onnx.ModelProto computing `net`'s forward pass (inference) with its current weights.

    Each layer's nodes come from the ONNX function its type registered (`layer.onnx_export`)."""
    g = OnnxGraph()
    onnx, helper = g.onnx, g.helper
    # Which layer writes each blob last: it gets the Caffe name as its ONNX output.
    last_writer = {}
    for index, tops in enumerate(net.top_names.values()):
        for top in tops:
            last_writer[top] = index
    current = {}         # Caffe blob name -> ONNX tensor name now holding it
    for index, (layer, name) in enumerate(zip(net.layers, net.layer_names)):
        bottoms = [current[b] for b in net.bottom_names[name]]
        tops = []
        for top in net.top_names[name]:
            wanted = top if last_writer.get(top) == index and top not in g.used else f"{top}__{name}"
            tops.append(g.unique(wanted))
            g.shapes[tops[-1]] = tuple(net.blobs[top].shape)
        export = onnx_exporter(layer.type)
        if export is None:
            raise ValueError(f"layer '{name}' of type {layer.type} has no ONNX export; export a deploy net "
                             "(no data, loss or accuracy layers)")
        export(g, layer, bottoms, tops)
        for top, caffe_top in zip(tops, net.top_names[name]):
            current[caffe_top] = top
    outputs = [helper.make_tensor_value_info(current[b], onnx.TensorProto.FLOAT, list(net.blobs[b].shape))
               for b in net.outputs]
    graph = helper.make_graph(g.nodes, graph_name or net.name or "caffe_net", g.inputs, outputs, g.initializers)
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
