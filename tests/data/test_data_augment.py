"""Augmentation: every transform keeps labels and shapes, repeats under a seed, varies across seeds."""
import numpy as np
import pytest

from data_helpers import build_layer, make_lmdb
from pycaffe_lite.data import augment as A
from pycaffe_lite.data.pca import compute_pca_lighting
from pycaffe_lite.proto import caffe_pb2

IMAGE = np.clip(np.linspace(0, 255, 30 * 40 * 3).reshape(30, 40, 3)
                + np.random.default_rng(0).integers(0, 40, (30, 40, 3)), 0, 255).astype(np.uint8)
EIG = dict(eigval=[60.0, 6.0, 1.0], eigvec=np.linalg.qr(np.random.default_rng(1).random((3, 3)))[0])

GEOMETRIC = {
    "scale_jitter": lambda im, r: A.scale_jitter(im, r, 32, 48),
    "random_resized_crop": lambda im, r: A.random_resized_crop(im, r, 24),
    "hflip": lambda im, r: A.hflip(im, r),
    "rotate": lambda im, r: A.rotate(im, r, 15),
    "translate": lambda im, r: A.translate(im, r, 0.2),
    "shear": lambda im, r: A.shear(im, r, 10),
    "stretch": lambda im, r: A.stretch(im, r, 0.2),
    "lens_distort": lambda im, r: A.lens_distort(im, r, 0.3),
}
PHOTOMETRIC = {
    "color_jitter": lambda x, r: A.color_jitter(x, r, 0.4, 0.4, 0.4),
    "lighting": lambda x, r: A.lighting(x, r, EIG["eigval"], EIG["eigvec"], 0.1),
}


