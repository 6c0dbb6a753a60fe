"""The whole BVLC Caffe layer catalogue is registered.

CAFFE_LAYER_TYPES is written out from BVLC Caffe's sources (checked against them, not
against our registry): the REGISTER_LAYER_CREATOR lines of src/caffe/layer_factory.cpp
(the layers with engines, and Python) and every REGISTER_LAYER_CLASS line in
src/caffe/layers/*.cpp.  It is Caffe 1.0's set plus Clip and Swish, which BVLC master
registered after the 1.0 tag.  Abstract bases (BaseConvolution, BaseData,
BasePrefetchingData, Loss, Neuron, Recurrent) and the cuDNN variants are not registered
by type in Caffe, so they are not here.
"""
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.proto import caffe_pb2

# REGISTER_LAYER_CREATOR in src/caffe/layer_factory.cpp.
FACTORY_CREATORS = ("Convolution", "Deconvolution", "Pooling", "LRN", "ReLU", "Sigmoid", "Softmax", "TanH",
                    "Python")

# REGISTER_LAYER_CLASS in src/caffe/layers/<name>_layer.cpp.
LAYER_CLASSES = (
    "AbsVal", "Accuracy", "ArgMax", "BatchNorm", "BatchReindex", "Bias", "BNLL", "Clip", "Concat",
    "ContrastiveLoss", "Crop", "Data", "Dropout", "DummyData", "Eltwise", "ELU", "Embed", "EuclideanLoss",
    "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output", "HingeLoss", "Im2col", "ImageData", "InfogainLoss",
    "InnerProduct", "Input", "Log", "LSTM", "LSTMUnit", "MemoryData", "MultinomialLogisticLoss", "MVN",
    "Parameter", "Power", "PReLU", "Reduction", "Reshape", "RNN", "Scale", "SigmoidCrossEntropyLoss",
    "Silence", "Slice", "SoftmaxWithLoss", "Split", "SPP", "Swish", "Threshold", "Tile", "WindowData",
)

CAFFE_LAYER_TYPES = FACTORY_CREATORS + LAYER_CLASSES


def test_the_catalogue_lists_each_type_once():
    assert len(set(CAFFE_LAYER_TYPES)) == len(CAFFE_LAYER_TYPES) == 61


@pytest.mark.parametrize("type_name", CAFFE_LAYER_TYPES)
def test_caffe_layer_type_is_registered(type_name):
    assert type_name in caffe.layer_type_list()


def test_every_caffe_type_is_registered_at_once():
    """One message listing every gap, for a reader who wants the whole picture."""
    missing = sorted(set(CAFFE_LAYER_TYPES) - set(caffe.layer_type_list()))
    assert not missing, f"BVLC Caffe layer types not registered: {', '.join(missing)}"


def test_every_v1_layer_enum_maps_to_a_registered_type():
    """Legacy V1 nets (layers { type: CONVOLUTION }) name types by enum; each must reach a layer."""
    from pycaffe_lite.proto.upgrade import v1_type_name
    registered = set(caffe.layer_type_list())
    enum = caffe_pb2.V1LayerParameter.LayerType
    unmapped = []
    for name, value in enum.items():
        if name == "NONE":
            continue
        if v1_type_name(value, name) not in registered:
            unmapped.append(name)
    assert not unmapped, f"V1 layer types without a registered layer: {unmapped}"


def test_unknown_type_lists_the_known_ones():
    from pycaffe_lite.layer import layer_class
    with pytest.raises(ValueError, match="unknown layer type 'Convolutin'.*Convolution"):
        layer_class("Convolutin", "conv1")
