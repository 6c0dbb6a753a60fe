"""Data augmentation beyond Caffe's crop and mirror: small OpenCV transforms.

Every transform is a plain function of an image and a NumPy random
Generator, so it is reproducible under a seed and testable alone:

    rng = np.random.default_rng(0)
    out = rotate(image, rng, max_degrees=10)

Geometric transforms take HWC (or HW) images, uint8 or float32, in OpenCV's
channel order; photometric ones (`color_jitter`, `lighting`) take CHW float
arrays in pixel units (0..255) and work in place, because they run inside the
Caffe transform after the crop (see transformer.py for the order).

`Augmenter` builds the TRAIN/TEST pipeline from an AugmentationParameter
(prototxt `transform_param { augmentation { ... } }`) or a YAML file with the
same fields (`transform_param { augmentation_file: "aug.yaml" }`):

    scale_jitter: {min_size: 256, max_size: 480}
    rotation: 10          # degrees
    translation: 0.1      # fraction of width / height
    color_jitter: {brightness: 0.4, contrast: 0.4, saturation: 0.4}
    lighting: {alphastd: 0.1, pca_file: pca.yaml}
"""
import math
import os

import numpy as np

from ..proto import caffe_pb2

_BGR_GRAY = np.array([0.114, 0.587, 0.299], np.float32)  # ITU-R 601 luma, OpenCV's BGR order


def _cv2():
    import cv2
    return cv2


def _size(image):
    return image.shape[0], image.shape[1]


def _border(border):
    cv2 = _cv2()
    if border in ("reflect", "reflect101", ""):
        return cv2.BORDER_REFLECT_101
    if border == "constant":
        return cv2.BORDER_CONSTANT
    if border == "replicate":
        return cv2.BORDER_REPLICATE
    raise ValueError(f"augmentation border must be 'reflect', 'constant' or 'replicate', got '{border}'")


def _keep_channels(result, image):
    # OpenCV drops the trailing axis of a one-channel HWC image; keep the caller's layout.
    if image.ndim == 3 and result.ndim == 2:
        return result[:, :, np.newaxis]
    return result


# --------------------------------------------------------------------------
# Resizing and cropping
# --------------------------------------------------------------------------
def resize(image, height, width, interpolation=None):
    cv2 = _cv2()
    if (height, width) == _size(image):
        return image
    interpolation = cv2.INTER_LINEAR if interpolation is None else interpolation
    return _keep_channels(cv2.resize(image, (int(width), int(height)), interpolation=interpolation), image)


def resize_shorter_side(image, size):
    """Resize so the shorter side is `size`, keeping the aspect ratio (rounded)."""
    return resize(image, *shorter_side_size(*_size(image), size))


def scale_jitter(image, rng, min_size, max_size):
    """ResNet's scale augmentation: shorter side resized to L ~ U{min_size..max_size}."""
    if not 0 < min_size <= max_size:
        raise ValueError(f"scale_jitter needs 0 < min_size <= max_size, got {min_size}, {max_size}")
    return resize_shorter_side(image, int(rng.integers(min_size, max_size + 1)))


def random_resized_crop(image, rng, size, min_area=0.08, max_area=1.0, min_aspect=3 / 4, max_aspect=4 / 3,
                        attempts=10):
    """Inception's crop: a random area fraction and aspect ratio, resized to size x size."""
    y, x, ch, cw = random_resized_crop_box(*_size(image), rng, min_area, max_area, min_aspect, max_aspect, attempts)
    return resize(image[y:y + ch, x:x + cw], size, size)


def hflip(image, rng, p=0.5):
    """Horizontal flip with probability p."""
    return image[:, ::-1] if rng.random() < p else image


# --------------------------------------------------------------------------
# Affine warps.  An affine map is a 6-tuple (a, b, c, d, e, f):
#     x' = a*x + b*y + c,   y' = d*x + e*y + f
# in plain floats, not 3x3 arrays: a training image composes up to six of
# them, and NumPy's per-call cost on 3x3 products and constructors was most of
# the augmentation's time (0.2 ms of a 28x28 digit's 0.25 ms).
# --------------------------------------------------------------------------
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def compose(p, q):
    """The map p after q (the matrix product p @ q)."""
    a, b, c, d, e, f = p
    qa, qb, qc, qd, qe, qf = q
    return (a * qa + b * qd, a * qb + b * qe, a * qc + b * qf + c,
            d * qa + e * qd, d * qb + e * qe, d * qc + e * qf + f)


