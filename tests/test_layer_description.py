"""What a layer type says about itself from its definition (the class-level hooks of
pycaffe_lite.layer.Layer) matches what the built layer does."""
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import create_layer, layer_class
from pycaffe_lite.proto import caffe_pb2

from layer_cases import CASES as ALL_CASES  # the layer harness's table: a case per layer type
from layer_cases import _param, bottom_arrays

CASES = [c for c in ALL_CASES if not c.shape_only]     # data layers read files and have no parameters


def _set_up(case):
    bottom = []
    for array in bottom_arrays(case, np.float32):
        blob = Blob(array.shape, dtype=array.dtype)
        blob.data[...] = array
        bottom.append(blob)
    top = [Blob((), dtype=np.float32) for _ in range(case.num_tops)]
    layer = create_layer(_param(case), case.phase)
    layer.SetUp(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_param_shapes_are_the_blobs_setup_creates(case):
    layer, bottom, _ = _set_up(case)
    param = _param(case)
    param.bottom.extend(f"bottom{i}" for i in range(len(bottom)))   # as a net's definition names them
    hook = layer_class(param.type).param_shapes
    built = [tuple(b.shape) for b in layer.blobs]
    assert [tuple(s) for s in hook(param, [b.shape for b in bottom])] == built
    # From the definition alone: the same number of blobs, and every dimension it fixes is right.
    static = hook(param)
    assert len(static) == len(built)
    for shape, actual in zip(static, built):
        if shape is not None:
            assert len(shape) == len(actual)
            assert all(d is None or d == a for d, a in zip(shape, actual)), (shape, actual)


def test_the_cases_cover_layers_with_parameters():
    with_params = {c.type for c in CASES if _set_up(c)[0].blobs}
    assert {"Convolution", "Deconvolution", "InnerProduct", "Embed", "Scale", "Bias", "BatchNorm", "PReLU",
            "Parameter", "LSTM", "RNN"} <= with_params


def test_static_shapes_of_a_convolution_fix_num_output_and_kernel():
    param = text_format.Parse('name: "c" type: "Convolution" convolution_param { num_output: 8 kernel_h: 3 '
                              'kernel_w: 5 group: 2 }', caffe_pb2.LayerParameter())
    assert layer_class("Convolution").param_shapes(param) == [(8, None, 3, 5), (8,)]
    assert layer_class("Deconvolution").param_shapes(param) == [(None, 4, 3, 5), (8,)]
    assert layer_class("Convolution").param_shapes(param, [(1, 6, 9, 9)]) == [(8, 3, 3, 5), (8,)]


def test_a_scale_with_a_second_bottom_learns_only_its_bias():
    param = text_format.Parse('name: "s" type: "Scale" bottom: "x" bottom: "s" scale_param { bias_term: true }',
                              caffe_pb2.LayerParameter())
    assert layer_class("Scale").param_shapes(param) == [None]
    assert layer_class("Scale").param_shapes(param, [(2, 3, 4, 4), (2, 3)]) == [(3, 4)]


def test_recurrent_static_input_counts_beside_the_exposed_state():
    # x, cont, h_0, c_0 with expose_hidden: no static input, three blobs (Caffe's LSTMLayer).
    param = text_format.Parse('name: "l" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" '
                              'recurrent_param { num_output: 5 expose_hidden: true }', caffe_pb2.LayerParameter())
    assert layer_class("LSTM").param_shapes(param) == [(20, None), (20,), (20, 5)]


_UNKNOWN = '''name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "norm4" type: "Normalize" bottom: "data" top: "norm4" }'''


def test_surgery_refuses_a_layer_type_it_does_not_know():
    from pycaffe_lite.zoo.surgery import learnable_layers
    net = text_format.Parse(_UNKNOWN, caffe_pb2.NetParameter())
    with pytest.raises(ValueError, match="layer 'norm4': unknown layer type 'Normalize'"):
        learnable_layers(net)


def test_convert_refuses_a_layer_type_it_does_not_know():
    from pycaffe_lite.zoo.convert import check_param_shapes
    net = text_format.Parse(_UNKNOWN, caffe_pb2.NetParameter())
    with pytest.raises(ValueError, match="layer 'norm4': unknown layer type 'Normalize'"):
        check_param_shapes({"norm4": [np.ones(3, np.float32)]}, net)


@pytest.mark.parametrize("case", [c for c in CASES if c.type in ("Convolution", "Deconvolution", "InnerProduct")],
                         ids=lambda c: c.id)
def test_multiply_adds_of_the_products(case):
    layer, bottom, top = _set_up(case)
    per_output = int(np.prod(layer.blobs[0].shape[1:]))     # C/group x taps for (de)convolution
    expected = {"Convolution": top[0].count * per_output, "Deconvolution": bottom[0].count * per_output,
                "InnerProduct": top[0].count * layer.blobs[0].count // top[0].shape[-1]}[case.type]   # x K
    assert layer_class(case.type).madds(_param(case), [b.shape for b in bottom], [t.shape for t in top]) == expected


def test_receptive_field_steps():
    from pycaffe_lite.geometry import GLOBAL, SAME
    conv = text_format.Parse('name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
                             'stride: 2 dilation: 2 }', caffe_pb2.LayerParameter())
    step = layer_class("Convolution").field_step(conv, [(1, 3, 20, 20)])
    assert step.apply((3, 3), (2, 2), [(1, 3, 20, 20)], (1, 2, 8, 8)) == ((11, 11), (4, 4))     # extent 5
    deconv = layer_class("Deconvolution").field_step(conv, [(1, 3, 20, 20)])
    assert deconv.apply((3, 3), (4, 4), [(1, 3, 20, 20)], (1, 2, 43, 43)) == ((11, 11), (2.0, 2.0))
    pool = text_format.Parse('name: "p" type: "Pooling" pooling_param { pool: MAX global_pooling: true }',
                             caffe_pb2.LayerParameter())
    assert layer_class("Pooling").field_step(pool, [(1, 3, 7, 5)]).extent == (7, 5)
    assert layer_class("ReLU").field is SAME and layer_class("Concat").field is SAME
    assert layer_class("InnerProduct").field.apply((3, 3), (1, 1), [(1, 3, 4, 4)], (1, 10)) == GLOBAL
    assert layer_class("Crop").field.bottoms == 1
    assert layer_class("Accuracy").field_step(caffe_pb2.LayerParameter(), [(2, 3)]) is None


def test_onnx_functions_belong_to_registered_types_and_register_once():
    from pycaffe_lite import layer as registry
    registry.onnx_exporter("ReLU")                  # loads the layers
    assert set(registry._ONNX_EXPORTS) <= set(registry.layer_type_list())
    assert registry.onnx_exporter("SoftmaxWithLoss") is None
    with pytest.raises(ValueError, match="layer type 'ReLU' has two ONNX exports"):
        registry.onnx_export("ReLU")(lambda g, layer, bottoms, tops: None)
