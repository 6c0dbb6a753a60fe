"""Loss layers and Accuracy, with BVLC Caffe's formulas, normalizations and defaults.

A loss layer's first top is a scalar; Caffe stores the loss weight in that
top's diff, so every backward here scales its gradient by `top[0].diff`.
Labels are read as integers the way Caffe's static_cast<int> does (truncating).

    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss"
            loss_param { ignore_label: 255 normalization: VALID } }
"""
import numpy as np

from ..backend import get_array_module
from ..layer import Layer, LossLayer, register
from ..proto import caffe_pb2
from ..proto.blobs import blob_proto_to_array
from ..proto.files import read_binary_proto

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20   # Caffe's kLOG_THRESHOLD
NORM = caffe_pb2.LossParameter


def normalizer(mode, outer_num, inner_num, valid_count):
    """Caffe's get_normalizer: FULL = outer*inner, VALID = valid_count, BATCH_SIZE = outer,
    NONE = 1; never below 1 (a batch with only ignored labels gives loss 0, not NaN)."""
    if mode == NORM.FULL:
        value = outer_num * inner_num
    elif mode == NORM.VALID:
        value = outer_num * inner_num if valid_count is None else valid_count
    elif mode == NORM.BATCH_SIZE:
        value = outer_num
    elif mode == NORM.NONE:
        value = 1
    else:
        raise ValueError(f"unknown normalization mode {mode}")
    return max(1.0, float(value))


def softmax(x, axis):
    """exp(x - max) / sum(exp(x - max)) along axis."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _labels(layer, label_blob, outer, inner, num_classes, ignore_label):
    """Labels as an (outer, inner) int64 array and the valid mask (not ignore_label).

    Raises ValueError for a valid label outside [0, num_classes)."""
    xp = get_array_module(label_blob.data)
    labels = label_blob.data.reshape(outer, inner).astype(np.int64)
    valid = labels != ignore_label if ignore_label is not None else xp.ones(labels.shape, dtype=bool)
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        row = int(xp.argmax(bad.any(axis=1)))
        value = int(labels[row][bad[row]][0])
        keys = label_blob.record_keys
        record = f" in record '{keys[row]}' of the batch" if keys is not None and len(keys) == outer else ""
        raise ValueError(layer.error(f"got label {value}{record}, outside [0, {num_classes}) "
                                     f"(check num_output against the labels)"))
    return xp.where(valid, labels, 0), valid


def _one_hot(labels, num_classes, dtype):
    """(outer, inner) labels -> (outer, C, inner) indicator array."""
    xp = get_array_module(labels)
    classes = xp.arange(num_classes, dtype=labels.dtype)[None, :, None]
    return (classes == labels[:, None, :]).astype(dtype)


def _class_split(layer, blob, axis_value):
    """(axis, outer, C, inner) for a prediction blob split at its class axis."""
    try:
        axis = blob.canonical_axis(axis_value)
    except ValueError:
        raise ValueError(layer.error(f"axis {axis_value} is out of range for shape {blob.shape}")) from None
    return axis, blob.count_between(0, axis), blob.shape[axis], blob.count_between(axis + 1)


def _no_label_gradient(layer, propagate_down, indices=(1,)):
    for i in indices:
        if i < len(propagate_down) and propagate_down[i]:
            what = "label" if i == 1 else "infogain matrix"
            raise ValueError(layer.error(f"cannot backpropagate to its {what} input (bottom {i})"))


class _ScalarLoss(LossLayer):
    """Writes the scalar loss in the prediction's dtype and array module."""

    def set_loss(self, top, value, like):
        xp = get_array_module(like)
        top[0].data = xp.asarray(value, dtype=top[0].dtype).reshape(())