def invert(m):
    """The inverse map (closed form)."""
    a, b, c, d, e, f = m
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return (ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f))


def translation(x, y):
    return (1.0, 0.0, float(x), 0.0, 1.0, float(y))


def as_matrix(m):
    """A 2x3 float64 array (OpenCV's form) of a 6-tuple, 2x3 or 3x3 affine."""
    m = np.asarray(m, np.float64)
    return m.reshape(2, 3) if m.size == 6 else m[:2]


def _about_centre(a, b, d, e, h, w):
    """The linear map [[a, b], [d, e]] about the image centre."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def rotation_matrix(rng, h, w, max_degrees):
    angle = math.radians(rng.uniform(-max_degrees, max_degrees))
    c, s = math.cos(angle), math.sin(angle)
    return _about_centre(c, -s, s, c, h, w)


def translation_matrix(rng, h, w, max_fraction):
    dx = rng.uniform(-max_fraction, max_fraction) * w
    dy = rng.uniform(-max_fraction, max_fraction) * h
    return translation(dx, dy)


def shear_matrix(rng, h, w, max_degrees):
    k = math.tan(math.radians(rng.uniform(-max_degrees, max_degrees)))
    return _about_centre(1.0, k, 0.0, 1.0, h, w)


def stretch_matrix(rng, h, w, amount):
    sx = rng.uniform(1 - amount, 1 + amount)
    sy = rng.uniform(1 - amount, 1 + amount)
    return _about_centre(sx, 0.0, 0.0, sy, h, w)


def warp_affine(image, matrix, border="reflect"):
    """Apply a forward affine (6-tuple, 2x3 or 3x3) with bilinear interpolation, same size."""
    cv2 = _cv2()
    h, w = _size(image)
    out = cv2.warpAffine(image, as_matrix(matrix), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=_border(border), borderValue=0)
    return _keep_channels(out, image)


def rotate(image, rng, max_degrees, border="reflect"):
    return warp_affine(image, rotation_matrix(rng, *_size(image), max_degrees), border)


def translate(image, rng, max_fraction, border="reflect"):
    return warp_affine(image, translation_matrix(rng, *_size(image), max_fraction), border)


def shear(image, rng, max_degrees, border="reflect"):
    return warp_affine(image, shear_matrix(rng, *_size(image), max_degrees), border)


def stretch(image, rng, amount, border="reflect"):
    return warp_affine(image, stretch_matrix(rng, *_size(image), amount), border)


_GRIDS = {}


def _unit_grid(h, w):
    """Pixel coordinates relative to the centre, in units of the half diagonal (cached per size)."""
    grid = _GRIDS.get((h, w))
    if grid is None:
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        norm = math.hypot(cx, cy) or 1.0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        xs, ys = (xs - cx) / norm, (ys - cy) / norm
        grid = (xs, ys, xs * xs + ys * ys, cx, cy, norm)
        if len(_GRIDS) > 16:
            _GRIDS.clear()
        _GRIDS[(h, w)] = grid
    return grid


def lens_distort(image, rng, max_k, border="reflect"):
    """Radial distortion: output pixel at radius r samples the input at r * (1 + k r^2)."""
    cv2 = _cv2()
    h, w = _size(image)
    k = rng.uniform(-max_k, max_k)
    xs, ys, r2, cx, cy, norm = _unit_grid(h, w)
    factor = 1.0 + np.float32(k) * r2
    map_x = xs * factor * norm + cx
    map_y = ys * factor * norm + cy
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=_border(border), borderValue=0)
    return _keep_channels(out, image)


# --------------------------------------------------------------------------
# Photometric: CHW float32 in pixel units, in place
# --------------------------------------------------------------------------
def _gray(chw):
    """Luma of a CHW image (BGR weights for 3 channels, the mean otherwise), one plane."""
    if chw.shape[0] == 3:
        gray = chw[0] * _BGR_GRAY[0]
        gray += chw[1] * _BGR_GRAY[1]
        gray += chw[2] * _BGR_GRAY[2]
        return gray
    return chw.mean(axis=0)


def _mean_gray(chw):
    """mean(gray(x)) without building the gray image: the weighted channel means."""
    means = chw.reshape(chw.shape[0], -1).mean(axis=1)
    if chw.shape[0] == 3:
        return float(_BGR_GRAY @ means)
    return float(means.mean())


def color_jitter(chw, rng, brightness=0.0, contrast=0.0, saturation=0.0):
    """fb.resnet.torch's ColorJitter: the three blends in a random order, then clip to [0, 255].

    brightness: x * a; contrast: a x + (1 - a) mean(gray(x)); saturation:
    a x + (1 - a) gray(x); each a drawn from [1 - v, 1 + v].
    """
    ops = []
    if brightness:
        ops.append(("brightness", brightness))
    if contrast:
        ops.append(("contrast", contrast))
    if saturation and chw.shape[0] == 3:
        ops.append(("saturation", saturation))
    for i in rng.permutation(len(ops)):
        op, amount = ops[i]
        alpha = np.float32(1.0 + rng.uniform(-amount, amount))
        if op == "brightness":
            chw *= alpha
        elif op == "contrast":
            mean = np.float32(_mean_gray(chw))
            chw *= alpha
            chw += (1 - alpha) * mean
        else:
            gray = _gray(chw)
            gray *= 1 - alpha
            chw *= alpha
            chw += gray
    np.clip(chw, 0, 255, out=chw)
    return chw


def lighting(chw, rng, eigval, eigvec, alphastd=0.1):
    """AlexNet's PCA noise: add eigvec @ (alpha * eigval), alpha ~ N(0, alphastd), to every pixel."""
    eigval = np.asarray(eigval, np.float64)
    eigvec = np.asarray(eigvec, np.float64).reshape(len(eigval), len(eigval))
    if chw.shape[0] != len(eigval):
        raise ValueError(f"lighting has {len(eigval)} eigenvalues for an image of {chw.shape[0]} channels")
    alpha = rng.normal(0.0, alphastd, size=len(eigval))
    shift = eigvec @ (alpha * eigval)
    chw += shift.astype(chw.dtype)[:, None, None]
    return chw


