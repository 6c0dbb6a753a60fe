"""WindowData (R-CNN's window data layer): the window file, fg/bg sampling, warping with
context padding against hand-computed OpenCV crops, mirroring under a seed, and errors
that name the window file and line."""
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite.blob import Blob
from pycaffe_lite.data.datum import DataError, save_mean_file
from pycaffe_lite.layer import create_layer
from pycaffe_lite.data.windows import WindowFile, c_round, warp_window
from pycaffe_lite.proto import caffe_pb2

H, W = 40, 50          # every test image
FG_BOX = (10, 10, 29, 29)
BG_BOX = (0, 0, 9, 9)


def write_image(path, seed):
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(H) * 3, np.arange(W) * 2)[..., None] + np.array([0, 40, 80])
    image = np.clip(base + rng.integers(0, 60, (H, W, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image)
    return image


def write_window_file(folder, windows_per_image, root=""):
    """Images folder/img<i>.png and folder/windows.txt; windows_per_image: [[(class, overlap, box)]]."""
    lines, images = [], []
    for i, windows in enumerate(windows_per_image):
        images.append(write_image(folder / f"img{i}.png", seed=i))
        lines += [f"# {i}", f"{root}img{i}.png" if root else str(folder / f"img{i}.png"), "3", str(H), str(W),
                  str(len(windows))]
        lines += [f"{c} {o} {x1} {y1} {x2} {y2}" for c, o, (x1, y1, x2, y2) in windows]
    source = folder / "windows.txt"
    source.write_text("\n".join(lines) + "\n")
    return source, images


def build(source, batch=4, crop=16, window="", transform="", dtype=np.float32, phase=caffe_pb2.TRAIN):
    text = (f'name: "win" type: "WindowData" top: "data" top: "label" '
            f'transform_param {{ crop_size: {crop} {transform} }} '
            f'window_data_param {{ source: "{source}" batch_size: {batch} {window} }}')
    layer = create_layer(text_format.Parse(text, caffe_pb2.LayerParameter()), phase)
    tops = [Blob((), dtype), Blob((), dtype)]
    layer.SetUp([], tops)
    return layer, tops


@pytest.fixture
def layers():
    """Build layers through this; every one is closed (its prefetch thread stopped) afterwards."""
    made = []

    def make(*args, **kw):
        layer, tops = build(*args, **kw)
        made.append(layer)
        return layer, tops
    yield make
    for layer in made:
        layer.close()


def batch(layer, tops):
    layer.Forward([], tops)
    return tops[0].data.copy(), tops[1].data.copy()


def chw(image):
    return image.transpose(2, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------
# the window file
# ---------------------------------------------------------------------------
def test_window_file_splits_fg_and_bg_by_overlap(tmp_path):
    source, _ = write_window_file(tmp_path, [[(2, 0.8, FG_BOX), (5, 0.1, BG_BOX), (7, 0.4, (1, 1, 5, 5))],
                                             [(3, 0.5, FG_BOX), (0, 0.2999, BG_BOX)]])
    wf = WindowFile(source, fg_threshold=0.5, bg_threshold=0.3)
    assert [img[1:4] for img in wf.images] == [(3, H, W), (3, H, W)]
    # fg keeps its class (overlap >= 0.5 counts); bg is forced to label 0 and overlap 0; 0.4 is dropped.
    assert wf.fg[:, :6].tolist() == [[0, 2, *FG_BOX], [1, 3, *FG_BOX]]
    assert wf.bg[:, :6].tolist() == [[0, 0, *BG_BOX], [1, 0, *BG_BOX]]
    assert wf.fg_overlap.tolist() == pytest.approx([0.8, 0.5]) and wf.bg_overlap.tolist() == [0, 0]
    assert wf.fg[:, 6].tolist() == [7, 16] and wf.bg[:, 6].tolist() == [8, 17]     # their lines
    assert wf.label_histogram() == {0: 2, 2: 1, 3: 1}


def test_window_file_is_a_token_stream_as_in_caffe(tmp_path):
    write_image(tmp_path / "a.png", 0)
    source = tmp_path / "w.txt"
    source.write_text(f"# 0 a.png 3 {H} {W} 2\n2 0.9 10 10\n29 29 0 0.0 0 0 9 9\n\n")
    wf = WindowFile(source, root_folder=str(tmp_path) + "/")
    assert wf.images[0][0] == str(tmp_path / "a.png")
    assert wf.fg[:, :6].tolist() == [[0, 2, *FG_BOX]] and wf.bg[:, :6].tolist() == [[0, 0, *BG_BOX]]


@pytest.mark.parametrize("text, line, message", [
    ("", None, "is empty"),
    ("# 0\nimg.png\n3\n40\n50\n1\n1 0.9 0 0 5\n", 7, "ends where y2 was expected"),
    ("# 0\nimg.png\n3\n40\n50\n1\n1 0.9 0 0 5.5 5\n", 7, "x2 must be an integer, got '5.5'"),
    ("# 0\nimg.png\n3\n40\n50\n1\n0 0.9 0 0 5 5\n", 7, "needs a class_index > 0, got 0"),
    ("# 0\nimg.png\n3\n40\n50\n1\n1 0.9 6 0 5 5\n", 7, "needs x1 <= x2"),
    ("# 1\nimg.png\n3\n40\n50\n0\n", 1, "image_index 1 out of order"),
    ("# 0\nimg.png\n3\n40\n50\n0\n% 1\n", 7, "expected '# image_index'"),
    ("# 0\nimg.png\n2\n40\n50\n0\n", 3, "channels must be 1 or 3"),
])
def test_window_file_errors_name_the_file_and_line(tmp_path, text, line, message):
    source = tmp_path / "w.txt"
    source.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        WindowFile(source)
    assert str(source) in str(info.value)
    if line is not None:
        assert f"line {line}:" in str(info.value)


def test_c_round_is_half_away_from_zero():
    assert [c_round(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4999, np.float32(6.5))] == [1, 2, 3, -1, -3, 2, 7]


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------
def test_shapes_labels_and_fg_fraction(tmp_path, layers):
    source, _ = write_window_file(tmp_path, [[(2, 0.8, FG_BOX), (5, 0.1, BG_BOX), (7, 0.4, (1, 1, 5, 5))],
                                             [(4, 0.9, (5, 5, 44, 34)), (6, 0.0, (20, 0, 49, 39))]])
    layer, tops = layers(source, batch=10, crop=12, window="fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: 0.25")
    assert tops[0].shape == (10, 3, 12, 12) and tops[1].shape == (10,)
    for _ in range(3):
        data, label = batch(layer, tops)
        assert data.shape == (10, 3, 12, 12) and data.dtype == np.float32
        # int(10 * 0.25) = 2 foreground windows, after the 8 background ones; class 7 (overlap 0.4) never.
        assert (label[:8] == 0).all() and set(label[8:]) <= {2, 4}
    layer, tops = layers(source, batch=10, crop=12, window="fg_fraction: 0.55")
    assert (batch(layer, tops)[1] > 0).sum() == 5                    # int(5.5)
    layer, tops = layers(source, batch=3, crop=12, window="fg_fraction: 1")
    assert (batch(layer, tops)[1] > 0).all()


def test_labels_match_the_window_drawn(tmp_path, layers):
    """Each item is the warp of a window of its own label: fg gets its class, bg gets 0."""
    source, images = write_window_file(tmp_path, [[(3, 0.7, FG_BOX), (9, 0.2, BG_BOX)]])
    layer, tops = layers(source, batch=6, crop=8, window="fg_fraction: 0.5")
    data, label = batch(layer, tops)
    fg = chw(cv2.resize(images[0][10:30, 10:30], (8, 8)))
    bg = chw(cv2.resize(images[0][0:10, 0:10], (8, 8)))
    assert label.tolist() == [0, 0, 0, 3, 3, 3]
    for item in range(6):
        assert np.array_equal(data[item], bg if label[item] == 0 else fg)


def test_warp_matches_a_hand_computed_resize_with_mean_and_scale(tmp_path, layers):
    box = (7, 5, 36, 24)      # 30 x 20, warped to 16 x 16
    source, images = write_window_file(tmp_path, [[(1, 1.0, box)]])
    layer, tops = layers(source, batch=2, crop=16, window="fg_fraction: 1 scale: 0.5",
                         transform="mean_value: 10 mean_value: 20 mean_value: 30")
    data, label = batch(layer, tops)
    want = (chw(cv2.resize(images[0][5:25, 7:37], (16, 16), interpolation=cv2.INTER_LINEAR))
            - np.array([10, 20, 30], np.float32).reshape(3, 1, 1)) * 0.5
    assert np.array_equal(data[0], want) and np.array_equal(data[1], want)
    assert label.tolist() == [1, 1]


def test_context_pad_grows_the_box(tmp_path, layers):
    # crop 16, context_pad 2: scale 16/12; box centre 20, half 10 -> rows/cols round(6.67)=7 .. round(33.33)=33.
    source, images = write_window_file(tmp_path, [[(1, 1.0, FG_BOX)]])
    layer, tops = layers(source, batch=1, crop=16, window="fg_fraction: 1 context_pad: 2")
    data, _ = batch(layer, tops)
    assert np.array_equal(data[0], chw(cv2.resize(images[0][7:34, 7:34], (16, 16))))


def test_context_pad_outside_the_image_leaves_zeros_and_mirrors_the_padding(tmp_path):
    """Box (0,0,9,9), crop 16, pad 4: grown to -5..15 (21 px), clipped to 0..15; warped to
    round(16*16/21) = 12 px after round(5*16/21) = 4 px of zero padding on the top and left."""
    image = write_image(tmp_path / "a.png", 0)
    warped = cv2.resize(image[0:16, 0:16], (12, 12))
    got, pad_h, pad_w = warp_window(image, BG_BOX, 16, context_pad=4)
    assert (pad_h, pad_w) == (4, 4) and np.array_equal(got, warped)
    got, pad_h, pad_w = warp_window(image, BG_BOX, 16, context_pad=4, mirror=True)
    assert (pad_h, pad_w) == (4, 0) and np.array_equal(got, cv2.flip(warped, 1))

    source, _ = write_window_file(tmp_path, [[(1, 1.0, BG_BOX)]])
    layer, tops = build(source, batch=1, crop=16, window="fg_fraction: 1 context_pad: 4")
    try:
        data, _ = batch(layer, tops)
    finally:
        layer.close()
    want = np.zeros((3, 16, 16), np.float32)
    want[:, 4:, 4:] = chw(warped)
    assert np.array_equal(data[0], want)


def test_square_mode_uses_the_longer_side(tmp_path, layers):
    # box 20 wide, 10 high, centre (20, 15): square half-side 10 -> cols 10..30, rows 5..25.
    source, images = write_window_file(tmp_path, [[(1, 1.0, (10, 10, 29, 19))]])
    layer, tops = layers(source, batch=1, crop=16, window='fg_fraction: 1 crop_mode: "square"')
    data, _ = batch(layer, tops)
    assert np.array_equal(data[0], chw(cv2.resize(images[0][5:26, 10:31], (16, 16))))


def test_mean_file_centre_crop(tmp_path, layers):
    source, images = write_window_file(tmp_path, [[(1, 1.0, FG_BOX)]])
    mean = np.random.default_rng(3).uniform(0, 255, (3, 20, 22)).astype(np.float32)
    save_mean_file(tmp_path / "mean.binaryproto", mean)
    layer, tops = layers(source, batch=1, crop=16, window="fg_fraction: 1",
                         transform=f'mean_file: "{tmp_path / "mean.binaryproto"}"')
    data, _ = batch(layer, tops)
    off = (22 - 16) // 2      # Caffe takes the offset from the mean's width, for rows too
    want = chw(cv2.resize(images[0][10:30, 10:30], (16, 16))) - mean[:, off:off + 16, off:off + 16]
    np.testing.assert_allclose(data[0], want, rtol=0, atol=1e-4)


def test_mirror_is_random_and_reproducible_under_a_seed(tmp_path, layers):
    source, images = write_window_file(tmp_path, [[(1, 1.0, FG_BOX), (2, 1.0, (5, 5, 44, 34))],
                                                  [(3, 1.0, FG_BOX), (4, 0.0, BG_BOX)]])

    def run(transform="", seed=None):
        if seed is not None:
            caffe.set_random_seed(seed)
        layer, tops = layers(source, batch=16, crop=10, window="fg_fraction: 0.75",
                             transform="mirror: true " + transform)
        return [batch(layer, tops) for _ in range(2)]

    first = run("seed: 11")
    again = run("seed: 11")
    other = run("seed: 12")
    for (d1, l1), (d2, l2) in zip(first, again):
        assert np.array_equal(d1, d2) and np.array_equal(l1, l2)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])            # batches differ
    # Without transform_param.seed, the global generator's seed fixes the batches.
    g1, g2 = run(seed=5), run(seed=5)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(g1, g2))

    # Every item is its window's warp, mirrored or not, and both occur.
    def warp(i, box):
        x1, y1, x2, y2 = box
        return chw(cv2.resize(images[i][y1:y2 + 1, x1:x2 + 1], (10, 10)))
    candidates = {1: [warp(0, FG_BOX)], 2: [warp(0, (5, 5, 44, 34))], 3: [warp(1, FG_BOX)], 0: [warp(1, BG_BOX)]}
    flips = []
    for data, label in first:
        for item in range(16):
            plain = [c for c in candidates[int(label[item])] if np.array_equal(data[item], c)]
            flipped = [c for c in candidates[int(label[item])] if np.array_equal(data[item], c[:, :, ::-1])]
            assert plain or flipped
            flips.append(bool(flipped) and not plain)
    assert any(flips) and not all(flips)


