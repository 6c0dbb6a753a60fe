"""Loss layers and Accuracy: forward against loops or hand-worked values, every normalization,
ignore_label, and numerical gradients in float64."""
import numpy as np
import pytest

from goldens import golden
from layer_check import build, check_gradient, forward
from layer_refs import ref_contrastive, ref_infogain, ref_sigmoid_ce, ref_softmax, ref_softmax_loss
from pycaffe_lite.proto import caffe_pb2

rng = np.random.default_rng(3)


def loss_of(text, bottoms, **kw):
    return forward(text, bottoms, **kw)[0].item()


# ---------------------------------------------------------------------------
# SoftmaxWithLoss
# ---------------------------------------------------------------------------
def labels_with_ignored(shape, classes, ignore=255):
    labels = rng.integers(0, classes, shape).astype(float)
    labels.reshape(-1)[[1, 4]] = ignore
    return labels


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_softmax_loss_normalizations_with_ignore_label(mode):
    scores = rng.standard_normal((3, 4, 2, 3))
    labels = labels_with_ignored((3, 1, 2, 3), 4)
    text = f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 255 normalization: {mode} }}'
    assert loss_of(text, [scores, labels]) == pytest.approx(ref_softmax_loss(scores, labels, 255, mode), rel=1e-12)
    check_gradient(text, [scores, labels], check_bottoms=[0])


@pytest.mark.parametrize("normalize, mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    scores = rng.standard_normal((2, 3, 2, 2))
    labels = labels_with_ignored((2, 1, 2, 2), 3)
    text = f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 255 normalize: {normalize} }}'
    assert loss_of(text, [scores, labels]) == pytest.approx(ref_softmax_loss(scores, labels, 255, mode), rel=1e-12)


def test_softmax_loss_default_is_valid_and_without_ignore_equals_full():
    scores, labels = rng.standard_normal((4, 5)), rng.integers(0, 5, (4,)).astype(float)
    want = ref_softmax_loss(scores, labels, None, "FULL")
    assert loss_of('type: "SoftmaxWithLoss"', [scores, labels]) == pytest.approx(want, rel=1e-12)


def test_softmax_loss_axis_and_probability_top():
    scores = rng.standard_normal((2, 3, 4))           # classes on axis 2
    labels = rng.integers(0, 4, (2, 3)).astype(float)
    text = 'type: "SoftmaxWithLoss" softmax_param { axis: 2 }'
    loss, prob = forward(text, [scores, labels], num_tops=2)
    moved = np.moveaxis(scores, 2, 1)
    assert loss.item() == pytest.approx(ref_softmax_loss(moved, labels, None, "VALID"), rel=1e-12)
    np.testing.assert_allclose(prob, ref_softmax(scores, 2), rtol=1e-12)
    check_gradient(text, [scores, labels], num_tops=2, check_bottoms=[0], top_weights=[0])


def test_softmax_loss_gradient_scales_with_loss_weight():
    scores, labels = rng.standard_normal((3, 4)), np.array([0.0, 3, 1])
    layer, bottom, top = build('type: "SoftmaxWithLoss" loss_weight: 2.5', [scores, labels])
    assert layer.Forward(bottom, top) == pytest.approx(2.5 * top[0].data.item())
    layer.Backward(top, [True, False], bottom)
    want = ref_softmax(scores, 1)
    want[np.arange(3), labels.astype(int)] -= 1
    np.testing.assert_allclose(bottom[0].diff, 2.5 * want / 3, rtol=1e-12)