# --------------------------------------------------------------------------
# One resampling per image: the Augmenter composes the drawn resize, crop and
# affine warps into one matrix (and the lens model into one remap), and
# renders only the window Caffe's crop keeps.
# --------------------------------------------------------------------------
def shorter_side_size(height, width, size):
    """(h, w) with the shorter side `size`, aspect kept (rounded), as resize_shorter_side."""
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def resize_inverse(in_h, in_w, out_h, out_w):
    """dst -> src pixel coordinates of cv2.resize (half-pixel centres)."""
    sx, sy = in_w / out_w, in_h / out_h
    return (sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5)


def random_resized_crop_box(h, w, rng, min_area=0.08, max_area=1.0, min_aspect=3 / 4, max_aspect=4 / 3,
                            attempts=10):
    """(y, x, height, width) of an Inception crop: random area fraction and log-uniform aspect ratio."""
    area = h * w
    log_lo, log_hi = math.log(min_aspect), math.log(max_aspect)
    for _ in range(attempts):
        target = area * rng.uniform(min_area, max_area)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    ratio = w / h     # fallback: the central crop with the aspect ratio clamped to the range
    if ratio < min_aspect:
        cw, ch = w, int(round(w / min_aspect))
    elif ratio > max_aspect:
        ch, cw = h, int(round(h * max_aspect))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class GeometricPlan:
    """One image's drawn geometric augmentation.

    size: (H, W) of the augmented image (before Caffe's crop); src_from_out:
    the affine map (a 6-tuple) from augmented-image pixels to source pixels; lens_k: radial
    distortion in the augmented frame (0: none).
    """

    def __init__(self, size, src_from_out, lens_k=0.0, border="reflect"):
        self.size = tuple(int(s) for s in size)
        self.src_from_out = src_from_out
        self.lens_k = lens_k
        self.border = border

    def render(self, image, y0, x0, height, width):
        cv2 = _cv2()
        m = compose(self.src_from_out, translation(x0, y0))
        if not self.lens_k:
            a, b, tx, d, e, ty = m
            if a == 1 and e == 1 and b == 0 and d == 0 and float(tx).is_integer() and float(ty).is_integer():
                ty, tx = int(ty), int(tx)
                if 0 <= ty and ty + height <= image.shape[0] and 0 <= tx and tx + width <= image.shape[1]:
                    return image[ty:ty + height, tx:tx + width]     # nothing to resample
            out = cv2.warpAffine(image, as_matrix(m), (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=_border(self.border), borderValue=0)
            return _keep_channels(out, image)
        h, w = self.size
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        norm = math.hypot(cx, cy) or 1.0
        ys, xs = np.mgrid[y0:y0 + height, x0:x0 + width].astype(np.float64)
        dx, dy = (xs - cx) / norm, (ys - cy) / norm
        factor = 1.0 + self.lens_k * (dx * dx + dy * dy)
        qx, qy = cx + dx * factor * norm, cy + dy * factor * norm
        a, b, c, d, e, f = self.src_from_out
        map_x = (a * qx + b * qy + c).astype(np.float32)
        map_y = (d * qx + e * qy + f).astype(np.float32)
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=_border(self.border), borderValue=0)
        return _keep_channels(out, image)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