def test_cache_images_gives_the_same_batches(tmp_path, layers):
    source, _ = write_window_file(tmp_path, [[(1, 0.9, FG_BOX), (0, 0.1, BG_BOX)]] * 2)
    plain = batch(*layers(source, batch=6, crop=8, transform="mirror: true seed: 3"))
    cached = batch(*layers(source, batch=6, crop=8, transform="mirror: true seed: 3", window="cache_images: true"))
    assert np.array_equal(plain[0], cached[0]) and np.array_equal(plain[1], cached[1])


def test_root_folder_and_float64(tmp_path, layers):
    source, images = write_window_file(tmp_path, [[(1, 1.0, FG_BOX)]], root="sub/")
    (tmp_path / "sub").mkdir()
    (tmp_path / "img0.png").rename(tmp_path / "sub" / "img0.png")
    layer, tops = layers(source, batch=1, crop=8, window=f'fg_fraction: 1 root_folder: "{tmp_path}/"',
                         dtype=np.float64)
    data, _ = batch(layer, tops)
    assert data.dtype == np.float64
    assert np.array_equal(data[0], chw(cv2.resize(images[0][10:30, 10:30], (8, 8))))


def test_scale_comes_only_from_window_data_param(tmp_path, layers, caplog):
    """Caffe's load_batch reads window_data_param.scale; transform_param.scale is ignored (warned)."""
    source, images = write_window_file(tmp_path, [[(1, 1.0, FG_BOX)]])
    warped = chw(cv2.resize(images[0][10:30, 10:30], (8, 8)))
    with caplog.at_level("WARNING"):
        data, _ = batch(*layers(source, batch=1, crop=8, window="fg_fraction: 1", transform="scale: 0.5"))
    assert np.array_equal(data[0], warped)
    assert "ignores transform_param.scale 0.5" in caplog.text
    data, _ = batch(*layers(source, batch=1, crop=8, window="fg_fraction: 1 scale: 0.25", transform="scale: 0.5"))
    assert np.array_equal(data[0], warped * np.float32(0.25))


