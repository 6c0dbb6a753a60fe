"""Detector: windowed detection by classifying crops of images (pycaffe's
caffe.Detector, after R-CNN: Girshick et al., "Rich feature hierarchies for
accurate object detection and semantic segmentation").

    det = caffe.Detector("deploy.prototxt", "weights.caffemodel", raw_scale=255,
                         mean=np.array([104, 117, 123]), channel_swap=(2, 1, 0), context_pad=16)
    dets = det.detect_windows([("image.jpg", [(ymin, xmin, ymax, xmax), ...])])
    # [{"window": ..., "prediction": array, "filename": ...}, ...]
"""
import os

import numpy as np

from . import io as caffe_io
from .classifier import input_transformer
from ..net import TEST, Net


class Detector(Net):
    """A TEST-phase Net classifying windows (ymin, xmin, ymax, xmax) warped to its input size."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None, **net_kwargs):
        super().__init__(model_file, pretrained_file, TEST, **net_kwargs)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify windows of images: images_windows is an iterable of (filename, windows).

        Returns a list of {"window", "prediction", "filename"} dicts in input order.
        """
        images_windows = [(fname, list(windows)) for fname, windows in images_windows]
        window_inputs = []
        for image_fname, windows in images_windows:
            image = caffe_io.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, window))
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2]) + tuple(self.blobs[in_].data.shape[2:]),
                            dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        out = self.forward_all(**{in_: caffe_in})
        predictions = out[self.outputs[0]]
        detections = []
        ix = 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix], "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Detect over Selective Search proposals (needs the selective_search_ijcv_with_python module)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError as exc:
            raise RuntimeError("detect_selective_search needs selective_search_ijcv_with_python "
                               "(https://github.com/sergeyk/selective_search_ijcv_with_python) "
                               f"on the Python path: {exc}") from exc
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of an image, with context padding when configured."""
        window = np.asarray(window)
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if self.context_pad:
            box = window.astype(float).copy()
            crop_size = self.blobs[self.inputs[0]].width  # assumes a square input
            scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
            # Crop a box plus surrounding context.
            half_h = (box[2] - box[0] + 1) / 2.0
            half_w = (box[3] - box[1] + 1) / 2.0
            center = (box[0] + half_h, box[1] + half_w)
            scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
            box = np.round(np.tile(center, 2) + scaled_dims)
            full_h = box[2] - box[0] + 1
            full_w = box[3] - box[1] + 1
            scale_h = crop_size / full_h
            scale_w = crop_size / full_w
            pad_y = int(round(max(0, -box[0]) * scale_h))  # amount out of bounds
            pad_x = int(round(max(0, -box[1]) * scale_w))
            # Clip the box to the image.
            im_h, im_w = im.shape[:2]
            box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
            clip_h = box[2] - box[0] + 1
            clip_w = box[3] - box[1] + 1
            if clip_h <= 0 or clip_w <= 0:
                raise ValueError(f"window {tuple(window)} lies outside the image of shape {im.shape[:2]}")
            crop_h = int(round(clip_h * scale_h))
            crop_w = int(round(clip_w * scale_w))
            if pad_y + crop_h > crop_size:
                crop_h = crop_size - pad_y
            if pad_x + crop_w > crop_size:
                crop_w = crop_size - pad_x
            # The context crop, placed in an input-sized canvas filled with the mean.
            box = box.astype(int)
            context_crop = im[box[0]:box[2], box[1]:box[3]]
            context_crop = caffe_io.resize_image(context_crop, (crop_h, crop_w))
            crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
            crop[pad_y:(pad_y + crop_h), pad_x:(pad_x + crop_w)] = context_crop
        return crop

    def configure_crop(self, context_pad):
        """Crop dimensions (H, W, K) and, with context padding, the mean in raw input space."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = list(np.argsort(tpose))
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if self.context_pad:
            channel_order = self.transformer.channel_swap.get(in_)
            raw_scale = self.transformer.raw_scale.get(in_)
            # Padding context crops needs the mean in unprocessed input space.
            mean = self.transformer.mean.get(in_)
            if mean is not None:
                crop_mean = mean.copy().transpose(inv_tpose).astype(np.float32)
                if channel_order is not None:
                    crop_mean = crop_mean[:, :, np.argsort(channel_order)]
                if raw_scale is not None:
                    crop_mean /= raw_scale
                self.crop_mean = crop_mean
            else:
                self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
