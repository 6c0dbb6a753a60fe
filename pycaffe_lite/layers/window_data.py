"""WindowData: R-CNN's window data layer (BVLC Caffe's WindowDataLayer, kept for archival nets).

Each batch samples windows (boxes) of images listed in a window file,
a fixed share of them foreground, crops each box out of its image, warps it
to crop_size x crop_size with OpenCV and labels it with the box's class
(foreground) or 0 (background).

    layer {
      name: "data" type: "WindowData" top: "data" top: "label"
      include { phase: TRAIN }
      transform_param { mirror: true crop_size: 227 mean_file: "data/ilsvrc12/imagenet_mean.binaryproto" }
      window_data_param {
        source: "window_file_2007_trainval.txt" batch_size: 128
        fg_threshold: 0.5 bg_threshold: 0.5 fg_fraction: 0.25
        context_pad: 16 crop_mode: "warp"
      }
    }

The window file repeats, for every image (whitespace separates the values;
Caffe reads them as a stream):

    # image_index              0, 1, 2, ... in order
    img_path                   appended to window_data_param.root_folder
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      num_windows lines; corners inclusive, 0-based

A window whose overlap is >= fg_threshold is foreground and keeps its class
(which must be > 0); one whose overlap is < bg_threshold is background and
gets label 0; the others are dropped.  A batch holds
int(batch_size * fg_fraction) foreground windows after the background ones,
each drawn uniformly (with replacement) from its set.

Warping (Caffe's load_batch): with context_pad > 0 or crop_mode "square"
the box is first grown about its centre (to a square of its longer side for
"square") by crop_size / (crop_size - 2 * context_pad), so that after warping
exactly context_pad pixels of context surround it; the part outside the image
is cut off and left as zeros in the output, with the scale the whole grown box
would have had.  Pixels go out as (pixel - mean) * scale, the mean taken from
mean_file (its centre crop_size square, at the window's place) or mean_value.
Mirroring flips the warped window (and its zero padding) at random.

Parameters, where Caffe reads them:
  window_data_param: source, batch_size, fg_threshold, bg_threshold,
    fg_fraction, context_pad, crop_mode, cache_images, root_folder, scale.
  transform_param: crop_size (required), mirror, mean_file, mean_value.
As in Caffe 1.0, `scale` is read only from window_data_param:
transform_param.scale is ignored (with a warning), so a V1 net, whose
window_data_param.scale the upgrade moves to transform_param, is read with
scale 1, as Caffe reads it.  The deprecated window_data_param.crop_size /
mirror / mean_file stand in when transform_param leaves the field unset.
Giving one of those in both places with different values is an error.

Differences from Caffe, all where Caffe crashes or silently misreads: a
malformed window file, an image_index out of order, a foreground window with
class <= 0, an empty foreground or background set that a batch needs, a box
outside its image, a mean file smaller than crop_size, or an unreadable
image raise errors that name the window file and its line (Caffe logs and
returns a half-filled batch, or aborts).  Images with 1 channel in the window
file are read as gray (Caffe always reads colour).

Random draws come from one generator per layer, seeded by transform_param.seed
or by one draw from pycaffe_lite.backend.rng() at set-up, so
pycaffe_lite.set_random_seed makes the batches repeat.  Batches are built on a
background thread (the prefetcher that Data and ImageData use).  The window file's reader and the
sampler live in pycaffe_lite.data.windows.
"""
import logging
import weakref

import numpy as np

from ..data.datum import DataError, load_mean_file
from ..data.prefetch import Prefetcher, stager_for
from ..data.windows import WindowFile, WindowSampler
from ..layer import register
from .data import BasePrefetchingDataLayer, layer_seed

log = logging.getLogger(__name__)


