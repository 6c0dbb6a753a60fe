"""GoogLeNet (Inception v1) and Inception v3.

GoogLeNet follows Szegedy et al. 2014 (table 1) with BVLC's layer names, two
auxiliary classifiers (loss weight 0.3) in train_val only.

Inception v3 follows Szegedy et al. 2015, "Rethinking the Inception
Architecture" (figures 5-7 and table 1), as released in TF-slim: 299x299
input, factorised 1xN / Nx1 convolutions in the 17x17 blocks, expanded
1x3 / 3x1 filter banks in the 8x8 blocks, BatchNorm (eps 0.001) + Scale
after every convolution, one auxiliary classifier (loss weight 0.4) in
train_val.  Layer names are TF-slim's scope names, so converted TF weights
map one to one.
"""
from ._build import FROZEN3, W_B, W_ONLY, XAVIER, MSRA, Builder, constant, gaussian, imagenet_data

# ---------------------------------------------------------------------------- GoogLeNet
# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)   (paper, table 1)
GOOGLENET_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
_BIAS = constant(0.2)


def _g_conv(b, name, bottom, n, k, stride=None, pad=None, relu_name=None):
    x = b.conv(name, bottom, n, k, stride=stride, pad=pad, weight_filler=XAVIER, bias_filler=_BIAS,
               param=W_B)
    b.relu(relu_name, x)
    return x


def _g_inception(b, block, x):
    n1, r3, n3, r5, n5, proj = GOOGLENET_BLOCKS[block]
    p = f"inception_{block}"
    a = _g_conv(b, f"{p}/1x1", x, n1, 1, relu_name=f"{p}/relu_1x1")
    c = _g_conv(b, f"{p}/3x3_reduce", x, r3, 1, relu_name=f"{p}/relu_3x3_reduce")
    c = _g_conv(b, f"{p}/3x3", c, n3, 3, pad=1, relu_name=f"{p}/relu_3x3")
    d = _g_conv(b, f"{p}/5x5_reduce", x, r5, 1, relu_name=f"{p}/relu_5x5_reduce")
    d = _g_conv(b, f"{p}/5x5", d, n5, 5, pad=2, relu_name=f"{p}/relu_5x5")
    e = b.pool(f"{p}/pool", x, "MAX", 3, 1, 1)
    e = _g_conv(b, f"{p}/pool_proj", e, proj, 1, relu_name=f"{p}/relu_pool_proj")
    return b.concat(f"{p}/output", [a, c, d, e])


def _g_aux(b, index, x, num_classes):
    p = f"loss{index}"
    x = b.pool(f"{p}/ave_pool", x, "AVE", 5, 3)
    x = _g_conv(b, f"{p}/conv", x, 128, 1, relu_name=f"{p}/relu_conv")
    x = b.ip(f"{p}/fc", x, 1024, XAVIER, _BIAS, param=W_B)
    b.relu(f"{p}/relu_fc", x)
    b.dropout(f"{p}/drop_fc", x, 0.7)
    x = b.ip(f"{p}/classifier", x, num_classes, XAVIER, constant(0), param=W_B)
    b.softmax_loss(f"{p}/loss", x, loss_weight=0.3, top=f"{p}/loss{index}")
    b.accuracy(f"{p}/top-1", x, top=f"{p}/top-1")
    b.accuracy(f"{p}/top-5", x, top_k=5, top=f"{p}/top-5")


