"""ResNet-50, SqueezeNet v1.1 and MobileNet v1.

- ResNet-50 (He et al. 2015, table 1): bottleneck blocks 1x1 / 3x3 / 1x1 in
  stages of 3, 4, 6, 3; projection shortcuts where the shape changes; the
  stride sits on the first 1x1 as in MSRA's released Caffe model; every
  convolution is bias-free and followed by BatchNorm + Scale.  Layer names are
  MSRA's (`res2a_branch2a`, `bn2a_branch2a`, `scale2a_branch2a`).
- SqueezeNet v1.1 (Iandola et al. 2016; DeepScale's v1.1 release): 3x3 conv1
  with 64 filters, fire modules 2-9, pooling after conv1, fire3 and fire5,
  conv10 + global average pooling as the classifier.
- MobileNet v1 (Howard et al. 2017, table 1; width 1.0, 224x224): a 3x3 conv
  then 13 depthwise-separable blocks, the depthwise 3x3 as a Convolution with
  `group` equal to its channels, each conv followed by BatchNorm + Scale +
  ReLU; names as in the widely used Caffe port (`conv2_1/dw`, `conv2_1/sep`).
"""
from ._build import FROZEN3, MSRA, W_B, W_ONLY, XAVIER, Builder, constant, gaussian, imagenet_data


# ---------------------------------------------------------------------------- ResNet-50
RESNET50_STAGES = ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512))


def _res_conv(b, bottom, n, kernel, stride=1, pad=0, suffix="", relu=True):
    """res{suffix} conv + bn{suffix} + scale{suffix} (+ ReLU), MSRA's naming."""
    x = b.conv(f"res{suffix}", bottom, n, kernel, stride=stride, pad=pad, bias_term=False,
               weight_filler=MSRA, param=W_ONLY)
    b.batch_norm(f"bn{suffix}", x, param=FROZEN3)
    b.scale(f"scale{suffix}", x)
    if relu:
        b.relu(f"res{suffix}_relu", x)
    return x


def resnet50(num_classes=1000):
    """ResNet-50; 25,557,096 parameters (MSRA's conv1 keeps its bias: 64 more than torchvision's)."""
    b = Builder("ResNet-50")
    train, test = imagenet_data(224, 32, 50, mean_values=(104, 117, 123))
    x = b.data_pair("data", train, test)
    x = b.conv("conv1", x, 64, 7, stride=2, pad=3, weight_filler=MSRA, bias_filler=constant(0),
               param=W_B)
    b.batch_norm("bn_conv1", x, param=FROZEN3)
    b.scale("scale_conv1", x)
    b.relu("conv1_relu", x)
    x = b.pool("pool1", x, "MAX", 3, 2)
    for stage, blocks, width in RESNET50_STAGES:
        for index in range(blocks):
            block = f"{stage}{chr(ord('a') + index)}"
            stride = 2 if (index == 0 and stage > 2) else 1
            if index == 0:
                shortcut = _res_conv(b, x, width * 4, 1, stride=stride,
                                     suffix=f"{block}_branch1", relu=False)
            else:
                shortcut = x
            y = _res_conv(b, x, width, 1, stride=stride, suffix=f"{block}_branch2a")
            y = _res_conv(b, y, width, 3, pad=1, suffix=f"{block}_branch2b")
            y = _res_conv(b, y, width * 4, 1, suffix=f"{block}_branch2c", relu=False)
            x = b.eltwise_sum(f"res{block}", [shortcut, y])
            b.relu(f"res{block}_relu", x)
    x = b.pool("pool5", x, "AVE", 7, 1)
    x = b.ip("fc1000", x, num_classes, MSRA, constant(0), param=W_B)
    b.accuracy("accuracy", x)
    b.accuracy("accuracy_top5", x, top_k=5)
    b.softmax_loss("loss", x)
    return b.net


# ---------------------------------------------------------------------------- SqueezeNet v1.1
# fire module: (squeeze 1x1, expand 1x1 = expand 3x3)
SQUEEZENET_FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128),
                    6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}