def load_yaml(path):
    import yaml
    path = os.fspath(path)
    try:
        with open(path) as handle:
            content = yaml.safe_load(handle)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read augmentation file '{path}': {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"augmentation file '{path}' is not valid YAML: {exc}") from None
    return content or {}


def augmentation_from_dict(config, where="augmentation"):
    """An AugmentationParameter from a dict with its field names (unknown keys are errors)."""
    from google.protobuf import json_format
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a mapping of AugmentationParameter fields, got {type(config).__name__}")
    param = caffe_pb2.AugmentationParameter()
    try:
        json_format.ParseDict(config, param)
    except json_format.ParseError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return param


def load_pca_file(path):
    """eigval (C,) and eigvec (C, C) from a YAML file written by compute_pca_lighting."""
    content = load_yaml(path)
    data = content.get("lighting", content)
    try:
        eigval = np.asarray(data["eigval"], np.float64)
        eigvec = np.asarray(data["eigvec"], np.float64).reshape(len(eigval), len(eigval))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"PCA file '{path}' needs 'eigval' (C values) and 'eigvec' (C x C): {exc}") from None
    return eigval, eigvec


class Augmenter:
    """The configured augmentation pipeline for one phase.

    plan(h, w, rng) draws the geometric part (resize, crop-resize, affine,
    lens) and render(image, plan, y0, x0, h, w) produces just the window that
    Caffe's crop then keeps, in one resampling; photometric(chw, rng) runs on
    the float crop in pixel units.  `flip` says whether the augmentation asks
    for random mirroring (Caffe's own `mirror` is separate).
    """

    def __init__(self, param, phase, crop_size=0, where="transform_param"):
        self.param = param
        self.train = phase == caffe_pb2.TRAIN
        self.crop_size = int(crop_size)
        self.flip = bool(param.mirror)
        p = param
        if p.HasField("scale_jitter") and p.HasField("random_resized_crop"):
            raise ValueError(f"{where}: use either scale_jitter or random_resized_crop, not both")
        if (p.HasField("scale_jitter") or p.HasField("random_resized_crop")) and not self.crop_size:
            raise ValueError(f"{where}: scale_jitter and random_resized_crop need crop_size "
                             "(the batch needs one image size)")
        if p.HasField("scale_jitter"):
            sj = p.scale_jitter
            if not 0 < sj.min_size <= sj.max_size:
                raise ValueError(f"{where}: scale_jitter needs 0 < min_size <= max_size, got "
                                 f"{sj.min_size}, {sj.max_size}")
            if sj.min_size < self.crop_size or (sj.test_size and sj.test_size < self.crop_size):
                raise ValueError(f"{where}: scale_jitter sizes must be at least crop_size {self.crop_size}")
        if p.HasField("random_resized_crop"):
            r = p.random_resized_crop
            if not (0 < r.min_area <= r.max_area <= 1 and 0 < r.min_aspect <= r.max_aspect):
                raise ValueError(f"{where}: random_resized_crop needs 0 < min_area <= max_area <= 1 and "
                                 f"0 < min_aspect <= max_aspect")
        for name in ("rotation", "translation", "shear", "stretch", "lens_distortion"):
            if getattr(p, name) < 0:
                raise ValueError(f"{where}: augmentation {name} must be >= 0, got {getattr(p, name)}")
        if p.stretch >= 1:
            raise ValueError(f"{where}: augmentation stretch must be below 1, got {p.stretch}")
        _border(p.border)
        self.eigval = self.eigvec = None
        if p.HasField("lighting"):
            lt = p.lighting
            if lt.pca_file:
                self.eigval, self.eigvec = load_pca_file(lt.pca_file)
            elif len(lt.eigval):
                n = len(lt.eigval)
                if len(lt.eigvec) != n * n:
                    raise ValueError(f"{where}: lighting has {n} eigval and {len(lt.eigvec)} eigvec "
                                     f"values ({n * n} expected)")
                self.eigval = np.asarray(lt.eigval, np.float64)
                self.eigvec = np.asarray(lt.eigvec, np.float64).reshape(n, n)
            else:
                raise ValueError(f"{where}: lighting needs eigval/eigvec or a pca_file "
                                 "(pycaffe-lite compute_pca_lighting writes one)")
        self.has_affine = any(getattr(p, n) for n in ("rotation", "translation", "shear", "stretch"))
        self.has_photometric = self.train and (p.HasField("color_jitter") or p.HasField("lighting"))
        self.needs_rng = self.train and (
            self.flip or self.has_affine or p.lens_distortion > 0 or self.has_photometric
            or p.HasField("scale_jitter") or p.HasField("random_resized_crop"))

    # ---- geometric: drawn as one plan, rendered as one resampling ----------
    def plan(self, height, width, rng):
        """Draw this image's geometric augmentation: a GeometricPlan for an input of height x width."""
        p = self.param
        out_from_src = None        # pure resize / crop-resize part, as dst -> src
        size = (height, width)
        if p.HasField("scale_jitter"):
            sj = p.scale_jitter
            side = int(rng.integers(sj.min_size, sj.max_size + 1)) if self.train else (sj.test_size or sj.min_size)
            size = shorter_side_size(height, width, side)
            out_from_src = resize_inverse(height, width, *size)
        elif p.HasField("random_resized_crop"):
            r = p.random_resized_crop
            if self.train:
                y, x, ch, cw = random_resized_crop_box(height, width, rng, r.min_area, r.max_area,
                                                       r.min_aspect, r.max_aspect)
                size = (self.crop_size, self.crop_size)
                out_from_src = compose(translation(x, y), resize_inverse(ch, cw, *size))
            else:
                size = shorter_side_size(height, width, r.test_size or int(round(self.crop_size / 0.875)))
                out_from_src = resize_inverse(height, width, *size)
        affine = None
        lens_k = 0.0
        if self.train:
            h, w = size
            if self.has_affine:
                affine = IDENTITY
                if p.stretch:
                    affine = compose(stretch_matrix(rng, h, w, p.stretch), affine)
                if p.shear:
                    affine = compose(shear_matrix(rng, h, w, p.shear), affine)
                if p.rotation:
                    affine = compose(rotation_matrix(rng, h, w, p.rotation), affine)
                if p.translation:
                    affine = compose(translation_matrix(rng, h, w, p.translation), affine)
            if p.lens_distortion:
                lens_k = float(rng.uniform(-p.lens_distortion, p.lens_distortion))
        src_from_out = IDENTITY if out_from_src is None else out_from_src
        if affine is not None:
            src_from_out = compose(src_from_out, invert(affine))
        border = p.border if (affine is not None or lens_k) else "replicate"   # a pure resize clamps, as cv2.resize
        return GeometricPlan(size, src_from_out, lens_k, border)

    def render(self, image, plan, y0, x0, height, width):
        """The window [y0:y0+height, x0:x0+width] of the augmented image, with a single resampling."""
        return plan.render(image, y0, x0, height, width)

    def photometric(self, chw, rng):
        if not self.has_photometric:
            return chw
        p = self.param
        if p.HasField("color_jitter"):
            cj = p.color_jitter
            color_jitter(chw, rng, cj.brightness, cj.contrast, cj.saturation)
        if self.eigval is not None:
            lighting(chw, rng, self.eigval, self.eigvec, p.lighting.alphastd)
        return chw


def augmentation_param(transform_param, where="transform_param"):
    """The AugmentationParameter of a TransformationParameter, with its YAML file merged in; None if unused."""
    has_inline = transform_param.HasField("augmentation")
    if not has_inline and not transform_param.augmentation_file:
        return None
    param = caffe_pb2.AugmentationParameter()
    if has_inline:
        param.CopyFrom(transform_param.augmentation)
    if transform_param.augmentation_file:
        path = transform_param.augmentation_file
        param.MergeFrom(augmentation_from_dict(load_yaml(path), f"augmentation file '{path}'"))
    return param