def googlenet(num_classes=1000):
    """GoogLeNet; the deploy net (no auxiliary classifiers) has 6,998,552 parameters."""
    b = Builder("GoogleNet")
    train, test = imagenet_data(224, 32, 50, mean_values=(104, 117, 123))
    x = b.data_pair("data", train, test)
    x = _g_conv(b, "conv1/7x7_s2", x, 64, 7, stride=2, pad=3, relu_name="conv1/relu_7x7")
    x = b.pool("pool1/3x3_s2", x, "MAX", 3, 2)
    x = b.lrn("pool1/norm1", x, 5, 0.0001, 0.75)
    x = _g_conv(b, "conv2/3x3_reduce", x, 64, 1, relu_name="conv2/relu_3x3_reduce")
    x = _g_conv(b, "conv2/3x3", x, 192, 3, pad=1, relu_name="conv2/relu_3x3")
    x = b.lrn("conv2/norm2", x, 5, 0.0001, 0.75)
    x = b.pool("pool2/3x3_s2", x, "MAX", 3, 2)
    x = _g_inception(b, "3a", x)
    x = _g_inception(b, "3b", x)
    x = b.pool("pool3/3x3_s2", x, "MAX", 3, 2)
    x = _g_inception(b, "4a", x)
    _g_aux(b, 1, x, num_classes)
    for block in ("4b", "4c", "4d"):
        x = _g_inception(b, block, x)
    _g_aux(b, 2, x, num_classes)
    x = _g_inception(b, "4e", x)
    x = b.pool("pool4/3x3_s2", x, "MAX", 3, 2)
    x = _g_inception(b, "5a", x)
    x = _g_inception(b, "5b", x)
    x = b.pool("pool5/7x7_s1", x, "AVE", 7, 1)
    b.dropout("pool5/drop_7x7_s1", x, 0.4)
    x = b.ip("loss3/classifier", x, num_classes, XAVIER, constant(0), param=W_B)
    b.softmax_loss("loss3/loss3", x, loss_weight=1)
    b.accuracy("loss3/top-1", x)
    b.accuracy("loss3/top-5", x, top_k=5)
    return b.net


# ---------------------------------------------------------------------------- Inception v3
BN_EPS = 0.001


def _v3_conv(b, name, bottom, n, kernel, stride=None, pad=None):
    """Convolution (no bias) + BatchNorm + Scale + ReLU, TF-slim's conv2d with batch norm."""
    x = b.conv(name, bottom, n, kernel, stride=stride, pad=pad, bias_term=False,
               weight_filler=MSRA, param=W_ONLY)
    b.batch_norm(f"{name}/bn", x, eps=BN_EPS, param=FROZEN3)
    b.scale(f"{name}/scale", x)
    b.relu(f"{name}/relu", x)
    return x


def _block_a(b, p, x, pool_features):                      # 35x35, figure 5
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_0a_1x1", x, 64, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0a_1x1", x, 48, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_5x5", c, 64, 5, pad=2)
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0a_1x1", x, 64, 1)
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0b_3x3", d, 96, 3, pad=1)
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0c_3x3", d, 96, 3, pad=1)
    e = b.pool(f"{p}/Branch_3/AvgPool_0a_3x3", x, "AVE", 3, 1, 1)
    e = _v3_conv(b, f"{p}/Branch_3/Conv2d_0b_1x1", e, pool_features, 1)
    return b.concat(f"{p}/concat", [a, c, d, e], top=p)


def _reduction_a(b, p, x):                                   # 35x35 -> 17x17
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_1a_3x3", x, 384, 3, stride=2)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0a_1x1", x, 64, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_3x3", c, 96, 3, pad=1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_1a_1x1", c, 96, 3, stride=2)
    d = b.pool(f"{p}/Branch_2/MaxPool_1a_3x3", x, "MAX", 3, 2)
    return b.concat(f"{p}/concat", [a, c, d], top=p)


def _block_b(b, p, x, c7):                                  # 17x17, figure 6: factorised 7x7
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_0a_1x1", x, 192, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0a_1x1", x, c7, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_1x7", c, c7, (1, 7), pad=(0, 3))
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0c_7x1", c, 192, (7, 1), pad=(3, 0))
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0a_1x1", x, c7, 1)
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0b_7x1", d, c7, (7, 1), pad=(3, 0))
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0c_1x7", d, c7, (1, 7), pad=(0, 3))
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0d_7x1", d, c7, (7, 1), pad=(3, 0))
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0e_1x7", d, 192, (1, 7), pad=(0, 3))
    e = b.pool(f"{p}/Branch_3/AvgPool_0a_3x3", x, "AVE", 3, 1, 1)
    e = _v3_conv(b, f"{p}/Branch_3/Conv2d_0b_1x1", e, 192, 1)
    return b.concat(f"{p}/concat", [a, c, d, e], top=p)


