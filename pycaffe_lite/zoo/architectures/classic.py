"""CIFAR-10 quick/full, CaffeNet, AlexNet, Flickr-style CaffeNet and VGG16.

Written from the architectures as published (Krizhevsky et al. 2012; the
BVLC reference models and CIFAR-10 examples; Simonyan & Zisserman 2014,
configuration D).  Layer names follow the published Caffe models, so their
released weights load by name.  Each function returns the train_val
NetParameter; `architectures.deploy()` derives the deploy net from it.
"""
from ._build import W_B, XAVIER, Builder, constant, gaussian, imagenet_data

IMAGENET_MEAN_FILE = "data/ilsvrc12/imagenet_mean.binaryproto"


# --------------------------------------------------------------------------- CIFAR-10
def _cifar_data(b):
    def fields(source):
        return dict(transform_param=dict(mean_file="examples/cifar10/mean.binaryproto"),
                    data_param=dict(source=source, batch_size=100, backend="LMDB"))
    return b.data_pair("cifar", fields("examples/cifar10/cifar10_train_lmdb"),
                       fields("examples/cifar10/cifar10_test_lmdb"))


def _cifar_conv(b, name, bottom, num_output, std, param=True):
    return b.conv(name, bottom, num_output, 5, stride=1, pad=2, weight_filler=gaussian(std),
                  bias_filler=constant(), param=[dict(lr_mult=1), dict(lr_mult=2)] if param else None)


def cifar10_quick(num_classes=10):
    """Caffe's CIFAR-10 "quick" net: 3 x (5x5 conv, pool), 64-unit fc, 145,578 parameters."""
    b = Builder("CIFAR10_quick")
    x = _cifar_data(b)
    x = _cifar_conv(b, "conv1", x, 32, 0.0001)
    x = b.pool("pool1", x, "MAX", 3, 2)
    b.relu("relu1", x)
    x = _cifar_conv(b, "conv2", x, 32, 0.01)
    b.relu("relu2", x)
    x = b.pool("pool2", x, "AVE", 3, 2)
    x = _cifar_conv(b, "conv3", x, 64, 0.01)
    b.relu("relu3", x)
    x = b.pool("pool3", x, "AVE", 3, 2)
    x = b.ip("ip1", x, 64, gaussian(0.1), constant(), param=[dict(lr_mult=1), dict(lr_mult=2)])
    x = b.ip("ip2", x, num_classes, gaussian(0.1), constant(), param=[dict(lr_mult=1), dict(lr_mult=2)])
    b.accuracy("accuracy", x)
    b.softmax_loss("loss", x)
    return b.net


def cifar10_full(num_classes=10):
    """Caffe's CIFAR-10 "full" net: adds within-channel LRN, 89,578 parameters."""
    b = Builder("CIFAR10_full")
    x = _cifar_data(b)
    x = _cifar_conv(b, "conv1", x, 32, 0.0001)
    x = b.pool("pool1", x, "MAX", 3, 2)
    b.relu("relu1", x)
    x = b.lrn("norm1", x, 3, 5e-05, 0.75, "WITHIN_CHANNEL")
    x = _cifar_conv(b, "conv2", x, 32, 0.01)
    b.relu("relu2", x)
    x = b.pool("pool2", x, "AVE", 3, 2)
    x = b.lrn("norm2", x, 3, 5e-05, 0.75, "WITHIN_CHANNEL")
    x = _cifar_conv(b, "conv3", x, 64, 0.01, param=False)
    b.relu("relu3", x)
    x = b.pool("pool3", x, "AVE", 3, 2)
    x = b.ip("ip1", x, num_classes, gaussian(0.01), constant(),
             param=[dict(lr_mult=1, decay_mult=250), dict(lr_mult=2, decay_mult=0)])
    b.accuracy("accuracy", x)
    b.softmax_loss("loss", x)
    return b.net