def _differs_across_seeds(fn, make_input):
    outs = [fn(make_input(), np.random.default_rng(s)) for s in range(6)]
    return any(a.shape != outs[0].shape or not np.array_equal(a, outs[0]) for a in outs[1:])


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
@pytest.mark.parametrize("gray", [False, True])
def test_geometric_transforms(name, gray):
    fn = GEOMETRIC[name]
    image = IMAGE[:, :, 0] if gray else IMAGE
    a = fn(image, np.random.default_rng(7))
    b = fn(image, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.dtype == image.dtype and a.ndim == image.ndim
    if name not in ("scale_jitter", "random_resized_crop"):
        assert a.shape == image.shape
    if name == "random_resized_crop":
        assert a.shape[:2] == (24, 24)
    if name == "scale_jitter":
        assert 32 <= min(a.shape[:2]) <= 48
    assert _differs_across_seeds(fn, lambda: image)


@pytest.mark.parametrize("name", sorted(PHOTOMETRIC))
def test_photometric_transforms(name):
    fn = PHOTOMETRIC[name]
    chw = IMAGE.transpose(2, 0, 1).astype(np.float32)
    a = fn(chw.copy(), np.random.default_rng(7))
    b = fn(chw.copy(), np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == chw.shape and a.dtype == np.float32
    assert _differs_across_seeds(fn, chw.copy)


def test_lighting_adds_the_pca_colour_shift():
    chw = np.zeros((3, 2, 2), np.float32)
    rng = np.random.default_rng(3)
    alpha = np.random.default_rng(3).normal(0, 0.1, 3)
    A.lighting(chw, rng, EIG["eigval"], EIG["eigvec"], 0.1)
    shift = EIG["eigvec"] @ (alpha * np.asarray(EIG["eigval"]))
    assert np.allclose(chw[:, 0, 0], shift, atol=1e-5) and np.allclose(chw[:, 1, 1], shift, atol=1e-5)


def test_affine_identity_is_exact():
    rng = np.random.default_rng(0)
    assert np.array_equal(A.rotate(IMAGE, rng, 0), IMAGE)
    assert np.array_equal(A.lens_distort(IMAGE, rng, 0), IMAGE)


AUG = """augmentation {{ {} }}"""
LAYER_AUGS = {
    "scale_jitter": "scale_jitter { min_size: 24 max_size: 32 }",
    "random_resized_crop": "random_resized_crop { min_area: 0.3 }",
    "mirror": "mirror: true",
    "rotation": "rotation: 20",
    "translation": "translation: 0.15",
    "shear": "shear: 10",
    "stretch": "stretch: 0.2",
    "lens_distortion": "lens_distortion: 0.3",
    "color_jitter": "color_jitter { brightness: 0.4 contrast: 0.4 saturation: 0.4 }",
    "lighting": "lighting { eigval: [60, 6, 1] eigvec: [0.58, -0.71, 0.41, 0.58, 0, -0.82, 0.58, 0.71, 0.41] }",
    "all": "scale_jitter { min_size: 24 max_size: 30 } rotation: 10 translation: 0.1 shear: 5 stretch: 0.1 "
           "lens_distortion: 0.1 mirror: true color_jitter { brightness: 0.3 } "
           "lighting { eigval: [60, 6, 1] eigvec: [1, 0, 0, 0, 1, 0, 0, 0, 1] }",
}


@pytest.fixture(scope="module")
def jpeg_lmdb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aug")
    return make_lmdb(folder, n=6, size=(26, 30), encoded=True, ext="jpg")


def _batch(db, aug, seed, phase=None, crop=20, extra=""):
    text = (f'name: "d" type: "Data" top: "data" top: "label" '
            f'transform_param {{ crop_size: {crop} seed: {seed} scale: 0.5 mean_value: 100 '
            f'{AUG.format(aug)} {extra} }} '
            f'data_param {{ source: "{db}" batch_size: 6 backend: LMDB prefetch: 2 }}')
    layer, tops = build_layer(text, phase)
    try:
        layer.Forward([], tops)
        return tops[0].data.copy(), tops[1].data.copy()
    finally:
        layer.close()


@pytest.mark.parametrize("name", sorted(LAYER_AUGS))
def test_data_layer_augmentation(jpeg_lmdb, name):
    data, label = _batch(jpeg_lmdb, LAYER_AUGS[name], seed=1)
    plain, plain_label = _batch(jpeg_lmdb, "", seed=1, phase=caffe_pb2.TEST)
    assert data.shape == plain.shape == (6, 3, 20, 20) and np.array_equal(label, plain_label)
    again, _ = _batch(jpeg_lmdb, LAYER_AUGS[name], seed=1)
    other, _ = _batch(jpeg_lmdb, LAYER_AUGS[name], seed=2)
    assert np.array_equal(data, again)
    assert not np.array_equal(data, other)


def test_same_seed_same_batch_with_worker_threads(jpeg_lmdb):
    one, _ = _batch(jpeg_lmdb, LAYER_AUGS["all"], seed=4)
    four, _ = _batch(jpeg_lmdb, LAYER_AUGS["all"], seed=4, extra="num_threads: 3")
    assert np.array_equal(one, four)


def test_yaml_file_equals_the_prototxt_block(jpeg_lmdb, tmp_path):
    (tmp_path / "aug.yaml").write_text("rotation: 20\ncolor_jitter: {brightness: 0.4, contrast: 0.4}\n")
    from_yaml, _ = _batch(jpeg_lmdb, "", seed=3, extra=f'augmentation_file: "{tmp_path}/aug.yaml"')
    inline, _ = _batch(jpeg_lmdb, "rotation: 20 color_jitter { brightness: 0.4 contrast: 0.4 }", seed=3)
    assert np.array_equal(from_yaml, inline)


def test_unknown_yaml_field_names_the_file(jpeg_lmdb, tmp_path):
    (tmp_path / "aug.yaml").write_text("rotaton: 20\n")
    with pytest.raises(ValueError, match="aug.yaml.*rotaton"):
        _batch(jpeg_lmdb, "", seed=3, extra=f'augmentation_file: "{tmp_path}/aug.yaml"')


def test_test_phase_uses_only_the_deterministic_resize(jpeg_lmdb):
    a, _ = _batch(jpeg_lmdb, LAYER_AUGS["all"], seed=1, phase=caffe_pb2.TEST)
    b, _ = _batch(jpeg_lmdb, LAYER_AUGS["all"], seed=2, phase=caffe_pb2.TEST)
    assert np.array_equal(a, b)


def test_resizing_augmentation_needs_crop_size(jpeg_lmdb):
    with pytest.raises(ValueError, match="need crop_size"):
        _batch(jpeg_lmdb, LAYER_AUGS["scale_jitter"], seed=1, crop=0)


def test_pca_tool_recovers_the_colour_covariance(tmp_path):
    from pycaffe_lite.cli import main as cli
    from pycaffe_lite.data.datum import image_to_datum
    from pycaffe_lite.data.lmdb_io import LMDBWriter
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.random((3, 3)))[0]
    sd = np.array([30.0, 10.0, 3.0])
    with LMDBWriter(tmp_path / "db") as db:
        for i in range(4):
            pixels = 128 + (rng.normal(size=(40 * 40, 3)) * sd) @ basis.T
            image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(40, 40, 3)
            db.put(f"{i:08d}", image_to_datum(image, 0).SerializeToString())
    assert cli(["compute_pca_lighting", str(tmp_path / "db"), str(tmp_path / "pca.yaml")]) == 0
    eigval, eigvec = A.load_pca_file(tmp_path / "pca.yaml")
    assert np.allclose(eigval, sd ** 2, rtol=0.1)
    assert abs(abs(eigvec[:, 0] @ basis[:, 0]) - 1) < 1e-3
    val2, vec2, _ = compute_pca_lighting(tmp_path / "db")
    assert np.allclose(val2, eigval, rtol=1e-6)
    # The file works both as lighting { pca_file } and as a whole augmentation_file.
    param = A.augmentation_from_dict(A.load_yaml(tmp_path / "pca.yaml"))
    assert len(param.lighting.eigval) == 3 and len(param.lighting.eigvec) == 9


def _augmenter(text, phase, crop):
    from google.protobuf import text_format
    return A.Augmenter(text_format.Parse(text, caffe_pb2.AugmentationParameter()), phase, crop)


def _close(a, b, worst=2, mean=0.35):
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return d.max() <= worst and d.mean() <= mean


SMOOTH = np.clip(np.add.outer(np.linspace(0, 200, 30), np.linspace(0, 50, 40))[..., None]
                 + np.array([0, 20, 40]), 0, 255).astype(np.uint8)


def test_fused_rendering_matches_the_separate_transforms():
    """The Augmenter resamples once; the result matches applying the small transforms one by one."""
    # TEST scale jitter: resize the shorter side, then Caffe's centre crop.
    aug = _augmenter("scale_jitter { min_size: 20 max_size: 24 test_size: 22 }", caffe_pb2.TEST, 16)
    plan = aug.plan(30, 40, None)
    resized = A.resize_shorter_side(SMOOTH, 22)
    y, x = (resized.shape[0] - 16) // 2, (resized.shape[1] - 16) // 2
    assert plan.size == resized.shape[:2]
    assert _close(aug.render(SMOOTH, plan, y, x, 16, 16), resized[y:y + 16, x:x + 16])
    # TRAIN rotation: warp the whole image, then crop a window.
    aug = _augmenter("rotation: 25", caffe_pb2.TRAIN, 20)
    plan = aug.plan(30, 40, np.random.default_rng(5))
    whole = A.rotate(SMOOTH, np.random.default_rng(5), 25)
    assert _close(aug.render(SMOOTH, plan, 4, 7, 20, 20), whole[4:24, 7:27], worst=1)
    # TRAIN random-resized crop: the same box from the same draws.
    aug = _augmenter("random_resized_crop { min_area: 0.3 }", caffe_pb2.TRAIN, 16)
    plan = aug.plan(30, 40, np.random.default_rng(6))
    assert _close(aug.render(SMOOTH, plan, 0, 0, 16, 16),
                  A.random_resized_crop(SMOOTH, np.random.default_rng(6), 16, 0.3))
    # TRAIN lens distortion.
    aug = _augmenter("lens_distortion: 0.3", caffe_pb2.TRAIN, 0)
    plan = aug.plan(30, 40, np.random.default_rng(7))
    assert _close(aug.render(SMOOTH, plan, 0, 0, 30, 40), A.lens_distort(SMOOTH, np.random.default_rng(7), 0.3),
                  worst=1)


def test_fused_affine_warps_compose_in_the_drawn_order():
    """stretch, then shear, then rotation, then translation, as one warp: the same as warping
    by the product of the four matrices drawn from the same generator in that order."""
    aug = _augmenter("stretch: 0.2 shear: 15 rotation: 20 translation: 0.1 border: 'constant'",
                     caffe_pb2.TRAIN, 0)
    plan = aug.plan(30, 40, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    drawn = [A.stretch_matrix(rng, 30, 40, 0.2), A.shear_matrix(rng, 30, 40, 15),
             A.rotation_matrix(rng, 30, 40, 20), A.translation_matrix(rng, 30, 40, 0.1)]
    product = np.eye(3)
    for m in drawn:
        product = np.vstack([A.as_matrix(m), [0, 0, 1]]) @ product
    assert not np.allclose(product, np.eye(3))
    expected = A.warp_affine(SMOOTH, product, border="constant")
    assert _close(aug.render(SMOOTH, plan, 0, 0, 30, 40), expected, worst=1)
    # the affine helpers agree with their matrix form
    p, q = drawn[2], drawn[3]
    assert np.allclose(np.vstack([A.as_matrix(A.compose(p, q)), [0, 0, 1]]),
                       np.vstack([A.as_matrix(p), [0, 0, 1]]) @ np.vstack([A.as_matrix(q), [0, 0, 1]]))
    assert np.allclose(A.as_matrix(A.compose(p, A.invert(p))), A.as_matrix(A.IDENTITY))
