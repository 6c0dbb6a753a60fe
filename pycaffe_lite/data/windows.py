"""R-CNN's window files and the sampler of the WindowData layer (layers/window_data.py): the window
file read as BVLC Caffe's WindowDataLayer reads it, each batch's windows drawn, cropped and warped.
The format, the sampling and the warping are described in layers/window_data.py."""
import math
import os

import numpy as np

from .datum import DataError

# Columns of the integer window table.
IMAGE, LABEL, X1, Y1, X2, Y2, LINE = range(7)


def _cv2():
    import cv2  # imported lazily, as the other data layers do
    return cv2


def c_round(x):
    """C's round(): halves away from zero (Python's round() goes to even)."""
    x = float(x)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


# --------------------------------------------------------------------------
# The window file
# --------------------------------------------------------------------------
class WindowFile:
    """A parsed window file.

    images: [(path, channels, height, width, line)]
    fg, bg: int64 arrays (n, 7) of IMAGE, LABEL, X1, Y1, X2, Y2, LINE (background labels are 0)
    fg_overlap, bg_overlap: float32 overlaps (background ones 0, as Caffe forces them)
    """

    def __init__(self, path, fg_threshold=0.5, bg_threshold=0.5, root_folder=""):
        self.path = os.fspath(path)
        self.fg_threshold = np.float32(fg_threshold)
        self.bg_threshold = np.float32(bg_threshold)
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as handle:
                self._lines = handle.read().splitlines()
        except OSError as exc:
            raise DataError(f"Failed to open window file '{self.path}': {exc.strerror}", self.path) from None
        self._line = 0          # lines consumed
        self._tokens = []
        self._pos = 0
        self.images = []
        fg, bg = [], []
        try:
            self._parse(root_folder, fg, bg)
        finally:
            del self._lines, self._tokens
        self.fg, self.fg_overlap = self._table(fg)
        self.bg, self.bg_overlap = self._table(bg)
        self.bg_overlap[:] = 0

    # ---- token stream (Caffe reads with >>, so line breaks are just whitespace) ----
    def error(self, line, message):
        return DataError(f"window file '{self.path}', line {line}: {message}", self.path, line)

    def _next(self, what):
        while self._pos >= len(self._tokens):
            if self._line >= len(self._lines):
                raise self.error(self._line, f"ends where {what} was expected")
            self._tokens = self._lines[self._line].split()
            self._line += 1
            self._pos = 0
        token = self._tokens[self._pos]
        self._pos += 1
        return token, self._line

    def _at_end(self):
        while self._pos >= len(self._tokens):
            if self._line >= len(self._lines):
                return True
            self._tokens = self._lines[self._line].split()
            self._line += 1
            self._pos = 0
        return False

    def _int(self, what, minimum=None):
        token, line = self._next(what)
        try:
            value = int(token)
        except ValueError:
            raise self.error(line, f"{what} must be an integer, got '{token}'") from None
        if minimum is not None and value < minimum:
            raise self.error(line, f"{what} must be >= {minimum}, got {value}")
        return value, line

    def _float(self, what):
        token, line = self._next(what)
        try:
            return float(token), line
        except ValueError:
            raise self.error(line, f"{what} must be a number, got '{token}'") from None

    # ---- records ---------------------------------------------------------
    def _parse(self, root_folder, fg, bg):
        if self._at_end():
            raise DataError(f"window file '{self.path}' is empty", self.path)
        while not self._at_end():
            hashtag, line = self._next("'#'")
            if hashtag != "#":
                raise self.error(line, f"expected '# image_index' to start image {len(self.images)}, got '{hashtag}'")
            index, line = self._int("image_index")
            if index != len(self.images):
                raise self.error(line, f"image_index {index} out of order: images must be numbered 0, 1, 2, ... "
                                       f"and this is image {len(self.images)}")
            image_path, path_line = self._next("the image path")
            channels, cline = self._int("channels", 1)
            if channels not in (1, 3):
                raise self.error(cline, f"channels must be 1 or 3, got {channels}")
            height, _ = self._int("height", 1)
            width, _ = self._int("width", 1)
            self.images.append((root_folder + image_path, channels, height, width, path_line))
            num_windows, _ = self._int("num_windows", 0)
            self._windows(index, num_windows, fg, bg)
        channels = {c for _, c, _, _, _ in self.images}
        if len(channels) > 1:
            raise DataError(f"window file '{self.path}' mixes images of {sorted(channels)} channels; "
                            "one batch needs one channel count", self.path)

    def _windows(self, index, count, fg, bg):
        # Fast path: the usual file has one window per line, six values each.
        if count and self._pos >= len(self._tokens) and self._line + count <= len(self._lines):
            rows = [text.split() for text in self._lines[self._line:self._line + count]]
            if all(len(row) == 6 for row in rows):
                table = np.array(rows)
                try:
                    ints = table[:, [0, 2, 3, 4, 5]].astype(np.int64)
                    overlaps = table[:, 1].astype(np.float32)
                except ValueError:
                    pass    # the slow path names the bad line
                else:
                    lines = np.arange(self._line + 1, self._line + count + 1)
                    for k in range(count):
                        self._add(index, ints[k, 0], overlaps[k], ints[k, 1:], int(lines[k]), fg, bg)
                    self._line += count
                    return
        for _ in range(count):
            label, line = self._int("class_index")
            overlap, _ = self._float("overlap")
            box = [self._int(name)[0] for name in ("x1", "y1", "x2", "y2")]
            self._add(index, label, np.float32(overlap), box, line, fg, bg)

    def _add(self, index, label, overlap, box, line, fg, bg):
        x1, y1, x2, y2 = (int(v) for v in box)
        if x2 < x1 or y2 < y1:
            raise self.error(line, f"window ({x1}, {y1}, {x2}, {y2}) needs x1 <= x2 and y1 <= y2")
        if not np.isfinite(overlap):
            raise self.error(line, f"overlap must be finite, got {overlap}")
        if overlap >= self.fg_threshold:
            if label <= 0:
                raise self.error(line, f"foreground window (overlap {overlap:g} >= fg_threshold "
                                       f"{self.fg_threshold:g}) needs a class_index > 0, got {label}")
            fg.append((index, int(label), x1, y1, x2, y2, line, float(overlap)))
        elif overlap < self.bg_threshold:
            bg.append((index, 0, x1, y1, x2, y2, line, 0.0))

    @staticmethod
    def _table(rows):
        if not rows:
            return np.zeros((0, 7), np.int64), np.zeros(0, np.float32)
        return (np.array([r[:7] for r in rows], np.int64), np.array([r[7] for r in rows], np.float32))

    def label_histogram(self):
        labels, counts = np.unique(self.fg[:, LABEL], return_counts=True)
        hist = {0: len(self.bg)}
        hist.update({int(k): int(v) for k, v in zip(labels, counts)})
        return hist