@register("WindowData", v1="WINDOW_DATA")
class WindowDataLayer(BasePrefetchingDataLayer):
    """R-CNN's window data layer: tops data (batch, C, crop, crop) and label (batch,)."""
    num_bottom = (0, 0)
    num_top = (2, 2)

    def batch_size(self):
        return self.layer_param.window_data_param.batch_size

    def _transform_field(self, name):
        """transform_param.<name> when set, else the deprecated window_data_param.<name>."""
        tp, wp = self.layer_param.transform_param, self.layer_param.window_data_param
        if tp.HasField(name) and wp.HasField(name) and getattr(tp, name) != getattr(wp, name):
            raise ValueError(self.error(f"sets {name} to {getattr(tp, name)!r} in transform_param and to "
                                        f"{getattr(wp, name)!r} in window_data_param; set it once, in transform_param"))
        return getattr(tp, name) if tp.HasField(name) or not wp.HasField(name) else getattr(wp, name)

    def setup(self, bottom, top):
        wp = self.layer_param.window_data_param
        tp = self.layer_param.transform_param
        self.output_labels = True
        if not wp.source:
            raise ValueError(self.error("needs window_data_param.source (the window file)"))
        if not wp.batch_size:
            raise ValueError(self.error("needs window_data_param.batch_size > 0"))
        crop_size = self._transform_field("crop_size")
        if crop_size <= 0:
            raise ValueError(self.error("needs transform_param.crop_size > 0 (the size windows are warped to)"))
        if 2 * wp.context_pad >= crop_size:
            raise ValueError(self.error(f"needs 2 * context_pad < crop_size, got context_pad {wp.context_pad} "
                                        f"and crop_size {crop_size}"))
        if wp.crop_mode not in ("warp", "square"):
            raise ValueError(self.error(f"crop_mode must be \"warp\" or \"square\", got \"{wp.crop_mode}\""))
        if not 0 <= wp.fg_fraction <= 1:
            raise ValueError(self.error(f"fg_fraction must lie in [0, 1], got {wp.fg_fraction:g}"))
        scale = self._scale()
        mirror = self._transform_field("mirror")
        mean_file = self._transform_field("mean_file")

        try:
            windows = WindowFile(wp.source, wp.fg_threshold, wp.bg_threshold, wp.root_folder)
        except DataError as exc:
            raise DataError(self.error(str(exc)), exc.source, exc.key) from None
        log.info("Window data layer: foreground (object) overlap threshold: %g, background (non-object) "
                 "overlap threshold: %g, foreground sampling fraction: %g, cache_images: %s, root_folder: %s",
                 wp.fg_threshold, wp.bg_threshold, wp.fg_fraction, wp.cache_images, wp.root_folder)
        log.info("Number of images: %d", len(windows.images))
        for label, count in sorted(windows.label_histogram().items()):
            log.info("class %d has %d samples", label, count)
        log.info("Amount of context padding: %d", wp.context_pad)
        log.info("Crop mode: %s", wp.crop_mode)
        num_fg = int(np.float32(wp.batch_size) * np.float32(wp.fg_fraction))
        for what, table, needed in (("foreground", windows.fg, num_fg), ("background", windows.bg,
                                                                         wp.batch_size - num_fg)):
            if needed and not len(table):
                raise ValueError(self.error(f"needs {what} windows ({needed} per batch) but window file "
                                            f"'{wp.source}' has none (fg_threshold {wp.fg_threshold:g}, "
                                            f"bg_threshold {wp.bg_threshold:g})"))
        channels = windows.images[0][1]

        mean = mean_values = None
        if mean_file and len(tp.mean_value):
            raise ValueError(self.error("cannot specify mean_file and mean_value at the same time"))
        if mean_file:
            log.info("Loading mean file from: %s", mean_file)
            try:
                mean = load_mean_file(mean_file)
            except (OSError, ValueError) as exc:
                raise ValueError(self.error(str(exc))) from None
            # Caffe centres the crop_size square with the offset taken from the mean's width, for rows too.
            reach = (mean.shape[2] - crop_size) // 2 + crop_size
            if mean.shape[0] != channels or mean.shape[2] < crop_size or mean.shape[1] < reach:
                raise ValueError(self.error(f"mean file '{mean_file}' has shape {mean.shape}; it needs {channels} "
                                            f"channels and a centred {crop_size}x{crop_size} square (rows "
                                            f"{reach - crop_size} to {reach - 1}, offset from its width)"))
        elif len(tp.mean_value):
            mean_values = list(tp.mean_value)
            if len(mean_values) not in (1, channels):
                raise ValueError(self.error(f"Specify either 1 mean_value or as many as channels: {channels} "
                                            f"(got {len(mean_values)})"))
            mean_values = mean_values * channels if len(mean_values) == 1 else mean_values

        self.seed = layer_seed(self.layer_param, needed=True)
        stager = stager_for(top[0].data)
        self.windows = windows
        self._loader = WindowSampler(windows, wp.batch_size, crop_size, fg_fraction=wp.fg_fraction,
                                     context_pad=wp.context_pad, square=wp.crop_mode == "square", mirror=mirror,
                                     scale=scale, mean=mean, mean_values=mean_values,
                                     cache_images=wp.cache_images, seed=self.seed, dtype=top[0].dtype,
                                     alloc=stager.empty, name=f"layer '{self.name}' (type {self.type})")
        self.batch_shape = (wp.batch_size, channels, crop_size, crop_size)
        log.info("output data size: %s", ",".join(str(s) for s in self.batch_shape))
        self._shaped = False
        self._prefetcher = Prefetcher(self._loader.next_batch, depth=self.layer_param.data_param.prefetch,
                                      name=self.name, stager=stager, cleanup=self._loader.close)
        self._finalizer = weakref.finalize(self, self._prefetcher.close)
        self._prefetcher.start()

    def _scale(self):
        """window_data_param.scale: Caffe's load_batch never reads transform_param.scale."""
        tp, wp = self.layer_param.transform_param, self.layer_param.window_data_param
        if tp.HasField("scale") and tp.scale != wp.scale:
            log.warning(self.error(f"ignores transform_param.scale {tp.scale:g}, as Caffe does: it reads "
                                   f"window_data_param.scale ({wp.scale:g})"))
        return wp.scale


__all__ = ["WindowDataLayer"]
