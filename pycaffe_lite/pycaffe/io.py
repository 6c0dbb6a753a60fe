"""pycaffe's caffe.io: proto <-> array conversions, the input Transformer, image I/O.

    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))      # H x W x K -> K x H x W
    transformer.set_channel_swap("data", (2, 1, 0))   # RGB -> BGR
    transformer.set_raw_scale("data", 255)            # [0, 1] -> [0, 255]
    transformer.set_mean("data", np.array([104, 117, 123]))
    net.blobs["data"].data[0] = transformer.preprocess("data", caffe.io.load_image("cat.jpg"))

Images are read and resized with OpenCV (pycaffe used scikit-image); as in
pycaffe, `load_image` gives RGB (not OpenCV's BGR) float32 in [0, 1].
"""
import numpy as np

from ..proto import caffe_pb2
from ..proto.blobs import blob_proto_to_array


# ---------------------------------------------------------------------------
# proto / datum / ndarray conversion
# ---------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff) as a float64 array of the shape it declares, as pycaffe's.

    Legacy protos (num/channels/height/width) give 4-d arrays, new ones their
    `shape`; NVCaffe's raw_data (fp16 files) is read too (proto.blobs decides).
    """
    return blob_proto_to_array(blob, want_diff=return_diff).astype(np.float64)


def array_to_blobproto(arr, diff=None):
    """A BlobProto (new-style shape, float data) holding arr (and diff, same shape)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float32).ravel())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str  # pycaffe's older spelling


def blobprotovector_str_to_arraylist(payload):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(payload)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a (C, H, W) array: uint8 goes to `data` bytes, others to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"Incorrect array shape: array_to_datum needs (channels, height, width), got {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The (C, H, W) array of a Datum (the label is datum.label).

    Raw byte data gives uint8, float_data gives float64, as in pycaffe.  An
    encoded Datum (JPEG/PNG bytes, convert_imageset --encoded) is decoded with
    OpenCV as Caffe's data layer does: colour images in BGR order.
    """
    if datum.encoded:
        import cv2
        image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError("cannot decode the Datum's encoded image")
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    count = int(np.prod(shape, dtype=np.int64))
    if len(datum.data):
        if len(datum.data) != count:
            raise ValueError(f"Datum holds {len(datum.data)} bytes for shape {shape}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    if len(datum.float_data) != count:
        raise ValueError(f"Datum holds {len(datum.float_data)} floats for shape {shape}")
    return np.array(datum.float_data).astype(float).reshape(shape)


# ---------------------------------------------------------------------------
# Pre-processing
# ---------------------------------------------------------------------------
class Transformer:
    """Transform input for feeding into a Net (pycaffe's caffe.io.Transformer).

    inputs: {input blob name: blob shape}, e.g. {"data": net.blobs["data"].data.shape}.

    preprocess applies, in order: resize to the blob's H x W, transpose, channel
    swap, raw scale, mean subtraction, input scale.  deprocess undoes them in
    reverse (but not the resize).
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise ValueError(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """Format one (H' x W' x K) image for Caffe: returns (K x H x W) float32."""
        self.__check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=True)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Invert preprocess (all but the resize): (K x H x W) -> (H x W x K), in the input's dtype
        (pycaffe works on data.copy().squeeze())."""
        self.__check_input(in_)
        decaf_in = np.array(data).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Order of the input's axes to take, e.g. (2, 0, 1) for H x W x K -> K x H x W."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("Transpose order needs to have the same number of dimensions as the input "
                             f"(got {tuple(order)} for input shape {self.inputs[in_]})")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order to take, e.g. (2, 1, 0) for RGB -> BGR (applied after the transpose)."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("Channel swap needs to have the same number of dimensions as the input "
                             f"channels (got {tuple(order)} for {self.inputs[in_][1]} channels)")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Scale applied before mean subtraction, e.g. 255 for models trained on [0, 255]."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: (K,) per channel, or (K, H, W) / (H, W) elementwise."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError(f"Mean channels incompatible with input: mean has {ms[0]}, "
                                 f"the input {self.inputs[in_][1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError(f"Mean shape invalid: {mean.shape}")
            if ms != self.inputs[in_][1:]:
                raise ValueError(f"Mean shape incompatible with input shape: mean {mean.shape}, "
                                 f"input {self.inputs[in_][1:]}")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Scale applied last, after mean subtraction (raw_scale comes before it)."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


# ---------------------------------------------------------------------------
# Image IO
# ---------------------------------------------------------------------------
def load_image(filename, color=True):
    """Load an image as float32 in [0, 1]: (H x W x 3) RGB, or (H x W x 1) when color=False.

    Grayscale files are tiled to three channels when color=True; an alpha
    channel is dropped; colour files become luminance when color=False
    (0.2125 R + 0.7154 G + 0.0721 B, as scikit-image's rgb2gray in pycaffe).
    """
    import cv2
    raw = cv2.imread(str(filename), cv2.IMREAD_UNCHANGED)
    if raw is None:
        import os
        reason = "no such file" if not os.path.exists(filename) else "OpenCV cannot decode it"
        raise FileNotFoundError(f"cannot load image {filename}: {reason}")
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    else:
        img = raw.astype(np.float32)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if img.shape[2] == 3:
            img = img[:, :, ::-1]  # OpenCV's BGR -> RGB
        if not color and img.shape[2] == 3:
            img = img @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return np.ascontiguousarray(img, dtype=np.float32)


_INTERPOLATION = {0: "INTER_NEAREST", 1: "INTER_LINEAR", 2: "INTER_CUBIC", 3: "INTER_CUBIC"}


def resize_image(im, new_dims, interp_order=1):
    """Resize an (H x W x K) image to new_dims = (height, width); float32 result.

    interp_order: 0 nearest, 1 bilinear (default), 2 or 3 bicubic.  pycaffe
    resizes with scikit-image (mode='constant': zeros outside the image, and
    in recent versions a blur before shrinking); this uses OpenCV, which
    repeats the edge pixels and does not blur.  Enlarging agrees inside the
    image and differs on its border; shrinking differs more (a Classifier
    whose image_dims differ from its images sees slightly different crops).
    """
    im = np.asarray(im)
    new_h, new_w = (int(d) for d in new_dims[:2])
    if im.ndim != 3:
        raise ValueError(f"resize_image needs an (H x W x K) image, got shape {im.shape}")
    if im.shape[0] == new_h and im.shape[1] == new_w:
        return im.astype(np.float32)
    if im.size and im.min() == im.max():
        # A constant image stays constant (and no interpolation is needed).
        return np.full((new_h, new_w, im.shape[-1]), im.flat[0], dtype=np.float32)
    import cv2
    flag = getattr(cv2, _INTERPOLATION.get(interp_order, "INTER_LINEAR"))
    src = im.astype(np.float32)
    chunks = []
    for start in range(0, src.shape[2], 4):   # cv2.resize takes up to 4 channels per call reliably
        part = np.ascontiguousarray(src[:, :, start:start + 4])
        out = cv2.resize(part, (new_w, new_h), interpolation=flag)
        chunks.append(out.reshape(new_h, new_w, -1))
    return np.concatenate(chunks, axis=2).astype(np.float32)


def oversample(images, crop_dims):
    """The four corner crops, the center crop, and their mirror images of each image.

    images: iterable of (H x W x K) arrays (same shape); crop_dims: (height, width).
    Returns (10*N x h x w x K) float32, grouped per image.
    """
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]  # mirrors of the last five
    return crops
