"""Caffe's DataTransformer semantics: crop, mirror, mean, scale, force_color/gray."""
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.data.datum import array_to_datum, save_mean_file
from pycaffe_lite.data.transformer import DataTransformer
from pycaffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def tparam(text):
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


class Scripted:
    """A stand-in random generator returning scripted integers (mirror draw, then h_off, w_off)."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, n):
        value = self.values.pop(0)
        assert 0 <= value < n
        return value


def caffe_loop(data, mean, mean_values, crop, h_off, w_off, mirror, scale):
    """data_transformer.cpp's Transform(Datum) loop, index for index, in float32."""
    c_n, dh, dw = data.shape
    height, width = (crop, crop) if crop else (dh, dw)
    flat, top = data.ravel(), np.zeros(c_n * height * width, np.float32)
    mflat = None if mean is None else mean.ravel()
    for c in range(c_n):
        for h in range(height):
            for w in range(width):
                data_index = (c * dh + h_off + h) * dw + w_off + w
                top_index = (c * height + h) * width + ((width - 1 - w) if mirror else w)
                x = np.float32(flat[data_index])
                if mflat is not None:
                    top[top_index] = (x - np.float32(mflat[data_index])) * np.float32(scale)
                elif mean_values is not None:
                    top[top_index] = (x - np.float32(mean_values[c])) * np.float32(scale)
                else:
                    top[top_index] = x * np.float32(scale)
    return top.reshape(c_n, height, width)


CHW = np.stack([np.arange(12).reshape(3, 4), 100 + np.arange(12).reshape(3, 4)]).astype(np.uint8)


def test_hand_worked_centre_crop_mean_value_scale():
    t = DataTransformer(tparam("crop_size: 2 mean_value: 1 mean_value: 100 scale: 0.5"), TEST)
    out = np.empty((2, 2, 2), np.float32)
    t.transform(CHW, "chw", out)
    # TEST crop: h_off = (3 - 2) // 2 = 0, w_off = (4 - 2) // 2 = 1.
    expected = np.array([[[0.0, 0.5], [2.0, 2.5]],
                         [[0.5, 1.0], [2.5, 3.0]]], np.float32)
    assert np.array_equal(out, expected)


def test_hand_worked_mirror_and_random_crop():
    t = DataTransformer(tparam("crop_size: 2 mirror: true mean_value: 1 mean_value: 100 scale: 0.5"), TRAIN)
    out = np.empty((2, 2, 2), np.float32)
    t.transform(CHW, "chw", out, Scripted(1, 1, 2))     # mirrored, h_off 1, w_off 2
    # rows 1..2, cols 2..3 of channel 0: [[6, 7], [10, 11]] -> -1, *0.5, flipped left-right.
    expected = np.array([[[3.0, 2.5], [5.0, 4.5]],
                         [[3.5, 3.0], [5.5, 5.0]]], np.float32)
    assert np.array_equal(out, expected)


