"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling.

For an image of C x H x W values x, Caffe writes (data_transformer.cpp)

    top[c, h, w'] = (x[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale
    w' = crop_w - 1 - w when mirrored, else w

with (h_off, w_off) random at TRAIN and centred ((H - crop) / 2, rounded
down) at TEST, the mirror drawn with probability 1/2 when `mirror` is set,
and `mean` either the mean file's values (aligned with the *uncropped*
image) or one `mean_value` per channel.  The arithmetic is done in the
output dtype in Caffe's order, so float32 results are bit-identical.

Our augmentation (augment.py) wraps around it:

    decode -> geometric augmentation (HWC) -> crop -> to float ->
    colour jitter, lighting -> subtract mean -> scale -> mirror

The geometric part is drawn first (Augmenter.plan) and rendered together
with the crop as one resampling of just the kept window; the mirror is
applied while copying, with the mean crop flipped alike, which equals
Caffe's per-pixel loop exactly.
"""
import logging

import numpy as np

from ..proto import caffe_pb2
from .augment import Augmenter, augmentation_param
from .datum import decode_datum, load_mean_file

log = logging.getLogger(__name__)


def as_chw(image, layout):
    """A CHW view of an HWC/HW ('hwc') or CHW ('chw') image."""
    if layout == "chw":
        return image
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def as_hwc(image, layout):
    """A contiguous HWC array (OpenCV's layout) of an image."""
    if layout == "hwc":
        return image
    return np.ascontiguousarray(image.transpose(1, 2, 0))


class DataTransformer:
    """Turns decoded images into network input, with Caffe's semantics.

        t = DataTransformer(layer_param.transform_param, caffe_pb2.TRAIN)
        image, layout = t.decode(datum)
        out = np.empty(t.infer_shape(image, layout), np.float32)
        t.transform(image, layout, out, rng)
    """

    def __init__(self, param=None, phase=caffe_pb2.TEST, where="transform_param"):
        self.param = param if param is not None else caffe_pb2.TransformationParameter()
        p = self.param
        self.phase = phase
        self.train = phase == caffe_pb2.TRAIN
        self.where = where
        self.crop_size = int(p.crop_size)
        self.scale = float(p.scale)
        if p.force_color and p.force_gray:
            raise ValueError(f"{where}: cannot set both force_color and force_gray")
        if p.mean_file and len(p.mean_value):
            raise ValueError(f"{where}: cannot specify mean_file and mean_value at the same time")
        self.mean = load_mean_file(p.mean_file) if p.mean_file else None
        self.mean_values = np.asarray(p.mean_value, np.float64) if len(p.mean_value) else None
        aug = augmentation_param(p, where)
        self.augmenter = Augmenter(aug, phase, self.crop_size, where) if aug is not None else None
        self.mirror = bool(p.mirror) or bool(self.augmenter and self.augmenter.flip and self.train)
        self._geometric = self.augmenter is not None and (
            self.train and (self.augmenter.has_affine or aug.lens_distortion > 0)
            or aug.HasField("scale_jitter") or aug.HasField("random_resized_crop"))
        # Caffe's DataTransformer::InitRand: random draws only for mirror or a TRAIN crop.
        self.needs_rng = self.mirror or (self.train and self.crop_size > 0) or bool(
            self.augmenter and self.augmenter.needs_rng)
        self._warned_force = False

    @property
    def is_plain(self):
        """True when the transform is Caffe's alone (no augmentation): batches can be vectorized."""
        return self.augmenter is None

    # ---- decoding -------------------------------------------------------
    def decode(self, datum, source=None, key=None):
        """(image, layout) of a Datum, decoded with force_color / force_gray."""
        p = self.param
        if (p.force_color or p.force_gray) and not datum.encoded and not self._warned_force:
            log.warning("force_color and force_gray only for encoded datum")
            self._warned_force = True
        return decode_datum(datum, p.force_color, p.force_gray, source, key)

    # ---- shapes ---------------------------------------------------------
    def infer_shape(self, image, layout):
        """(C, H, W) of the transformed image (Caffe's InferBlobShape)."""
        chw = as_chw(image, layout)
        c, h, w = chw.shape
        if self.crop_size:
            if not self._geometric and (h < self.crop_size or w < self.crop_size):
                raise ValueError(f"{self.where}: crop_size {self.crop_size} is larger than the "
                                 f"image ({h}x{w})")
            return c, self.crop_size, self.crop_size
        return c, h, w

    # ---- the transform --------------------------------------------------
    def transform(self, image, layout, out, rng=None):
        """Write the transformed image into `out` (C x H x W, any float dtype); returns out."""
        plan = None
        if self._geometric:
            image = as_hwc(image, layout)
            layout = "hwc"
            plan = self.augmenter.plan(image.shape[0], image.shape[1], rng)
            c = 1 if image.ndim == 2 else image.shape[2]
            h, w = plan.size
        else:
            c, h, w = as_chw(image, layout).shape
        oc, oh, ow = out.shape
        if c != oc:
            raise ValueError(f"image has {c} channels, the batch {oc} (set force_color / force_gray "
                             "or is_color so that every image has the same)")
        do_mirror = self.mirror and rng.integers(2) == 1
        if self.crop_size:
            if h < self.crop_size or w < self.crop_size:
                raise ValueError(f"crop_size {self.crop_size} is larger than the image ({h}x{w})")
            if self.train:
                h_off = int(rng.integers(h - self.crop_size + 1))
                w_off = int(rng.integers(w - self.crop_size + 1))
            else:
                h_off = (h - self.crop_size) // 2
                w_off = (w - self.crop_size) // 2
        else:
            if (h, w) != (oh, ow):
                raise ValueError(f"image is {h}x{w} but the batch is {oh}x{ow}; images of one batch "
                                 "need one size (resize them or set crop_size)")
            h_off = w_off = 0
        if plan is not None:
            src = as_chw(self.augmenter.render(image, plan, h_off, w_off, oh, ow), "hwc")
        else:
            src = as_chw(image, layout)[:, h_off:h_off + oh, w_off:w_off + ow]
        if do_mirror:
            src = src[:, :, ::-1]
        out[...] = src
        if self.augmenter is not None and self.augmenter.has_photometric:
            self.augmenter.photometric(out, rng)
        self._subtract_mean(out, (c, h, w), h_off, w_off, do_mirror)
        if self.scale != 1:
            out *= out.dtype.type(self.scale)
        return out

    def _subtract_mean(self, out, full_shape, h_off, w_off, do_mirror):
        c, h, w = full_shape
        oh, ow = out.shape[1:]
        if self.mean is not None:
            if self.mean.shape != full_shape:
                raise ValueError(f"{self.where}: mean file is {'x'.join(map(str, self.mean.shape))} but the "
                                 f"image is {c}x{h}x{w}; they must match (use mean_value with resizing "
                                 "augmentation)")
            mean = self.mean[:, h_off:h_off + oh, w_off:w_off + ow]
            if do_mirror:
                mean = mean[:, :, ::-1]
            out -= mean.astype(out.dtype, copy=False)
        elif self.mean_values is not None:
            out -= self.channel_means(c).astype(out.dtype)[:, None, None]

    def channel_means(self, channels):
        n = len(self.mean_values)
        if n == 1:
            return np.repeat(self.mean_values, channels)
        if n != channels:
            raise ValueError(f"{self.where}: specify either 1 mean_value or as many as channels: {channels} "
                             f"(got {n})")
        return self.mean_values

    def transform_stack(self, stack, out):
        """Vectorized transform of N same-size raw CHW images (N, C, H, W) when nothing is random."""
        if self.needs_rng or not self.is_plain:
            raise ValueError("transform_stack is only for deterministic plain transforms")
        n, c, h, w = stack.shape
        oh, ow = out.shape[2:]
        if self.crop_size:
            h_off, w_off = (h - self.crop_size) // 2, (w - self.crop_size) // 2
        else:
            if (h, w) != (oh, ow):
                raise ValueError(f"image is {h}x{w} but the batch is {oh}x{ow}")
            h_off = w_off = 0
        if c != out.shape[1]:
            raise ValueError(f"image has {c} channels, the batch {out.shape[1]}")
        out[...] = stack[:, :, h_off:h_off + oh, w_off:w_off + ow]
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise ValueError(f"{self.where}: mean file is {'x'.join(map(str, self.mean.shape))} but the "
                                 f"image is {c}x{h}x{w}; they must match")
            out -= self.mean[:, h_off:h_off + oh, w_off:w_off + ow].astype(out.dtype, copy=False)
        elif self.mean_values is not None:
            out -= self.channel_means(c).astype(out.dtype)[:, None, None]
        if self.scale != 1:
            out *= out.dtype.type(self.scale)
        return out