# ---------------------------------------------------------------------------
@register("SoftmaxWithLoss", v1="SOFTMAX_LOSS")
class SoftmaxWithLossLayer(_ScalarLoss):
    """Multinomial logistic loss of the softmax of the scores.

    bottom[0] scores with classes on softmax_param.axis (default 1), shape
    (outer, C, inner); bottom[1] labels, outer*inner values.
    loss = -sum_{valid} log(max(p[label], FLT_MIN)) / normalizer
    d scores = (p - onehot(label)) * valid * top.diff / normalizer
    top[1] (optional): the probabilities p.
    """
    num_top = (1, 2)
    normalization = NORM.VALID

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis, self.outer, self.classes, self.inner = _class_split(
            self, bottom[0], self.layer_param.softmax_param.axis)
        if self.outer * self.inner != bottom[1].count:
            raise ValueError(self.error(
                f"needs one label per prediction: {self.outer * self.inner} predictions for scores of "
                f"shape {bottom[0].shape} with the class axis {self.axis}, got {bottom[1].count} labels "
                f"(label shape {bottom[1].shape})"))
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        prob = softmax(bottom[0].data, self.axis)
        p3 = prob.reshape(self.outer, self.classes, self.inner)
        labels, valid = _labels(self, bottom[1], self.outer, self.inner, self.classes, self.ignore_label)
        picked = xp.take_along_axis(p3, labels[:, None, :], axis=1)[:, 0, :]
        log_p = xp.log(xp.maximum(picked, FLT_MIN))
        self.labels, self.valid, self.prob = labels, valid, prob
        self.norm = normalizer(self.mode, self.outer, self.inner, int(valid.sum()))
        self.set_loss(top, -(log_p * valid).sum() / self.norm, prob)
        if len(top) > 1:
            top[1].data = prob

    def backward(self, top, propagate_down, bottom):
        _no_label_gradient(self, propagate_down)
        if not propagate_down[0]:
            return
        p3 = self.prob.reshape(self.outer, self.classes, self.inner)
        grad = (p3 - _one_hot(self.labels, self.classes, p3.dtype)) * self.valid[:, None, :]
        bottom[0].diff = (grad * (top[0].diff / self.norm)).reshape(bottom[0].shape)


# ---------------------------------------------------------------------------
@register("Accuracy", v1="ACCURACY")
class AccuracyLayer(Layer):
    """Top-k accuracy (not a loss: no loss weight, no backward).

    A prediction counts as right when fewer than top_k classes score >= the
    true class's score (ties count against it), and a batch whose labels are
    all ignored scores 0: BVLC master's rules since PR #5836.  Caffe 1.0
    sorted (score, class) pairs, so a tie went to the higher class index, and
    gave NaN for an all-ignored batch.  top[0]: the fraction right over
    non-ignored labels; top[1] (optional): per-class accuracy, shape (C,), 0
    for classes absent from the batch.
    """
    num_bottom = (2, 2)
    num_top = (1, 2)

    def setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        self.axis, self.outer, self.classes, self.inner = _class_split(
            self, bottom[0], self.layer_param.accuracy_param.axis)
        if self.top_k > self.classes:
            raise ValueError(self.error(f"needs top_k <= the number of classes, got top_k {self.top_k} "
                                        f"for {self.classes} classes"))
        if self.outer * self.inner != bottom[1].count:
            raise ValueError(self.error(
                f"needs one label per prediction: {self.outer * self.inner} predictions for scores of "
                f"shape {bottom[0].shape}, got {bottom[1].count} labels (label shape {bottom[1].shape})"))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(self.classes)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels, valid = _labels(self, bottom[1], self.outer, self.inner, self.classes, self.ignore_label)
        true_score = xp.take_along_axis(scores, labels[:, None, :], axis=1)
        at_least = (scores >= true_score).sum(axis=1)          # includes the true class itself
        right = (at_least <= self.top_k) & valid
        count = valid.sum()
        dtype = top[0].dtype
        top[0].data = xp.where(count > 0, right.sum() / xp.maximum(count, 1), 0).astype(dtype).reshape(())
        if len(top) > 1:
            flat = labels.reshape(-1)
            seen = xp.bincount(flat, weights=valid.reshape(-1).astype(np.float64), minlength=self.classes)
            hits = xp.bincount(flat, weights=right.reshape(-1).astype(np.float64), minlength=self.classes)
            top[1].data = xp.where(seen > 0, hits / xp.maximum(seen, 1), 0).astype(dtype)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise NotImplementedError(self.error("has no backward (Caffe's Accuracy is not differentiable); "
                                                 "do not force backward through it"))


