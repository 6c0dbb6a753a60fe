"""caffe.io (Transformer, images, proto conversions), Classifier and Detector."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")


def transformer_for(shape=(1, 3, 4, 5)):
    t = caffe.io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_applies_pycaffes_steps_in_order():
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)   # H x W x RGB in [0, 1]
    out = transformer_for().preprocess("data", image)
    bgr = image[:, :, ::-1].transpose(2, 0, 1)
    want = (bgr * 255 - np.array([104.0, 117.0, 123.0])[:, None, None]) * 0.5
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_preprocess_deprocess_round_trip():
    image = np.random.default_rng(1).random((4, 5, 3)).astype(np.float32)
    t = transformer_for()
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", image)), image, atol=1e-5)
    # elementwise mean, no channel swap
    t = caffe.io.Transformer({"data": (2, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.random.default_rng(2).random((3, 4, 5)))
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", image)), image, atol=1e-5)
    # a batch item as returned by the net (1 x K x H x W) squeezes
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", image)[None]), image, atol=1e-5)


def test_deprocess_keeps_the_input_dtype():
    """pycaffe's deprocess starts from data.copy().squeeze(): float64 stays float64, and the input is
    left untouched."""
    t = transformer_for()
    x64 = np.random.default_rng(4).random((1, 3, 4, 5))
    keep = x64.copy()
    out = t.deprocess("data", x64)
    assert out.dtype == np.float64 and out.shape == (4, 5, 3)
    assert np.array_equal(x64, keep)
    want = ((keep[0] / 0.5 + np.array([104.0, 117.0, 123.0])[:, None, None]) / 255)[::-1].transpose(1, 2, 0)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    assert t.deprocess("data", x64.astype(np.float32)).dtype == np.float32


def test_preprocess_resizes_to_the_blob_size():
    t = caffe.io.Transformer({"data": (1, 3, 8, 6)})
    t.set_transpose("data", (2, 0, 1))
    image = np.random.default_rng(3).random((16, 12, 3)).astype(np.float32)
    out = t.preprocess("data", image)
    assert out.shape == (3, 8, 6)
    assert abs(float(out.mean()) - float(image.mean())) < 0.05


def test_transformer_refuses_bad_settings():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(ValueError, match="not one of the net inputs"):
        t.set_raw_scale("image", 255)
    with pytest.raises(ValueError, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((3, 5, 5)))


def test_load_image_gives_rgb_floats(tmp_path):
    bgr = np.zeros((3, 4, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 255          # OpenCV order: blue, green, red
    cv2.imwrite(str(tmp_path / "color.png"), bgr)
    img = caffe.io.load_image(str(tmp_path / "color.png"))
    assert img.shape == (3, 4, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[0, 0], [1.0, 20 / 255, 10 / 255], rtol=1e-6)
    gray = caffe.io.load_image(str(tmp_path / "color.png"), color=False)
    assert gray.shape == (3, 4, 1)
    assert gray[0, 0, 0] == pytest.approx(0.2125 + 0.7154 * 20 / 255 + 0.0721 * 10 / 255, rel=1e-5)
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((5, 2), 51, np.uint8))
    tiled = caffe.io.load_image(str(tmp_path / "gray.png"))
    assert tiled.shape == (5, 2, 3) and np.allclose(tiled, 0.2)
    assert caffe.io.load_image(str(tmp_path / "gray.png"), color=False).shape == (5, 2, 1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        caffe.io.load_image(str(tmp_path / "missing.jpg"))


def test_resize_image_and_oversample():
    im = np.random.default_rng(4).random((10, 12, 3)).astype(np.float32)
    assert caffe.io.resize_image(im, (5, 6)).shape == (5, 6, 3)
    assert caffe.io.resize_image(im[:, :, :1], (20, 24)).shape == (20, 24, 1)
    assert caffe.io.resize_image(np.random.random((4, 4, 7)), (8, 8)).shape == (8, 8, 7)
    const = caffe.io.resize_image(np.full((4, 4, 3), 0.3), (7, 9))
    assert const.shape == (7, 9, 3) and np.allclose(const, 0.3)
    crops = caffe.io.oversample([im, im * 2], (6, 8))
    assert crops.shape == (20, 6, 8, 3)
    np.testing.assert_array_equal(crops[0], im[:6, :8])           # top-left
    np.testing.assert_array_equal(crops[3], im[4:, 4:])           # bottom-right
    np.testing.assert_array_equal(crops[4], im[2:8, 2:10])        # center
    np.testing.assert_array_equal(crops[5], im[:6, :8][:, ::-1])  # mirror of top-left
    np.testing.assert_array_equal(crops[10], 2 * im[:6, :8])


def test_blobproto_and_datum_conversions():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    proto = caffe.io.array_to_blobproto(arr, diff=-arr)
    assert list(proto.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto), arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto, return_diff=True), -arr)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4, data=list(range(24)))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 3, 4)
    payload = caffe.io.arraylist_to_blobprotovector_str([arr, arr[:1]])
    back = caffe.io.blobprotovector_str_to_arraylist(payload)
    assert [a.shape for a in back] == [(2, 3, 4), (1, 3, 4)]

    image = np.random.default_rng(5).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    datum = caffe.io.array_to_datum(image, label=7)
    assert datum.label == 7 and len(datum.data) == 60 and not datum.float_data
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), image)
    floats = caffe.io.array_to_datum(image.astype(np.float32) / 3)
    np.testing.assert_allclose(caffe.io.datum_to_array(floats), image / 3, rtol=1e-6)
    ok, png = cv2.imencode(".png", image.transpose(1, 2, 0))
    encoded = caffe_pb2.Datum(data=png.tobytes(), encoded=True, label=1)
    np.testing.assert_array_equal(caffe.io.datum_to_array(encoded), image)
    with pytest.raises(ValueError, match="Incorrect array shape"):
        caffe.io.array_to_datum(np.zeros((2, 2)))


CLASSIFIER_NET = """
name: "tiny_classifier"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def classifier_files(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(CLASSIFIER_NET)
    caffe.set_random_seed(0)
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    return str(model), str(weights)


def test_classifier_predicts_with_and_without_oversampling(classifier_files):
    model, weights = classifier_files
    clf = caffe.Classifier(model, weights, image_dims=(8, 8), raw_scale=255,
                           mean=np.array([100.0, 110.0, 120.0]), channel_swap=(2, 1, 0))
    images = [np.random.default_rng(i).random((10, 9, 3)).astype(np.float32) for i in range(3)]
    probs = clf.predict(images)                       # 3 images x 10 crops = 30 items, 8 batches of 4
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # oversampled prediction = mean over the 10 crops of the resized image
    resized = caffe.io.resize_image(images[0], (8, 8))
    crops = caffe.io.oversample([resized], (6, 6))
    batch = np.stack([clf.transformer.preprocess("data", c) for c in crops])
    want = clf.forward_all(data=batch)["prob"].mean(0)
    np.testing.assert_allclose(probs[0], want, rtol=1e-5)
    center = clf.predict(images, oversample=False)
    assert center.shape == (3, 5)
    np.testing.assert_allclose(center[0], clf.forward_all(data=batch[4:5])["prob"][0], rtol=1e-5)


def test_detector_classifies_windows(classifier_files, tmp_path):
    model, weights = classifier_files
    image = (np.random.default_rng(9).random((20, 30, 3)) * 255).astype(np.uint8)
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, image)
    det = caffe.Detector(model, weights, raw_scale=255, mean=np.array([100.0, 110.0, 120.0]),
                         channel_swap=(2, 1, 0))
    windows = [(0, 0, 10, 10), (5, 5, 20, 30)]
    dets = det.detect_windows([(path, windows)])
    assert [d["window"] for d in dets] == windows and all(d["filename"] == path for d in dets)
    assert dets[0]["prediction"].shape == (5,)
    np.testing.assert_allclose(sum(dets[1]["prediction"]), 1, rtol=1e-5)
    padded = caffe.Detector(model, weights, raw_scale=255, mean=np.array([100.0, 110.0, 120.0]),
                            channel_swap=(2, 1, 0), context_pad=1)
    crop = padded.crop(caffe.io.load_image(path), np.array([2, 2, 12, 12]))
    assert crop.shape == (6, 6, 3)
    assert len(padded.detect_windows([(path, windows)])) == 2