def test_v1_net_loses_its_scale_in_the_upgrade_as_in_caffe(tmp_path):
    """A V1 net's window_data_param { scale crop_size } moves to transform_param (Caffe's upgrade);
    Caffe 1.0's layer then reads window_data_param.scale, the default 1, and so does ours."""
    source, images = write_window_file(tmp_path, [[(2, 1.0, FG_BOX)]])
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(f'layers {{ name: "data" type: WINDOW_DATA top: "data" top: "label" '
                        f'window_data_param {{ source: "{source}" batch_size: 2 crop_size: 8 scale: 0.25 '
                        f'fg_fraction: 1 }} }}')
    net = caffe.Net(str(net_file), caffe.TRAIN)
    try:
        net.forward()
        want = chw(cv2.resize(images[0][10:30, 10:30], (8, 8)))
        assert net.blobs["data"].data.shape == (2, 3, 8, 8)
        assert np.array_equal(net.blobs["data"].data[0], want)
        assert net.blobs["label"].data.tolist() == [2, 2]
    finally:
        net.close()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("crop, window, transform, message", [
    (0, "", "", "needs transform_param.crop_size > 0"),
    (8, "context_pad: 4", "", "needs 2 \\* context_pad < crop_size"),
    (8, 'crop_mode: "fancy"', "", 'crop_mode must be "warp" or "square"'),
    (8, "fg_threshold: 0.95", "", "needs foreground windows \\(1 per batch\\)"),
    (8, "fg_fraction: 1.5", "", "fg_fraction must lie in \\[0, 1\\]"),
    (8, "", "mean_value: 1 mean_value: 2", "Specify either 1 mean_value or as many as channels: 3"),
    (8, "crop_size: 9", "", "sets crop_size to 8 in transform_param and to 9 in window_data_param"),
])
def test_setup_errors_name_the_layer(tmp_path, crop, window, transform, message):
    source, _ = write_window_file(tmp_path, [[(1, 0.9, FG_BOX), (0, 0.1, BG_BOX)]])
    with pytest.raises(ValueError, match=message) as info:
        build(source, batch=4, crop=crop, window=window, transform=transform)
    assert "layer 'win' (type WindowData)" in str(info.value)