# ---------------------------------------------------------------------------
@register("EuclideanLoss", v1="EUCLIDEAN_LOSS")
class EuclideanLossLayer(_ScalarLoss):
    """loss = sum((a - b)^2) / (2 N);  d a = (a - b) * top.diff / N,  d b = -d a.

    Both bottoms (N, ...) with the same count per item; both may take a gradient.
    """

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count_between(1) != bottom[1].count_between(1):
            raise ValueError(self.error(f"needs inputs with the same count per item, got shapes "
                                        f"{bottom[0].shape} and {bottom[1].shape}"))

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        num = bottom[0].shape[0]
        self.set_loss(top, (self.diff * self.diff).sum() / num / 2, self.diff)

    def backward(self, top, propagate_down, bottom):
        num = bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff = (self.diff * (sign * top[0].diff / num)).reshape(bottom[i].shape)


# ---------------------------------------------------------------------------
@register("SigmoidCrossEntropyLoss", v1="SIGMOID_CROSS_ENTROPY_LOSS")
class SigmoidCrossEntropyLossLayer(_ScalarLoss):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1], computed stably:

        loss = -sum_{valid} [x (t - [x >= 0]) - log(1 + exp(-|x|))] / normalizer
        d x = (sigmoid(x) - t) * valid * top.diff / normalizer

    valid excludes targets equal to ignore_label; normalization defaults to BATCH_SIZE.
    """
    normalization = NORM.BATCH_SIZE

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise ValueError(self.error(f"needs inputs with the same count, got shapes "
                                        f"{bottom[0].shape} and {bottom[1].shape}"))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape).astype(x.dtype)
        if self.ignore_label is not None:
            valid = bottom[1].data.reshape(x.shape).astype(np.int64) != self.ignore_label
        else:
            valid = xp.ones(x.shape, dtype=bool)
        per_item = x * (t - (x >= 0)) - xp.log1p(xp.exp(-xp.abs(x)))
        outer = x.shape[0]
        self.norm = normalizer(self.mode, outer, x.size // max(outer, 1), int(valid.sum()))
        self.valid, self.target = valid, t
        self.set_loss(top, -(per_item * valid).sum() / self.norm, x)

    def backward(self, top, propagate_down, bottom):
        _no_label_gradient(self, propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5
        bottom[0].diff = (sigmoid - self.target) * self.valid * (top[0].diff / self.norm)


# ---------------------------------------------------------------------------
@register("HingeLoss", v1="HINGE_LOSS")
class HingeLossLayer(_ScalarLoss):
    """One-vs-all hinge loss of scores (N, K) against labels (N).

    m[n, k] = max(0, 1 + s[n, k] * (-1 if k == label_n else 1))
    L1: loss = sum(m) / N;  L2: loss = sum(m^2) / N
    """

    def setup(self, bottom, top):
        self.norm = self.layer_param.hinge_loss_param.norm

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[1].count != bottom[0].shape[0]:
            raise ValueError(self.error(f"needs one label per item: {bottom[0].shape[0]} items, "
                                        f"got {bottom[1].count} labels"))

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        scores = bottom[0].data.reshape(num, -1)
        labels, _ = _labels(self, bottom[1], num, 1, scores.shape[1], None)
        self.sign = 1 - 2 * _one_hot(labels, scores.shape[1], scores.dtype)[:, :, 0]
        self.margin = get_array_module(scores).maximum(0, 1 + scores * self.sign)
        total = self.margin.sum() if self.norm == caffe_pb2.HingeLossParameter.L1 else (self.margin ** 2).sum()
        self.set_loss(top, total / num, scores)

    def backward(self, top, propagate_down, bottom):
        _no_label_gradient(self, propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(self.margin)
        num = bottom[0].shape[0]
        signed = self.margin * self.sign
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            grad = xp.sign(signed) * (top[0].diff / num)
        else:
            grad = signed * (2 * top[0].diff / num)
        bottom[0].diff = grad.reshape(bottom[0].shape)


# ---------------------------------------------------------------------------
def read_blob_proto(path):
    """A BlobProto (.binaryproto) as a float64 NumPy array of its shape."""
    blob = read_binary_proto(path, caffe_pb2.BlobProto(), "BlobProto (.binaryproto)")
    try:
        return blob_proto_to_array(blob).astype(np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


@register("InfogainLoss", v1="INFOGAIN_LOSS")
class InfogainLossLayer(_ScalarLoss):
    """SoftmaxWithLoss generalised by an infogain matrix H (C x C):

        p = softmax(scores, axis);  loss = -sum_{valid} sum_l H[label, l] log(max(p_l, 1e-20)) / normalizer
        d scores = (p * rowsum(H)[label] - H[label, :]) * valid * top.diff / normalizer

    H comes from bottom[2] or the BlobProto file infogain_loss_param.source.
    top[1] (optional): the probabilities p.  H = identity gives SoftmaxWithLoss.
    """
    num_bottom = (2, 3)
    num_top = (1, 2)
    normalization = NORM.VALID

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        if self.layer_param.loss_param.HasField("normalize"):
            raise ValueError(self.error("uses the deprecated loss_param.normalize; use normalization"))
        super().setup(bottom, top)
        self.H_file = None
        if len(bottom) < 3:
            p = self.layer_param.infogain_loss_param
            if not p.HasField("source"):
                raise ValueError(self.error("needs infogain_loss_param.source or a third bottom with H"))
            self.H_file = read_blob_proto(p.source)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis, self.outer, self.classes, self.inner = _class_split(
            self, bottom[0], self.layer_param.infogain_loss_param.axis)
        if self.outer * self.inner != bottom[1].count:
            raise ValueError(self.error(
                f"needs one label per prediction: {self.outer * self.inner} for scores of shape "
                f"{bottom[0].shape}, got {bottom[1].count} labels"))
        count = bottom[2].count if len(bottom) > 2 else self.H_file.size
        if count != self.classes * self.classes:
            raise ValueError(self.error(f"needs an infogain matrix of {self.classes} x {self.classes} "
                                        f"values, got {count}"))
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _H(self, bottom):
        xp = get_array_module(bottom[0].data)
        H = bottom[2].data if len(bottom) > 2 else xp.asarray(self.H_file)
        return H.reshape(self.classes, self.classes).astype(bottom[0].dtype)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        prob = softmax(bottom[0].data, self.axis)
        p3 = prob.reshape(self.outer, self.classes, self.inner)
        labels, valid = _labels(self, bottom[1], self.outer, self.inner, self.classes, self.ignore_label)
        H_rows = xp.moveaxis(self._H(bottom)[labels], -1, 1)       # (outer, C, inner): H[label, l]
        loss = -(H_rows * xp.log(xp.maximum(p3, LOG_THRESHOLD)) * valid[:, None, :]).sum()
        self.norm = normalizer(self.mode, self.outer, self.inner, int(valid.sum()))
        self.prob, self.labels, self.valid, self.H_rows = prob, labels, valid, H_rows
        self.set_loss(top, loss / self.norm, prob)
        if len(top) > 1:
            top[1].data = prob

    def backward(self, top, propagate_down, bottom):
        _no_label_gradient(self, propagate_down, (1, 2))
        if not propagate_down[0]:
            return
        p3 = self.prob.reshape(self.outer, self.classes, self.inner)
        row_sums = self.H_rows.sum(axis=1, keepdims=True)
        grad = (p3 * row_sums - self.H_rows) * self.valid[:, None, :]
        bottom[0].diff = (grad * (top[0].diff / self.norm)).reshape(bottom[0].shape)


# ---------------------------------------------------------------------------
@register("MultinomialLogisticLoss", v1="MULTINOMIAL_LOGISTIC_LOSS")
class MultinomialLogisticLossLayer(_ScalarLoss):
    """loss = -sum_n log(max(p[n, label_n], 1e-20)) / N for probabilities p (N, K) and labels (N).

    d p[n, label_n] = -top.diff / N / max(p[n, label_n], 1e-20); 0 elsewhere.
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[1].count != bottom[0].shape[0]:
            raise ValueError(self.error(f"needs one label per item: {bottom[0].shape[0]} items, "
                                        f"got {bottom[1].count} labels"))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        num = bottom[0].shape[0]
        prob = bottom[0].data.reshape(num, -1)
        labels, _ = _labels(self, bottom[1], num, 1, prob.shape[1], None)
        picked = xp.maximum(xp.take_along_axis(prob, labels, axis=1), LOG_THRESHOLD)
        self.labels, self.picked = labels, picked
        self.set_loss(top, -xp.log(picked).sum() / num, prob)

    def backward(self, top, propagate_down, bottom):
        _no_label_gradient(self, propagate_down)
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        classes = bottom[0].count // num
        one_hot = _one_hot(self.labels, classes, bottom[0].dtype)[:, :, 0]
        bottom[0].diff = (one_hot * (-top[0].diff / num) / self.picked).reshape(bottom[0].shape)