def _fire(b, index, x):
    squeeze, expand = SQUEEZENET_FIRES[index]
    p = f"fire{index}"
    s = b.conv(f"{p}/squeeze1x1", x, squeeze, 1, weight_filler=XAVIER)
    b.relu(f"{p}/relu_squeeze1x1", s)
    e1 = b.conv(f"{p}/expand1x1", s, expand, 1, weight_filler=XAVIER)
    b.relu(f"{p}/relu_expand1x1", e1)
    e3 = b.conv(f"{p}/expand3x3", s, expand, 3, pad=1, weight_filler=XAVIER)
    b.relu(f"{p}/relu_expand3x3", e3)
    return b.concat(f"{p}/concat", [e1, e3])


def squeezenet_v1_1(num_classes=1000):
    """SqueezeNet v1.1; 1,235,496 parameters."""
    b = Builder("SqueezeNet_v1.1")
    train, test = imagenet_data(227, 32, 25, mean_values=(104, 117, 123))
    x = b.data_pair("data", train, test)
    x = b.conv("conv1", x, 64, 3, stride=2, weight_filler=XAVIER)
    b.relu("relu_conv1", x)
    x = b.pool("pool1", x, "MAX", 3, 2)
    x = _fire(b, 2, x)
    x = _fire(b, 3, x)
    x = b.pool("pool3", x, "MAX", 3, 2)
    x = _fire(b, 4, x)
    x = _fire(b, 5, x)
    x = b.pool("pool5", x, "MAX", 3, 2)
    for index in (6, 7, 8, 9):
        x = _fire(b, index, x)
    b.dropout("drop9", x, 0.5)
    x = b.conv("conv10", x, num_classes, 1, weight_filler=gaussian(0.01))
    b.relu("relu_conv10", x)
    x = b.pool("pool10", x, "AVE", global_pooling=True)
    b.softmax_loss("loss", x)
    b.accuracy("accuracy", x)
    b.accuracy("accuracy_top5", x, top_k=5)
    return b.net


# ---------------------------------------------------------------------------- MobileNet v1
# (block name, stride of the depthwise conv, channels out of the pointwise conv)   table 1
MOBILENET_BLOCKS = (("conv2_1", 1, 64), ("conv2_2", 2, 128), ("conv3_1", 1, 128),
                    ("conv3_2", 2, 256), ("conv4_1", 1, 256), ("conv4_2", 2, 512),
                    ("conv5_1", 1, 512), ("conv5_2", 1, 512), ("conv5_3", 1, 512),
                    ("conv5_4", 1, 512), ("conv5_5", 1, 512), ("conv5_6", 2, 1024),
                    ("conv6", 1, 1024))


def _mb_conv(b, name, relu_name, bottom, n, kernel, stride=1, pad=0, group=None):
    x = b.conv(name, bottom, n, kernel, stride=stride, pad=pad, group=group, bias_term=False,
               weight_filler=MSRA, param=W_ONLY)
    y = b.batch_norm(f"{name}/bn", x, param=FROZEN3, top=f"{name}/bn")
    b.scale(f"{name}/scale", y)
    b.relu(relu_name, y)
    return y


def mobilenet_v1(num_classes=1000):
    """MobileNet v1 1.0-224; 4,231,976 parameters."""
    b = Builder("MobileNet")
    train, test = imagenet_data(224, 64, 50, mean_values=(103.94, 116.78, 123.68), scale=0.017)
    x = b.data_pair("data", train, test)
    x = _mb_conv(b, "conv1", "relu1", x, 32, 3, stride=2, pad=1)
    channels = 32
    for block, stride, out in MOBILENET_BLOCKS:
        tail = block[len("conv"):]
        x = _mb_conv(b, f"{block}/dw", f"relu{tail}/dw", x, channels, 3, stride=stride, pad=1,
                     group=channels)
        x = _mb_conv(b, f"{block}/sep", f"relu{tail}/sep", x, out, 1)
        channels = out
    x = b.pool("pool6", x, "AVE", global_pooling=True)
    x = b.conv("fc7", x, num_classes, 1, weight_filler=MSRA, bias_filler=constant(0), param=W_B)
    b.accuracy("accuracy", x)
    b.accuracy("accuracy_top5", x, top_k=5)
    b.softmax_loss("loss", x)
    return b.net