def test_window_file_error_through_the_layer(tmp_path):
    source = tmp_path / "w.txt"
    source.write_text("# 0\nimg.png\n3\n40\n50\n1\n0 0.9 0 0 5 5\n")
    with pytest.raises(DataError, match=r"layer 'win' \(type WindowData\) window file '.*w.txt', line 7"):
        build(source)
    with pytest.raises(DataError, match="Failed to open window file"):
        build(tmp_path / "missing.txt")


def test_unreadable_image_and_box_outside_the_image_name_the_line(tmp_path, layers):
    source, _ = write_window_file(tmp_path, [[(1, 0.9, FG_BOX)], [(1, 0.9, FG_BOX)]])
    (tmp_path / "img1.png").write_bytes(b"not a png")
    layer, tops = layers(source, batch=8, crop=8, window="fg_fraction: 1", transform="seed: 1")
    with pytest.raises(DataError, match=r"could not open or decode image '.*img1.png' \(window file '.*', line 9\)"):
        for _ in range(5):
            layer.Forward([], tops)
    with pytest.raises(DataError, match=r"could not open or find image '.*img1.png'.*line 9"):
        (tmp_path / "img1.png").unlink()
        build(source, batch=8, crop=8, window="fg_fraction: 1 cache_images: true")

    source, _ = write_window_file(tmp_path, [[(1, 0.9, (30, 30, 60, 39))]])
    layer, tops = layers(source, batch=1, crop=8, window="fg_fraction: 1")
    with pytest.raises(DataError, match=r"line 7 \(image '.*img0.png'\): window \(30, 30, 60, 39\) is not inside "
                                        r"the 50x40 image"):
        layer.Forward([], tops)


def test_registered_with_its_v1_name():
    assert "WindowData" in caffe.layer_type_list()
    from pycaffe_lite.layer import v1_type_names
    assert v1_type_names()["WINDOW_DATA"] == "WindowData"


def test_mean_file_must_cover_the_centred_crop(tmp_path):
    source, _ = write_window_file(tmp_path, [[(1, 1.0, FG_BOX)]])
    # 20 rows, 30 columns: the offset (30 - 16) // 2 = 7 comes from the width, so rows 7..22 overflow.
    save_mean_file(tmp_path / "mean.binaryproto", np.zeros((3, 20, 30), np.float32))
    for name, message in (("mean", r"has shape \(3, 20, 30\).*rows 7 to 22"),
                          ("none", r"layer 'win' \(type WindowData\) mean file .*none.binaryproto does not exist")):
        with pytest.raises(ValueError, match=message):
            build(source, batch=1, crop=16, window="fg_fraction: 1",
                  transform=f'mean_file: "{tmp_path / name}.binaryproto"')
