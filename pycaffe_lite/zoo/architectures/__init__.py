"""The zoo's architectures as code: train_val, deploy and solver for each model.

    from pycaffe_lite.zoo import architectures as A
    net = A.train_val("resnet50")              # NetParameter with Data layers
    dep = A.deploy("resnet50", batch=1)        # Input layer, no losses, `prob` on top
    sol = A.solver("resnet50")                 # SolverParameter
    A.train_val("vgg16", num_classes=20)       # the same net with a 20-way classifier

`tools/make_zoo_models.py` writes these into `models/<name>/`; the committed
prototxts are what users edit, and a test checks they still equal what this
module generates.  Parameter counts in `MODELS` are the figures published for
each architecture (learnable parameters: convolution and fully-connected
weights and biases, BatchNorm's Scale; BatchNorm's running statistics are not
counted, as in the papers).
"""
from dataclasses import dataclass, field

from ...proto import caffe_pb2
from . import classic, inception, modern


@dataclass(frozen=True)
class ModelSpec:
    name: str                 # folder under models/
    build: object             # num_classes -> train_val NetParameter
    input_shape: tuple        # deploy input (N, C, H, W)
    num_classes: int
    params: int               # learnable parameters of the deploy net, counted exactly
    published: str            # the figure the architecture's authors give
    deploy_keeps: tuple = ()  # what deploy keeps: "param" (ParamSpecs), "filler"
    solver: dict = field(default_factory=dict)
    description: str = ""


def _sgd(**kw):
    base = dict(momentum=0.9)
    base.update(kw)
    return base


MODELS = {spec.name: spec for spec in [
    ModelSpec("cifar10_quick", classic.cifar10_quick, (1, 3, 32, 32), 10, 145578,
              "145,578 (Caffe's CIFAR-10 example)", ("param",),
              _sgd(test_iter=[100], test_interval=500, base_lr=0.001, weight_decay=0.004,
                   lr_policy="multistep", gamma=0.1, stepvalue=[4000], display=100, max_iter=5000,
                   snapshot=5000, solver_mode="CPU"),
              "Caffe's quick CIFAR-10 net (about 75 % test accuracy after 5,000 iterations)"),
    ModelSpec("cifar10_full", classic.cifar10_full, (1, 3, 32, 32), 10, 89578,
              "89,578 (Caffe's CIFAR-10 example)", ("param",),
              _sgd(test_iter=[100], test_interval=1000, base_lr=0.001, weight_decay=0.004,
                   lr_policy="multistep", gamma=0.1, stepvalue=[60000, 65000], display=200,
                   max_iter=70000, snapshot=10000, solver_mode="CPU"),
              "Caffe's full CIFAR-10 net with local response normalisation (about 81 %)"),
    ModelSpec("bvlc_reference_caffenet", classic.caffenet, (10, 3, 227, 227), 1000, 60965224,
              "61M (Krizhevsky et al. 2012)", (),
              _sgd(test_iter=[1000], test_interval=1000, base_lr=0.01, lr_policy="step", gamma=0.1,
                   stepsize=100000, display=20, max_iter=450000, weight_decay=0.0005,
                   snapshot=10000, solver_mode="GPU"),
              "BVLC CaffeNet: AlexNet with pooling before normalisation"),
    ModelSpec("bvlc_alexnet", classic.alexnet, (10, 3, 227, 227), 1000, 60965224,
              "61M (Krizhevsky et al. 2012)", ("param",),
              _sgd(test_iter=[1000], test_interval=1000, base_lr=0.01, lr_policy="step", gamma=0.1,
                   stepsize=100000, display=20, max_iter=450000, weight_decay=0.0005,
                   snapshot=10000, solver_mode="GPU"),
              "AlexNet as published"),
    ModelSpec("bvlc_googlenet", inception.googlenet, (10, 3, 224, 224), 1000, 6998552,
              "about 7M (Szegedy et al. 2014: 12x fewer than AlexNet)", ("param", "filler"),
              _sgd(test_iter=[1000], test_interval=4000, test_initialization=False, display=40,
                   average_loss=40, base_lr=0.01, lr_policy="poly", power=0.5, max_iter=2400000,
                   weight_decay=0.0002, snapshot=40000, solver_mode="GPU"),
              "GoogLeNet (Inception v1), BVLC's replication"),
    ModelSpec("vgg16", classic.vgg16, (10, 3, 224, 224), 1000, 138357544,
              "138M (Simonyan & Zisserman 2014, table 2)", (),
              _sgd(test_iter=[1000], test_interval=5000, base_lr=0.01, lr_policy="step", gamma=0.1,
                   stepsize=100000, display=20, max_iter=370000, weight_decay=0.0005, iter_size=4,
                   snapshot=10000, solver_mode="GPU"),
              "VGG16 (configuration D)"),
    ModelSpec("resnet50", modern.resnet50, (1, 3, 224, 224), 1000, 25557096,
              "25.6M (He et al. 2015)", (),
              _sgd(test_iter=[1000], test_interval=10000, base_lr=0.1, lr_policy="multistep",
                   gamma=0.1, stepvalue=[150000, 300000, 450000], display=20, max_iter=600000,
                   weight_decay=0.0001, iter_size=8, snapshot=10000, solver_mode="GPU"),
              "ResNet-50 with bottleneck blocks, BatchNorm + Scale"),
    ModelSpec("squeezenet_v1.1", modern.squeezenet_v1_1, (1, 3, 227, 227), 1000, 1235496,
              "1.24M (Iandola et al. 2016; v1.1 release)", (),
              _sgd(test_iter=[2000], test_interval=1000, base_lr=0.08, display=40, max_iter=85000,
                   iter_size=32, lr_policy="poly", power=0.5, weight_decay=0.0002, snapshot=1000,
                   solver_mode="GPU", random_seed=42, test_initialization=False, average_loss=40),
              "SqueezeNet v1.1: AlexNet-level accuracy, 50x fewer parameters"),
    ModelSpec("mobilenet", modern.mobilenet_v1, (1, 3, 224, 224), 1000, 4231976,
              "4.2M (Howard et al. 2017, table 8)", (),
              dict(type="RMSProp", rms_decay=0.9, delta=1.0, test_iter=[1000], test_interval=10000,
                   base_lr=0.045, lr_policy="step", gamma=0.94, stepsize=10010, display=20,
                   max_iter=500500, weight_decay=0.00004, iter_size=4, snapshot=10000,
                   solver_mode="GPU"),
              "MobileNet v1 1.0-224: depthwise-separable convolutions"),
    ModelSpec("inception_v3", inception.inception_v3, (1, 3, 299, 299), 1000, 23834568,
              "23.8M (Szegedy et al. 2015; TF-slim release, without the auxiliary head)", (),
              dict(type="RMSProp", rms_decay=0.9, delta=1.0, test_iter=[2000], test_interval=10000,
                   base_lr=0.045, lr_policy="step", gamma=0.94, stepsize=80080, display=20,
                   max_iter=4004000, weight_decay=0.00004, clip_gradients=2.0, snapshot=10000,
                   solver_mode="GPU"),
              "Inception v3: factorised 1xN / Nx1 convolutions"),
    ModelSpec("finetune_flickr_style", classic.finetune_flickr_style, (10, 3, 227, 227), 20,
              56950164, "CaffeNet with a 20-way classifier (61M - 4.1M + 0.08M)", ("param", "filler"),
              dict(test_iter=[100], test_interval=1000, base_lr=0.001, lr_policy="step", gamma=0.1,
                   stepsize=20000, display=20, max_iter=100000, momentum=0.9, weight_decay=0.0005,
                   snapshot=10000, solver_mode="CPU"),
              "CaffeNet fine-tuned on Flickr Style (20 classes)"),
]}