def test_softmax_loss_errors():
    with pytest.raises(ValueError, match="one label per prediction"):
        build('type: "SoftmaxWithLoss"', [np.zeros((2, 3, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="outside"):
        forward('type: "SoftmaxWithLoss"', [np.zeros((2, 3)), np.array([0.0, 3])])
    layer, bottom, top = build('type: "SoftmaxWithLoss"', [np.zeros((2, 3)), np.array([0.0, 2])])
    layer.Forward(bottom, top)
    with pytest.raises(ValueError, match="label"):
        layer.Backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


def test_softmax_loss_golden():
    from google.protobuf import text_format
    d = golden("softmax_loss")
    net = d.net_param()
    grad = 0
    inputs = {"scores": d["in/scores"], "label": d["in/label"]}
    for lp in net.layer:
        if lp.type == "Input":
            continue
        layer, bottom, top = build(text_format.MessageToString(lp), [inputs[b] for b in lp.bottom],
                                   num_tops=len(lp.top), phase=caffe_pb2.TEST, dtype=np.float32)
        layer.Forward(bottom, top)
        for blob, name in zip(top, lp.top):
            np.testing.assert_allclose(blob.data, d["fwd/" + name], rtol=1e-5)
        if lp.type != "Accuracy":
            np.testing.assert_allclose(top[0].diff, d["topdiff/" + lp.top[0]])   # the loss weight
            layer.Backward(top, [True, False], bottom)
            grad = grad + bottom[0].diff
    np.testing.assert_allclose(grad, d["bwd/scores"], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------
def test_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4],      # label 1: top-1 right
                       [0.3, 0.3, 0.4],      # label 0: tie with class 1 counts against -> top-2 wrong
                       [0.2, 0.7, 0.1],      # label 0: second -> top-2 right
                       [0.6, 0.3, 0.1]])     # label 255: ignored
    labels = np.array([1.0, 0, 0, 255])
    text = 'type: "Accuracy" accuracy_param { ignore_label: 255 top_k: %d }'
    acc, per_class = forward(text % 1, [scores, labels], num_tops=2)
    assert acc.item() == pytest.approx(1 / 3)
    np.testing.assert_allclose(per_class, [0.0, 1.0, 0.0])     # class 2 absent -> 0
    acc, per_class = forward(text % 2, [scores, labels], num_tops=2)
    assert acc.item() == pytest.approx(2 / 3)
    np.testing.assert_allclose(per_class, [0.5, 1.0, 0.0])
    (acc,) = forward(text % 3, [scores, labels])
    assert acc.item() == 1.0


def test_accuracy_axis_spatial_and_all_ignored():
    scores = rng.standard_normal((2, 3, 4))         # classes on axis 1, 4 positions
    labels = rng.integers(0, 3, (2, 4)).astype(float)
    (acc,) = forward('type: "Accuracy"', [scores, labels])
    assert acc.item() == pytest.approx((scores.argmax(axis=1) == labels).mean())
    (acc,) = forward('type: "Accuracy" accuracy_param { axis: -1 }', [scores.transpose(0, 2, 1), labels])
    assert acc.item() == pytest.approx((scores.argmax(axis=1) == labels).mean())
    (acc,) = forward('type: "Accuracy" accuracy_param { ignore_label: 1 }', [scores, np.ones((2, 4))])
    assert acc.item() == 0.0


def test_accuracy_is_not_a_loss_and_has_no_backward():
    layer, bottom, top = build('type: "Accuracy"', [np.zeros((2, 3)), np.zeros(2)])
    assert not layer.is_loss and layer.loss_weights == [0.0]
    layer.Backward(top, [False, False], bottom)
    with pytest.raises(NotImplementedError, match="no backward"):
        layer.Backward(top, [True, False], bottom)
    with pytest.raises(ValueError, match="top_k"):
        build('type: "Accuracy" accuracy_param { top_k: 4 }', [np.zeros((2, 3)), np.zeros(2)])


# ---------------------------------------------------------------------------
# EuclideanLoss
# ---------------------------------------------------------------------------
def test_euclidean_loss():
    a, b = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 4))
    assert loss_of('type: "EuclideanLoss"', [a, b]) == pytest.approx(((a.reshape(3, 4) - b) ** 2).sum() / 6)
    layer = check_gradient('type: "EuclideanLoss"', [a, b])
    assert layer.allow_force_backward(1)


# ---------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_sigmoid_cross_entropy_normalizations_with_ignore_label(mode):
    x = rng.standard_normal((3, 4))
    t = rng.uniform(0, 1, (3, 4))
    t[0, 1] = t[2, 3] = -1
    text = f'type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 normalization: {mode} }}'
    assert loss_of(text, [x, t]) == pytest.approx(ref_sigmoid_ce(x, t, -1, mode), rel=1e-12)
    check_gradient(text, [x, t], check_bottoms=[0])


def test_sigmoid_cross_entropy_defaults_to_batch_size_and_is_stable():
    x, t = rng.standard_normal((4, 3)), rng.integers(0, 2, (4, 3)).astype(float)
    text = 'type: "SigmoidCrossEntropyLoss"'
    assert loss_of(text, [x, t]) == pytest.approx(ref_sigmoid_ce(x, t, None, "BATCH_SIZE"), rel=1e-12)
    big = np.array([[200.0, -200.0, 50.0]])
    # loss of a confident right answer is ~0, of a confident wrong one ~|x|
    assert loss_of(text, [big, np.array([[1.0, 0.0, 0.0]])]) == pytest.approx(50.0)
    layer, bottom, top = build(text, [big, np.array([[0.0, 1.0, 1.0]])])
    layer.Forward(bottom, top)
    assert top[0].data.item() == pytest.approx(400.0)
    layer.Backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[1.0, -1.0, 0.0]], atol=1e-12)


