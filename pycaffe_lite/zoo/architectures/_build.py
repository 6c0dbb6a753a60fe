"""A small builder for NetParameter messages, used by the zoo's architectures.

Each method appends one layer and returns the name of its top blob, so a
network reads top to bottom as in a prototxt:

    b = Builder("LeNet")
    x = b.input("data", (64, 1, 28, 28))
    x = b.conv("conv1", x, 20, 5, weight_filler=XAVIER)
    x = b.pool("pool1", x, "MAX", 2, 2)

Only fields given explicitly are set, so the text written for a layer shows
exactly what its author chose (BVLC's files write `stride: 1` in some nets and
not in others; the builder can reproduce either).
"""
from ...proto import caffe_pb2

# ParamSpec pairs used across Caffe's reference models.
W_B = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]   # weights, bias
W_ONLY = [dict(lr_mult=1, decay_mult=1)]                                  # bias-free conv
FROZEN3 = [dict(lr_mult=0, decay_mult=0)] * 3                             # BatchNorm statistics

XAVIER = dict(type="xavier")
MSRA = dict(type="msra")


def gaussian(std):
    return dict(type="gaussian", std=std)


def constant(value=None):
    return dict(type="constant") if value is None else dict(type="constant", value=value)


def _pairs(value, name):
    """kernel=3 -> {'kernel_size': [3]}; kernel=(1, 7) -> {'kernel_h': 1, 'kernel_w': 7}."""
    if value is None:
        return {}
    if isinstance(value, (tuple, list)):
        h, w = value
        if h == w:
            return {f"{name}_size" if name == "kernel" else name: [h]}
        return {f"{name}_h": h, f"{name}_w": w}
    return {f"{name}_size" if name == "kernel" else name: [value]}