def spec(name):
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown zoo model '{name}'; known: {', '.join(sorted(MODELS))}") from None


def train_val(name, num_classes=None):
    """The train_val NetParameter of zoo model `name` (Data layers read LMDBs)."""
    s = spec(name)
    return s.build(s.num_classes if num_classes is None else num_classes)


_DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "Input"}


def deploy_from_train_val(net, input_shape, keep=(), prob="prob"):
    """Caffe's train_val -> deploy surgery, as BVLC's deploy files were made.

    Data layers become one `Input` named after their first top; layers that
    read the labels (losses, accuracies) and everything that only fed them
    (auxiliary classifiers) go; a Softmax `prob` goes on the classifier.
    `keep` may hold "param" (keep ParamSpecs) and "filler" (keep fillers).
    """
    data_layers = [l for l in net.layer if l.type in _DATA_TYPES]
    if not data_layers:
        raise ValueError(f"net '{net.name}' has no data layer to turn into an Input")
    data_top = data_layers[0].top[0]
    label_tops = {t for l in data_layers for t in l.top[1:]}
    body = [l for l in net.layer if l.type not in _DATA_TYPES
            and not (set(l.bottom) & label_tops)
            and not any(r.phase == caffe_pb2.TRAIN for r in l.include)]
    # The classifier: the last layer's top among what remains.
    classifier = body[-1].top[0]
    # Keep only layers that lead to the classifier (drops auxiliary heads).
    needed, kept = {classifier}, []
    for layer in reversed(body):
        if set(layer.top) & needed:
            kept.append(layer)
            needed |= set(layer.bottom)
    kept.reverse()
    out = caffe_pb2.NetParameter(name=net.name)
    out.layer.add().CopyFrom(caffe_pb2.LayerParameter(
        name=data_top, type="Input", top=[data_top],
        input_param=dict(shape=[dict(dim=list(input_shape))])))
    for layer in kept:
        copy = out.layer.add()
        copy.CopyFrom(layer)
        copy.ClearField("include")
        if "param" not in keep:
            copy.ClearField("param")
        if "filler" not in keep:
            for field in ("convolution_param", "inner_product_param"):
                if copy.HasField(field):
                    getattr(copy, field).ClearField("weight_filler")
                    getattr(copy, field).ClearField("bias_filler")
        if copy.type == "BatchNorm" and "param" not in keep:
            copy.batch_norm_param.use_global_stats = True
    out.layer.add().CopyFrom(caffe_pb2.LayerParameter(name=prob, type="Softmax",
                                                      bottom=[classifier], top=[prob]))
    return out


def deploy(name, batch=None, num_classes=None):
    """The deploy NetParameter of zoo model `name` (`Input` + layers + `prob`)."""
    s = spec(name)
    shape = list(s.input_shape)
    if batch is not None:
        shape[0] = batch
    return deploy_from_train_val(train_val(name, num_classes), shape, s.deploy_keeps)


def solver(name, folder=None):
    """The SolverParameter of zoo model `name`, its paths relative to the repository root."""
    s = spec(name)
    folder = folder or f"models/{name}"
    message = caffe_pb2.SolverParameter(net=f"{folder}/train_val.prototxt",
                                        snapshot_prefix=f"{folder}/snapshots/{name}", **s.solver)
    return message