# ---------------------------------------------------------------------------
# HingeLoss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    scores = rng.uniform(-2, 2, (4, 3))
    labels = np.array([0.0, 2, 1, 2])
    want = 0.0
    for n in range(4):
        for k in range(3):
            m = max(0.0, 1 + (-scores[n, k] if k == labels[n] else scores[n, k]))
            want += m if norm == "L1" else m * m
    text = f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'
    assert loss_of(text, [scores, labels]) == pytest.approx(want / 4, rel=1e-12)
    # keep away from the kink at margin 0
    scores[np.abs(1 + scores) < 0.05] += 0.2
    scores[np.abs(1 - scores) < 0.05] += 0.2
    check_gradient(text, [scores, labels], check_bottoms=[0])


# ---------------------------------------------------------------------------
# InfogainLoss
# ---------------------------------------------------------------------------
def write_blob_proto(path, array):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.reshape(-1).tolist())
    path.write_bytes(blob.SerializeToString())


def test_infogain_with_identity_is_softmax_loss():
    scores, labels = rng.standard_normal((3, 4)), np.array([1.0, 0, 3])
    want = loss_of('type: "SoftmaxWithLoss"', [scores, labels])
    assert loss_of('type: "InfogainLoss"', [scores, labels, np.eye(4)]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_infogain_matrix_from_bottom(mode):
    scores = rng.standard_normal((2, 3, 2))
    labels = np.array([[0.0, 2], [9, 1]])
    H = rng.uniform(0, 1, (3, 3))
    text = f'type: "InfogainLoss" loss_param {{ ignore_label: 9 normalization: {mode} }}'
    assert loss_of(text, [scores, labels, H]) == pytest.approx(ref_infogain(scores, labels, H, 9, mode), rel=1e-12)
    check_gradient(text, [scores, labels, H], check_bottoms=[0])


def test_infogain_matrix_from_binaryproto_source(tmp_path):
    H = rng.uniform(0, 1, (4, 4)).astype(np.float32)
    write_blob_proto(tmp_path / "H.binaryproto", H.reshape(1, 1, 4, 4))
    scores, labels = rng.standard_normal((3, 4)), np.array([1.0, 0, 3])
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" }}'
    loss, prob = forward(text, [scores, labels], num_tops=2)
    assert loss.item() == pytest.approx(ref_infogain(scores, labels, H.astype(float)), rel=1e-6)
    np.testing.assert_allclose(prob, ref_softmax(scores, 1), rtol=1e-12)
    check_gradient(text, [scores, labels], check_bottoms=[0])


def test_infogain_errors():
    with pytest.raises(ValueError, match="source"):
        build('type: "InfogainLoss"', [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(ValueError, match="3 x 3"):
        build('type: "InfogainLoss"', [np.zeros((2, 3)), np.zeros(2), np.eye(2)])
    with pytest.raises(ValueError, match="normalize"):
        build('type: "InfogainLoss" loss_param { normalize: true }', [np.zeros((2, 3)), np.zeros(2), np.eye(3)])


# ---------------------------------------------------------------------------
# MultinomialLogisticLoss
# ---------------------------------------------------------------------------
def test_multinomial_logistic_loss():
    prob = rng.uniform(0.1, 1.0, (3, 4))
    labels = np.array([2.0, 0, 3])
    want = -np.log(prob[np.arange(3), labels.astype(int)]).sum() / 3
    assert loss_of('type: "MultinomialLogisticLoss"', [prob, labels]) == pytest.approx(want, rel=1e-12)
    check_gradient('type: "MultinomialLogisticLoss"', [prob, labels], check_bottoms=[0])
    # probabilities are clamped at 1e-20 before the log
    assert loss_of('type: "MultinomialLogisticLoss"', [np.zeros((1, 2)), np.zeros(1)]) == pytest.approx(
        -np.log(1e-20))


# ---------------------------------------------------------------------------
# ContrastiveLoss
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss(legacy):
    a, b = rng.uniform(-0.5, 0.5, (6, 3, 1, 1)), rng.uniform(-0.5, 0.5, (6, 3, 1, 1))
    y = np.array([1.0, 0, 0, 1, 0, 0]).reshape(6, 1, 1, 1)
    margin = 1.5 if legacy else 1.2
    text = (f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
            f'legacy_version: {str(legacy).lower()} }}')
    assert loss_of(text, [a, b, y]) == pytest.approx(ref_contrastive(a, b, y.ravel(), margin, legacy), rel=1e-6)
    # Caffe's gradient for dissimilar pairs divides by (d + 1e-4): exact only for the legacy form
    check_gradient(text, [a, b, y], check_bottoms=[0, 1], rtol=1e-5 if legacy else 2e-3)
