"""Seed inputs for the fuzz tests: small but whole files of each kind the parsers read, and the mutations
applied to them (byte edits, numbers swapped for extreme ones, spans cut, copied or truncated)."""
import re

import numpy as np

NET = '''name: "seed"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 1e-5 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "slice" type: "Slice" bottom: "norm1" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "s1" bottom: "s2" top: "sum" eltwise_param { operation: SUM } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "s1" top: "cat" concat_param { axis: 1 } }
layer { name: "drop" type: "Dropout" bottom: "cat" top: "cat" dropout_param { dropout_ratio: 0.5 } }
layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "resh" type: "Reshape" bottom: "ip" top: "resh" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "resh" bottom: "label" top: "loss" loss_weight: 1 }
'''

LEGACY_NET = '''name: "legacy"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 8 input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 3 kernel_size: 3 stride: 1 weight_filler { type: "xavier" } } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "relu1" type: RELU bottom: "pool1" top: "pool1" }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1" inner_product_param { num_output: 4 } }
layers { name: "prob" type: SOFTMAX bottom: "ip1" top: "prob" }
'''

V0_NET = '''name: "v0"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 6 input_dim: 6
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 2 kernelsize: 3 } bottom: "pad1" top: "conv1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 3 } bottom: "conv1" top: "fc" }
'''

SOLVER = '''net: "NET"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.1 stepsize: 100
max_iter: 10 display: 0 snapshot: 0 snapshot_prefix: "PREFIX" type: "SGD" solver_mode: CPU
'''

EXTREMES = [b"0", b"-1", b"1", b"2147483647", b"2147483648", b"4294967296", b"-2147483649",
            b"9223372036854775808", b"1e38", b"-1e38", b"1e-45", b"nan", b"inf", b"-inf", b"65535", b"3.5"]
NUMBER = re.compile(rb"-?\d+(\.\d+)?(e-?\d+)?")


def mutate(seed, ops):
    """Apply [(kind, position, payload)] to bytes `seed`; positions wrap around the current length."""
    data = bytearray(seed)
    for kind, position, payload in ops:
        n = max(len(data), 1)
        at = position % n
        if kind == "flip":
            if data:
                data[at] ^= 1 << (payload[0] % 8 if payload else 0)
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "delete":
            del data[at:at + 1 + (payload[0] if payload else 0) % 32]
        elif kind == "copy":
            span = bytes(data[at:at + 1 + (payload[0] if payload else 0) % 64])
            where = (position * 7 + 13) % n
            data[where:where] = span
        elif kind == "truncate":
            del data[at:]
        elif kind == "number":
            numbers = list(NUMBER.finditer(data))
            if numbers:
                match = numbers[at % len(numbers)]
                data[match.start():match.end()] = EXTREMES[(payload[0] if payload else 0) % len(EXTREMES)]
    return bytes(data)


def weights_of(net):
    return net.to_proto().SerializeToString()


def mean_file_bytes():
    from pycaffe_lite.proto.blobs import array_to_blob_proto
    return array_to_blob_proto(np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)).SerializeToString()


def datum_bytes(encoded=False):
    from pycaffe_lite.data.datum import image_to_datum
    image = (np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
    if encoded:
        import cv2
        from pycaffe_lite.proto import caffe_pb2
        ok, png = cv2.imencode(".png", image)
        datum = caffe_pb2.Datum(data=png.tobytes(), encoded=True, label=3)
        return datum.SerializeToString()
    return image_to_datum(image, 3).SerializeToString()