class Builder:
    def __init__(self, name):
        self.net = caffe_pb2.NetParameter(name=name)

    # ---- generic ---------------------------------------------------------
    def add(self, name, type_name, bottom=(), top=None, **fields):
        """Append a layer; `fields` are LayerParameter fields (dicts for messages)."""
        if isinstance(bottom, str):
            bottom = [bottom]
        if top is None:
            top = [name]
        elif isinstance(top, str):
            top = [top]
        layer = self.net.layer.add()
        layer.CopyFrom(caffe_pb2.LayerParameter(name=name, type=type_name, bottom=list(bottom),
                                                top=list(top), **fields))
        return top[0] if len(top) == 1 else list(top)

    # ---- data ------------------------------------------------------------
    def input(self, name, shape):
        return self.add(name, "Input", (), name, input_param=dict(shape=[dict(dim=list(shape))]))

    def data_pair(self, name, train, test, tops=("data", "label"), layer_type="Data"):
        """The TRAIN and TEST data layers of a train_val net.

        `train` / `test`: dicts with `transform_param` and `data_param` (or
        whatever parameter message `layer_type` takes).
        """
        for phase, fields in (("TRAIN", train), ("TEST", test)):
            self.add(name, layer_type, (), list(tops), include=[dict(phase=phase)], **fields)
        return tops[0]

    # ---- vision ----------------------------------------------------------
    def conv(self, name, bottom, num_output, kernel, stride=None, pad=None, group=None,
             bias_term=None, weight_filler=None, bias_filler=None, param=None, top=None,
             engine=None, dilation=None):
        cp = dict(num_output=num_output)
        if bias_term is not None:
            cp["bias_term"] = bias_term
        cp.update(_pairs(pad, "pad"))
        cp.update(_pairs(kernel, "kernel"))
        if group is not None:
            cp["group"] = group
        cp.update(_pairs(stride, "stride"))
        if weight_filler is not None:
            cp["weight_filler"] = weight_filler
        if bias_filler is not None:
            cp["bias_filler"] = bias_filler
        if engine is not None:
            cp["engine"] = engine
        if dilation is not None:
            cp["dilation"] = [dilation]
        fields = dict(convolution_param=cp)
        if param is not None:
            fields["param"] = param
        return self.add(name, "Convolution", bottom, top, **fields)

    def ip(self, name, bottom, num_output, weight_filler=None, bias_filler=None, param=None,
           top=None):
        p = dict(num_output=num_output)
        if weight_filler is not None:
            p["weight_filler"] = weight_filler
        if bias_filler is not None:
            p["bias_filler"] = bias_filler
        fields = dict(inner_product_param=p)
        if param is not None:
            fields["param"] = param
        return self.add(name, "InnerProduct", bottom, top, **fields)

    def pool(self, name, bottom, pool, kernel=None, stride=None, pad=None, global_pooling=False,
             top=None):
        p = dict(pool=pool)
        if global_pooling:
            p["global_pooling"] = True
        if kernel is not None:
            p.update(_pairs(kernel, "kernel"))
        if stride is not None:
            p.update(_pairs(stride, "stride"))
        if pad is not None:
            p.update(_pairs(pad, "pad"))
        # PoolingParameter keeps kernel_size / stride / pad as scalars, not lists.
        p = {k: (v[0] if isinstance(v, list) else v) for k, v in p.items()}
        return self.add(name, "Pooling", bottom, top, pooling_param=p)

    def lrn(self, name, bottom, local_size, alpha, beta, norm_region=None, top=None):
        p = dict(local_size=local_size, alpha=alpha, beta=beta)
        if norm_region is not None:
            p["norm_region"] = norm_region
        return self.add(name, "LRN", bottom, top, lrn_param=p)

    # ---- neurons and friends ---------------------------------------------
    def relu(self, name, blob):
        return self.add(name, "ReLU", blob, blob)

    def dropout(self, name, blob, ratio):
        return self.add(name, "Dropout", blob, blob, dropout_param=dict(dropout_ratio=ratio))

    def batch_norm(self, name, blob, use_global_stats=None, eps=None, param=None, top=None):
        p = {}
        if use_global_stats is not None:
            p["use_global_stats"] = use_global_stats
        if eps is not None:
            p["eps"] = eps
        fields = {}
        if p:
            fields["batch_norm_param"] = p
        if param is not None:
            fields["param"] = param
        return self.add(name, "BatchNorm", blob, blob if top is None else top, **fields)

    def scale(self, name, blob, bias_term=True, param=None, top=None):
        fields = dict(scale_param=dict(bias_term=bias_term))
        if param is not None:
            fields["param"] = param
        return self.add(name, "Scale", blob, blob if top is None else top, **fields)

    def concat(self, name, bottoms, top=None):
        return self.add(name, "Concat", bottoms, top)

    def eltwise_sum(self, name, bottoms, top=None):
        return self.add(name, "Eltwise", bottoms, top)

    def softmax(self, name, bottom, top=None):
        return self.add(name, "Softmax", bottom, top)

    def softmax_loss(self, name, bottom, label="label", loss_weight=None, top=None):
        fields = {}
        if loss_weight is not None:
            fields["loss_weight"] = [loss_weight]
        return self.add(name, "SoftmaxWithLoss", [bottom, label], top, **fields)

    def accuracy(self, name, bottom, label="label", top_k=None, test_only=True, top=None):
        fields = {}
        if test_only:
            fields["include"] = [dict(phase="TEST")]
        if top_k is not None:
            fields["accuracy_param"] = dict(top_k=top_k)
        return self.add(name, "Accuracy", [bottom, label], top, **fields)


def imagenet_data(crop, train_batch, test_batch, mean_file=None, mean_values=None, scale=None,
                  train_source="examples/imagenet/ilsvrc12_train_lmdb",
                  test_source="examples/imagenet/ilsvrc12_val_lmdb", mirror_test=False):
    """(train, test) field dicts for Caffe's ImageNet LMDB data layers."""
    def transform(mirror):
        t = dict(mirror=mirror, crop_size=crop)
        if scale is not None:
            t["scale"] = scale
        if mean_file is not None:
            t["mean_file"] = mean_file
        if mean_values is not None:
            t["mean_value"] = list(mean_values)
        return t
    train = dict(transform_param=transform(True),
                 data_param=dict(source=train_source, batch_size=train_batch, backend="LMDB"))
    test = dict(transform_param=transform(mirror_test),
                data_param=dict(source=test_source, batch_size=test_batch, backend="LMDB"))
    return train, test