# --------------------------------------------------------------------------- AlexNet family
def _alexnet_body(b, x, lrn_first, bias_one, fc8_name="fc8", num_classes=1000, fc8_lr=(1, 2)):
    """conv1..fc8 of AlexNet (lrn_first=True) or CaffeNet (pool before norm).

    `bias_one`: the constant AlexNet's paper puts in the biases of conv2, conv4,
    conv5 and the fully-connected layers (BVLC: 1 for CaffeNet, 0.1 for AlexNet).
    """
    def conv(name, bottom, n, k, stride=None, pad=None, group=None, bias=0):
        return b.conv(name, bottom, n, k, stride=stride, pad=pad, group=group,
                      weight_filler=gaussian(0.01), bias_filler=constant(bias), param=W_B)

    def pool_norm(index, bottom):
        pool = lambda inp: b.pool(f"pool{index}", inp, "MAX", 3, 2)  # noqa: E731
        norm = lambda inp: b.lrn(f"norm{index}", inp, 5, 0.0001, 0.75)  # noqa: E731
        return pool(norm(bottom)) if lrn_first else norm(pool(bottom))

    x = conv("conv1", x, 96, 11, stride=4)
    b.relu("relu1", x)
    x = pool_norm(1, x)
    x = conv("conv2", x, 256, 5, pad=2, group=2, bias=bias_one)
    b.relu("relu2", x)
    x = pool_norm(2, x)
    x = conv("conv3", x, 384, 3, pad=1)
    b.relu("relu3", x)
    x = conv("conv4", x, 384, 3, pad=1, group=2, bias=bias_one)
    b.relu("relu4", x)
    x = conv("conv5", x, 256, 3, pad=1, group=2, bias=bias_one)
    b.relu("relu5", x)
    x = b.pool("pool5", x, "MAX", 3, 2)
    for index in (6, 7):
        x = b.ip(f"fc{index}", x, 4096, gaussian(0.005), constant(bias_one), param=W_B)
        b.relu(f"relu{index}", x)
        b.dropout(f"drop{index}", x, 0.5)
    lr_w, lr_b = fc8_lr
    return b.ip(fc8_name, x, num_classes, gaussian(0.01), constant(0),
                param=[dict(lr_mult=lr_w, decay_mult=1), dict(lr_mult=lr_b, decay_mult=0)])


def _imagenet_head(b, x):
    b.accuracy("accuracy", x)
    b.softmax_loss("loss", x)
    return b.net


def caffenet(num_classes=1000):
    """BVLC CaffeNet: AlexNet with pooling before normalisation; 60,965,224 parameters."""
    b = Builder("CaffeNet")
    train, test = imagenet_data(227, 256, 50, mean_file=IMAGENET_MEAN_FILE)
    x = b.data_pair("data", train, test)
    x = _alexnet_body(b, x, lrn_first=False, bias_one=1, num_classes=num_classes)
    return _imagenet_head(b, x)


def alexnet(num_classes=1000):
    """AlexNet as published (LRN before pooling, two-group convs); 60,965,224 parameters."""
    b = Builder("AlexNet")
    train, test = imagenet_data(227, 256, 50, mean_file=IMAGENET_MEAN_FILE)
    x = b.data_pair("data", train, test)
    x = _alexnet_body(b, x, lrn_first=True, bias_one=0.1, num_classes=num_classes)
    return _imagenet_head(b, x)


def finetune_flickr_style(num_classes=20):
    """CaffeNet with a new 20-way `fc8_flickr` (10x/20x learning rate) for Flickr Style.

    BVLC's original reads image lists with ImageData layers; this one reads
    LMDBs made from those lists (`convert_imageset --resize_height 256
    --resize_width 256`), like the rest of the zoo.
    """
    b = Builder("FlickrStyleCaffeNet")
    train, test = imagenet_data(227, 50, 50, mean_file=IMAGENET_MEAN_FILE,
                                train_source="data/flickr_style/flickr_style_train_lmdb",
                                test_source="data/flickr_style/flickr_style_test_lmdb")
    x = b.data_pair("data", train, test)
    x = _alexnet_body(b, x, lrn_first=False, bias_one=1, fc8_name="fc8_flickr",
                      num_classes=num_classes, fc8_lr=(10, 20))
    return _imagenet_head(b, x)


# --------------------------------------------------------------------------- VGG
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16(num_classes=1000):
    """VGG16 (configuration D): 13 3x3 convs in 5 stages, three fc; 138,357,544 parameters.

    Initialised with Xavier (the paper's later note: Glorot initialisation
    trains the deep configurations without pre-training shallower ones).
    """
    b = Builder("VGG_ILSVRC_16_layers")
    train, test = imagenet_data(224, 64, 50, mean_values=(103.939, 116.779, 123.68))
    x = b.data_pair("data", train, test)
    for stage, (channels, depth) in enumerate(VGG16_STAGES, start=1):
        for i in range(1, depth + 1):
            x = b.conv(f"conv{stage}_{i}", x, channels, 3, pad=1, weight_filler=XAVIER,
                       bias_filler=constant(0), param=W_B)
            b.relu(f"relu{stage}_{i}", x)
        x = b.pool(f"pool{stage}", x, "MAX", 2, 2)
    for index in (6, 7):
        x = b.ip(f"fc{index}", x, 4096, gaussian(0.005), constant(0.1), param=W_B)
        b.relu(f"relu{index}", x)
        b.dropout(f"drop{index}", x, 0.5)
    x = b.ip("fc8", x, num_classes, gaussian(0.01), constant(0), param=W_B)
    return _imagenet_head(b, x)