# ---------------------------------------------------------------------------
@register("ContrastiveLoss", v1="CONTRASTIVE_LOSS")
class ContrastiveLossLayer(_ScalarLoss):
    """Siamese loss of feature pairs a, b (N, C) with similarity y (N): d = ||a - b||,

        loss = sum_n [y_n d^2 + (1 - y_n) max(margin - d, 0)^2] / (2 N)
        legacy_version: the dissimilar term is max(margin - d^2, 0)

    The gradient keeps Caffe's 1e-4 in (margin - d) / (d + 1e-4) for dissimilar pairs.
    y is read as an integer (non-zero = similar).
    """
    num_bottom = (3, 3)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def setup(self, bottom, top):
        p = self.layer_param.contrastive_loss_param
        self.margin, self.legacy = p.margin, p.legacy_version

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        num = bottom[0].shape[0]
        if bottom[0].count != bottom[1].count:
            raise ValueError(self.error(f"needs feature inputs of the same shape, got "
                                        f"{bottom[0].shape} and {bottom[1].shape}"))
        if bottom[2].count != num:
            raise ValueError(self.error(f"needs one similarity label per pair: {num} pairs, "
                                        f"got {bottom[2].count} values"))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        num = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data.reshape(bottom[0].shape)).reshape(num, -1)
        self.dist_sq = (self.diff * self.diff).sum(axis=1)
        self.similar = bottom[2].data.reshape(num).astype(np.int64) != 0
        if self.legacy:
            dissimilar = xp.maximum(self.margin - self.dist_sq, 0)
        else:
            dissimilar = xp.maximum(self.margin - xp.sqrt(self.dist_sq), 0) ** 2
        loss = xp.where(self.similar, self.dist_sq, dissimilar).sum()
        self.set_loss(top, loss / num / 2, self.diff)

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(self.diff)
        num = bottom[0].shape[0]
        if self.legacy:
            mdist = self.margin - self.dist_sq
            beta_over_alpha = -xp.ones_like(mdist)
        else:
            dist = xp.sqrt(self.dist_sq)
            mdist = self.margin - dist
            beta_over_alpha = -mdist / (dist + 1e-4)
        factor = xp.where(self.similar, 1, xp.where(mdist > 0, beta_over_alpha, 0))
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / num
                bottom[i].diff = (self.diff * (factor * alpha)[:, None]).reshape(bottom[i].shape)