def test_mean_file_is_aligned_with_the_uncropped_image(tmp_path):
    mean = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.25)
    save_mean_file(tmp_path / "mean.binaryproto", mean)
    t = DataTransformer(tparam(f'crop_size: 2 mirror: true mean_file: "{tmp_path}/mean.binaryproto"'), TRAIN)
    out = np.empty((2, 2, 2), np.float32)
    t.transform(CHW, "chw", out, Scripted(1, 0, 1))
    # out[c, h, 1 - w] = x[c, h, 1 + w] - mean[c, h, 1 + w]
    x, m = CHW.astype(np.float32), mean
    expected = (x[:, 0:2, 1:3] - m[:, 0:2, 1:3])[:, :, ::-1]
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("seed", range(6))
def test_against_caffes_loop(seed, tmp_path):
    rng = np.random.default_rng(seed)
    c, h, w = rng.integers(1, 4), rng.integers(5, 9), rng.integers(5, 9)
    data = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
    crop = int(rng.integers(0, 5))
    scale = float(np.float32(rng.choice([1.0, 0.00390625, 0.017, 1.7])))
    kind = ["none", "file", "values", "value"][seed % 4]
    text = f"crop_size: {crop} scale: {scale!r} mirror: true"
    mean = mean_values = None
    if kind == "file":
        mean = rng.random((c, h, w), np.float32) * 255
        save_mean_file(tmp_path / "m.binaryproto", mean)
        text += f' mean_file: "{tmp_path}/m.binaryproto"'
    elif kind == "values":
        mean_values = rng.random(c).astype(np.float32) * 255
        text += "".join(f" mean_value: {float(v)!r}" for v in mean_values)
    elif kind == "value":
        mean_values = np.repeat(np.float32(77.7), c)
        text += " mean_value: 77.7"
    for phase in (TRAIN, TEST):
        t = DataTransformer(tparam(text), phase)
        for mirror in (0, 1):
            if phase == TRAIN and crop:
                h_off, w_off = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
                draws = Scripted(mirror, h_off, w_off)
            else:
                h_off, w_off = ((h - crop) // 2, (w - crop) // 2) if crop else (0, 0)
                draws = Scripted(mirror)
            shape = (c, crop, crop) if crop else (c, h, w)
            out = np.empty(shape, np.float32)
            t.transform(data, "chw", out, draws)
            assert np.array_equal(out, caffe_loop(data, mean, mean_values, crop, h_off, w_off, mirror, scale))


def test_float_data_datum_and_float64_output():
    values = np.random.default_rng(1).random((1, 4, 4)).astype(np.float32)
    datum = array_to_datum(values, label=3)
    t = DataTransformer(tparam("scale: 2 mean_value: 0.5"), TEST)
    image, layout = t.decode(datum)
    out = np.empty((1, 4, 4), np.float64)
    t.transform(image, layout, out)
    assert np.array_equal(out, (values.astype(np.float64) - np.float64(np.float32(0.5))) * 2)


def test_vectorized_batch_path_equals_per_item():
    stack = np.random.default_rng(2).integers(0, 256, (5, 3, 9, 7)).astype(np.uint8)
    t = DataTransformer(tparam("crop_size: 5 scale: 0.25 mean_value: 10 mean_value: 20 mean_value: 30"), TEST)
    batched = np.empty((5, 3, 5, 5), np.float32)
    t.transform_stack(stack, batched)
    for i in range(5):
        single = np.empty((3, 5, 5), np.float32)
        t.transform(stack[i], "chw", single)
        assert np.array_equal(batched[i], single)


def test_force_color_and_force_gray_decode_encoded_datums():
    image = np.random.default_rng(3).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    ok, png = cv2.imencode(".png", image)
    datum = caffe_pb2.Datum(data=png.tobytes(), encoded=True, label=1)
    native, layout = DataTransformer(tparam(""), TEST).decode(datum)
    assert layout == "hwc" and np.array_equal(native, image)
    gray, _ = DataTransformer(tparam("force_gray: true"), TEST).decode(datum)
    assert gray.shape == (6, 7) and np.array_equal(gray, cv2.imdecode(png, cv2.IMREAD_GRAYSCALE))
    ok, gpng = cv2.imencode(".png", gray)
    color, _ = DataTransformer(tparam("force_color: true"), TEST).decode(
        caffe_pb2.Datum(data=gpng.tobytes(), encoded=True))
    assert color.shape == (6, 7, 3) and np.array_equal(color[:, :, 0], gray)


@pytest.mark.parametrize("text,message", [
    ("force_color: true force_gray: true", "both force_color and force_gray"),
    ('mean_file: "x.binaryproto" mean_value: 1', "mean_file and mean_value"),
])
def test_invalid_settings_are_errors(text, message):
    with pytest.raises(ValueError, match=message):
        DataTransformer(tparam(text), TEST)


def test_mean_value_count_and_crop_size_are_checked():
    t = DataTransformer(tparam("mean_value: 1 mean_value: 2"), TEST)
    with pytest.raises(ValueError, match="1 mean_value or as many as channels"):
        t.transform(CHW[:1].repeat(3, 0), "chw", np.empty((3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="crop_size 5 is larger than the image"):
        DataTransformer(tparam("crop_size: 5"), TEST).infer_shape(CHW, "chw")