# --------------------------------------------------------------------------
# Cropping and warping one window
# --------------------------------------------------------------------------
def warp_window(image, box, crop_size, context_pad=0, square=False, mirror=False, dtype=np.float32):
    """Caffe's crop-and-warp of one window: returns (warped HWC uint8 image, pad_h, pad_w).

    `box` is (x1, y1, x2, y2), inclusive.  The warped image goes at rows
    pad_h.. and columns pad_w.. of a crop_size square (the rest stays zero);
    it is already mirrored when `mirror`.  Arithmetic runs in `dtype`, the
    net's precision, as Caffe's runs in Dtype.  Raises ValueError when the
    window does not overlap the image.
    """
    cv2 = _cv2()
    D = np.dtype(dtype).type
    rows, cols = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    out_w = out_h = crop_size
    pad_w = pad_h = 0
    if context_pad > 0 or square:
        context_scale = D(crop_size) / D(crop_size - 2 * context_pad)
        half_height = D((y2 - y1 + 1) / 2.0)
        half_width = D((x2 - x1 + 1) / 2.0)
        center_x = D(x1) + half_width
        center_y = D(y1) + half_height
        if square:
            half_width = half_height = max(half_height, half_width)
        x1 = c_round(center_x - half_width * context_scale)
        x2 = c_round(center_x + half_width * context_scale)
        y1 = c_round(center_y - half_height * context_scale)
        y2 = c_round(center_y + half_height * context_scale)
        # The grown box may leave the image: clip it, and remember how much was cut off.
        unclipped_height = y2 - y1 + 1
        unclipped_width = x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        if x1 > x2 or y1 > y2:
            raise ValueError(f"the window grown by its context lies outside the {cols}x{rows} image")
        scale_x = D(crop_size) / D(unclipped_width)
        scale_y = D(crop_size) / D(unclipped_height)
        out_w = c_round(D(x2 - x1 + 1) * scale_x)
        out_h = c_round(D(y2 - y1 + 1) * scale_y)
        pad_x1, pad_x2 = c_round(D(pad_x1) * scale_x), c_round(D(pad_x2) * scale_x)
        pad_y1 = c_round(D(pad_y1) * scale_y)
        pad_h = pad_y1
        pad_w = pad_x2 if mirror else pad_x1      # mirrored, the padding changes sides too
        # Rounding may push the warped region plus its padding past the crop.
        out_h = min(out_h, crop_size - pad_h)
        out_w = min(out_w, crop_size - pad_w)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"the window keeps no pixels after clipping to the {cols}x{rows} image")
    elif x1 < 0 or y1 < 0 or x2 >= cols or y2 >= rows:
        raise ValueError(f"window ({x1}, {y1}, {x2}, {y2}) is not inside the {cols}x{rows} image "
                         "(without context_pad the box must lie within it)")
    region = image[y1:y2 + 1, x1:x2 + 1]
    warped = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if mirror:
        warped = cv2.flip(warped, 1)
    if warped.ndim == 2:
        warped = warped[:, :, None]
    return warped, pad_h, pad_w


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------
class WindowSampler:
    """Builds WindowData batches (runs on the prefetch thread)."""

    def __init__(self, windows, batch_size, crop_size, *, fg_fraction=0.25, context_pad=0, square=False,
                 mirror=False, scale=1.0, mean=None, mean_values=None, cache_images=False, seed=0,
                 dtype=np.float32, alloc=None, name="data"):
        self.windows = windows
        self.batch_size = int(batch_size)
        self.crop_size = int(crop_size)
        self.context_pad = int(context_pad)
        self.square = square
        self.mirror = mirror
        self.dtype = np.dtype(dtype)
        self.scale = self.dtype.type(scale)
        self.name = name
        self.channels = windows.images[0][1]
        self.num_fg = int(np.float32(self.batch_size) * np.float32(fg_fraction))
        self.rng = np.random.default_rng(seed)
        self.alloc = alloc or np.empty
        # The mean as one (C, crop, crop) array: the mean file's centre square, or the per-channel values.
        self.mean = None
        if mean is not None:
            off = (mean.shape[2] - self.crop_size) // 2     # Caffe takes both offsets from the width
            self.mean = np.ascontiguousarray(mean[:, off:off + self.crop_size, off:off + self.crop_size],
                                             dtype=self.dtype)
        elif mean_values is not None:
            self.mean = np.asarray(mean_values, self.dtype).reshape(-1, 1, 1)
        self.cache = {}
        if cache_images:
            for index, (path, _, _, _, line) in enumerate(windows.images):
                self.cache[index] = self._read_bytes(path, line)

    def _read_bytes(self, path, line):
        try:
            with open(path, "rb") as handle:
                return np.frombuffer(handle.read(), np.uint8)
        except OSError as exc:
            raise DataError(f"{self.name}: could not open or find image '{path}' (window file "
                            f"'{self.windows.path}', line {line}): {exc.strerror}", self.windows.path, line) from None

    def image(self, index):
        cv2 = _cv2()
        path, channels, _, _, line = self.windows.images[index]
        flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
        if index in self.cache:
            image = cv2.imdecode(self.cache[index], flag)
        else:
            image = cv2.imread(path, flag)
        if image is None:
            raise DataError(f"{self.name}: could not open or decode image '{path}' (window file "
                            f"'{self.windows.path}', line {line})", self.windows.path, line)
        return image

    def draw(self):
        """The windows of the next batch and their mirror flags: background first, then foreground."""
        picks, flips = [], []
        for table, count in ((self.windows.bg, self.batch_size - self.num_fg), (self.windows.fg, self.num_fg)):
            for _ in range(count):
                picks.append(table[self.rng.integers(len(table))])
                flips.append(bool(self.mirror and self.rng.integers(2)))
        return picks, flips

    def next_batch(self):
        picks, flips = self.draw()
        crop = self.crop_size
        data = self.alloc((self.batch_size, self.channels, crop, crop), self.dtype)
        label = self.alloc((self.batch_size,), self.dtype)
        data[...] = 0
        images = {}      # windows of one image share its decode within a batch
        for item, (window, flip) in enumerate(zip(picks, flips)):
            index = int(window[IMAGE])
            if index not in images:
                images[index] = self.image(index)
            try:
                warped, pad_h, pad_w = warp_window(images[index], window[X1:Y2 + 1], crop, self.context_pad,
                                                   self.square, flip, self.dtype)
            except ValueError as exc:
                path = self.windows.images[index][0]
                raise DataError(f"{self.name}: window file '{self.windows.path}', line {int(window[LINE])} "
                                f"(image '{path}'): {exc}", self.windows.path, int(window[LINE])) from None
            h, w = warped.shape[:2]
            region = data[item, :, pad_h:pad_h + h, pad_w:pad_w + w]
            region[...] = warped.transpose(2, 0, 1)
            if self.mean is not None:
                mean = self.mean if self.mean.shape[1] == 1 else self.mean[:, pad_h:pad_h + h, pad_w:pad_w + w]
                region -= mean
            if self.scale != 1:
                region *= self.scale
            label[item] = window[LABEL]
        return data, label

    def close(self):
        self.cache.clear()


__all__ = ["WindowFile", "WindowSampler", "warp_window", "c_round"]