def _reduction_b(b, p, x):                                   # 17x17 -> 8x8
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_0a_1x1", x, 192, 1)
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_1a_3x3", a, 320, 3, stride=2)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0a_1x1", x, 192, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_1x7", c, 192, (1, 7), pad=(0, 3))
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0c_7x1", c, 192, (7, 1), pad=(3, 0))
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_1a_3x3", c, 192, 3, stride=2)
    d = b.pool(f"{p}/Branch_2/MaxPool_1a_3x3", x, "MAX", 3, 2)
    return b.concat(f"{p}/concat", [a, c, d], top=p)


def _block_c(b, p, x):                                       # 8x8, figure 7: expanded banks
    a = _v3_conv(b, f"{p}/Branch_0/Conv2d_0a_1x1", x, 320, 1)
    c = _v3_conv(b, f"{p}/Branch_1/Conv2d_0a_1x1", x, 384, 1)
    c1 = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_1x3", c, 384, (1, 3), pad=(0, 1))
    c2 = _v3_conv(b, f"{p}/Branch_1/Conv2d_0b_3x1", c, 384, (3, 1), pad=(1, 0))
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0a_1x1", x, 448, 1)
    d = _v3_conv(b, f"{p}/Branch_2/Conv2d_0b_3x3", d, 384, 3, pad=1)
    d1 = _v3_conv(b, f"{p}/Branch_2/Conv2d_0c_1x3", d, 384, (1, 3), pad=(0, 1))
    d2 = _v3_conv(b, f"{p}/Branch_2/Conv2d_0d_3x1", d, 384, (3, 1), pad=(1, 0))
    e = b.pool(f"{p}/Branch_3/AvgPool_0a_3x3", x, "AVE", 3, 1, 1)
    e = _v3_conv(b, f"{p}/Branch_3/Conv2d_0b_1x1", e, 192, 1)
    return b.concat(f"{p}/concat", [a, c1, c2, d1, d2, e], top=p)


def inception_v3(num_classes=1000):
    """Inception v3; the deploy net (no auxiliary head) has 23,834,568 parameters."""
    b = Builder("InceptionV3")
    train, test = imagenet_data(299, 32, 25, mean_values=(128, 128, 128), scale=0.0078125)
    x = b.data_pair("data", train, test)
    x = _v3_conv(b, "Conv2d_1a_3x3", x, 32, 3, stride=2)    # 149x149
    x = _v3_conv(b, "Conv2d_2a_3x3", x, 32, 3)              # 147x147
    x = _v3_conv(b, "Conv2d_2b_3x3", x, 64, 3, pad=1)       # 147x147
    x = b.pool("MaxPool_3a_3x3", x, "MAX", 3, 2)            # 73x73
    x = _v3_conv(b, "Conv2d_3b_1x1", x, 80, 1)
    x = _v3_conv(b, "Conv2d_4a_3x3", x, 192, 3)             # 71x71
    x = b.pool("MaxPool_5a_3x3", x, "MAX", 3, 2)            # 35x35
    x = _block_a(b, "Mixed_5b", x, 32)
    x = _block_a(b, "Mixed_5c", x, 64)
    x = _block_a(b, "Mixed_5d", x, 64)
    x = _reduction_a(b, "Mixed_6a", x)                      # 17x17
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = _block_b(b, name, x, c7)
    # auxiliary classifier on Mixed_6e (train_val only)
    a = b.pool("AuxLogits/AvgPool_1a_5x5", x, "AVE", 5, 3)  # 5x5
    a = _v3_conv(b, "AuxLogits/Conv2d_1b_1x1", a, 128, 1)
    a = _v3_conv(b, "AuxLogits/Conv2d_2a_5x5", a, 768, 5)   # 1x1
    a = b.ip("AuxLogits/Logits", a, num_classes, gaussian(0.001), constant(0), param=W_B)
    b.softmax_loss("AuxLogits/loss", a, loss_weight=0.4)
    x = _reduction_b(b, "Mixed_7a", x)                      # 8x8
    x = _block_c(b, "Mixed_7b", x)
    x = _block_c(b, "Mixed_7c", x)
    x = b.pool("Logits/AvgPool_1a_8x8", x, "AVE", 8, 1)
    b.dropout("Logits/Dropout_1b", x, 0.2)
    x = b.ip("Logits", x, num_classes, XAVIER, constant(0), param=W_B)
    b.accuracy("accuracy", x)
    b.accuracy("accuracy_top5", x, top_k=5)
    b.softmax_loss("loss", x)
    return b.net
