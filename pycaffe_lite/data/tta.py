"""Test-time augmentation: average a net's predictions over fixed crops and scales.

The classic Caffe/AlexNet protocol is 10 views per image: the four corner
crops and the centre crop, and their mirror images (caffe.io.oversample), at
one or several scales.

    from pycaffe_lite.data import tta
    probs = tta.predict(net, images, scales=(256, 288), transform_param=tp)   # deploy net
    result = tta.evaluate(net, scales=(256,), num_images=1000)               # train_val net, TEST phase
    print(result["accuracy"], result["accuracy_top5"])

`predict` feeds HWC images (as cv2 reads them) into the net's input blob;
`evaluate` reads the records of the net's own Data / ImageData layer (a
fresh reader: the layer's prefetch thread is not disturbed), runs the layers
after it on every view, and scores the averaged class probabilities against
the labels.  A scale is None (the image as it is), an int (the shorter side
resized to it) or (height, width).
"""
import numpy as np

from ..backend import to_numpy
from ..proto import caffe_pb2
from .augment import resize, resize_shorter_side
from .datum import load_mean_file


# --------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------
def crop_offsets(height, width, crop_h, crop_w, corners=True):
    """(y, x) of the crops: corners then centre (caffe.io.oversample's order), or the centre alone."""
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the image {height}x{width}")
    centre = (int(height / 2.0 - crop_h / 2.0), int(width / 2.0 - crop_w / 2.0))
    if not corners:
        return [centre]
    return [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w), centre]


def rescale(image, scale):
    if scale is None:
        return image
    if isinstance(scale, (tuple, list)):
        return resize(image, int(scale[0]), int(scale[1]))
    return resize_shorter_side(image, int(scale))


def views(image, crop_size, scales=(None,), mirror=True, corners=True):
    """The augmented views of one HWC/HW image: per scale, 5 crops (or the centre) then their mirrors."""
    crop_h, crop_w = (crop_size, crop_size) if np.isscalar(crop_size) else crop_size
    out = []
    for scale in scales:
        scaled = rescale(image, scale)
        h, w = scaled.shape[:2]
        crops = [scaled[y:y + crop_h, x:x + crop_w] for y, x in crop_offsets(h, w, crop_h, crop_w, corners)]
        out.extend(crops)
        if mirror:
            out.extend(c[:, ::-1] for c in crops)
    return out


def num_views(scales=(None,), mirror=True, corners=True):
    return len(scales) * (5 if corners else 1) * (2 if mirror else 1)


# --------------------------------------------------------------------------
# Preprocessing: Caffe's mean subtraction and scaling, on the views
# --------------------------------------------------------------------------
class _Preprocess:
    """(view - mean) * scale -> CHW; a mean file is resized to each scaled image (exact at scale None)."""

    def __init__(self, transform_param=None):
        tp = transform_param if transform_param is not None else caffe_pb2.TransformationParameter()
        self.scale = float(tp.scale)
        self.mean_image = load_mean_file(tp.mean_file) if tp.mean_file else None   # CHW
        self.mean_values = np.asarray(tp.mean_value, np.float32) if len(tp.mean_value) else None

    def image_views(self, image, crop_size, scales, mirror, corners, dtype):
        """(V, C, h, w) array of preprocessed views of one HWC image."""
        image = image if image.ndim == 3 else image[:, :, np.newaxis]
        result = []
        for scale in scales:
            scaled = rescale(image, scale)
            if scaled.ndim == 2:
                scaled = scaled[:, :, np.newaxis]
            x = scaled.astype(dtype)
            if self.mean_image is not None:
                mean = self.mean_image.transpose(1, 2, 0)
                if mean.shape[:2] != x.shape[:2]:
                    mean = resize(np.ascontiguousarray(mean), x.shape[0], x.shape[1])
                    mean = mean.reshape(x.shape)
                x = x - mean.astype(dtype)
            elif self.mean_values is not None:
                mv = self.mean_values if len(self.mean_values) != 1 else np.repeat(self.mean_values, x.shape[2])
                if len(mv) != x.shape[2]:
                    raise ValueError(f"{len(mv)} mean_value for an image of {x.shape[2]} channels")
                x = x - mv.astype(dtype)
            if self.scale != 1:
                x = x * dtype.type(self.scale)
            result.extend(views(x, crop_size, (None,), mirror, corners))
        return np.stack([v.transpose(2, 0, 1) for v in result])


# --------------------------------------------------------------------------
# Running a net from its first computing layer
# --------------------------------------------------------------------------
def _layer_io(net, i):
    if hasattr(net, "bottom_vecs"):
        return net.bottom_vecs[i], net.top_vecs[i]
    name = net.layer_names[i]
    return [net.blobs[n] for n in net.bottom_names[name]], [net.blobs[n] for n in net.top_names[name]]


def _run_after_sources(net):
    """Reshape and forward every layer that has bottoms (data and input layers are skipped)."""
    for i, layer in enumerate(net.layers):
        bottom, top = _layer_io(net, i)
        if not bottom:
            continue
        layer.reshape(bottom, top)
        layer.Forward(bottom, top)


class _KeepShapes:
    """Put the given blobs back to their shapes (and reshape the net) when the block ends."""

    def __init__(self, net, names):
        self.net = net
        self.shapes = {name: net.blobs[name].shape for name in names if name is not None}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name, shape in self.shapes.items():
            self.net.blobs[name].reshape(shape)
        reshape = getattr(self.net, "reshape", None)
        if reshape is not None and exc[0] is None:
            reshape()


def _producer_type(net, blob_name):
    for name, layer in zip(net.layer_names, net.layers):
        if blob_name in net.top_names[name]:
            producer = layer
    return getattr(producer, "type", None)


def _softmax(scores):
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


def _average(net, batch_views, output_blob, average, n_images, n_views):
    out = to_numpy(net.blobs[output_blob].data).astype(np.float64)
    out = out.reshape(n_images * n_views, -1)
    if average == "prob" and _producer_type(net, output_blob) != "Softmax":
        out = _softmax(out)
    elif average not in ("prob", "raw"):
        raise ValueError(f"average must be 'prob' or 'raw', got '{average}'")
    return out.reshape(n_images, n_views, -1).mean(axis=1)


def _input_crop(net, blob_name, crop_size):
    if crop_size:
        return (crop_size, crop_size) if np.isscalar(crop_size) else tuple(crop_size)
    shape = net.blobs[blob_name].shape
    return int(shape[2]), int(shape[3])


def _feed(net, input_blob, batch, xp_like):
    blob = net.blobs[input_blob]
    blob.reshape(batch.shape)
    from ..backend import get_array_module
    xp = get_array_module(xp_like)
    blob.data = xp.asarray(batch.astype(blob.dtype, copy=False))


def predict(net, images, crop_size=None, scales=(None,), mirror=True, corners=True, transform_param=None,
            input_blob=None, output_blob=None, average="prob", images_per_batch=1):
    """Class probabilities averaged over the views of each image (N, K), for a deploy net.

    images: HWC (or HW) arrays in the channel order the net was trained on
    (BGR uint8 as cv2 reads them); transform_param supplies Caffe's scale
    and mean (mean_file or mean_value).  crop_size defaults to the input
    blob's height and width.
    """
    input_blob = input_blob or (net.inputs[0] if net.inputs else "data")
    output_blob = output_blob or net.outputs[-1]
    crop = _input_crop(net, input_blob, crop_size)
    pre = _Preprocess(transform_param)
    dtype = np.dtype(net.blobs[input_blob].dtype)
    like = net.blobs[input_blob].data
    nv = num_views(scales, mirror, corners)
    results = []
    images = list(images)
    with _KeepShapes(net, [input_blob]):
        for start in range(0, len(images), images_per_batch):
            chunk = images[start:start + images_per_batch]
            batch = np.concatenate([pre.image_views(np.asarray(im), crop, scales, mirror, corners, dtype)
                                    for im in chunk])
            _feed(net, input_blob, batch, like)
            _run_after_sources(net)
            results.append(_average(net, batch, output_blob, average, len(chunk), nv))
    return np.concatenate(results) if results else np.zeros((0, 0))


# --------------------------------------------------------------------------
# Evaluation over a net's own data source
# --------------------------------------------------------------------------
def _data_layer(net):
    for i, layer in enumerate(net.layers):
        if getattr(layer, "type", None) in ("Data", "ImageData"):
            return i, layer
    raise ValueError(f"net '{getattr(net, 'name', '?')}' has no Data or ImageData layer to read images from")


def _records(layer):
    """(image HWC, label) of the layer's source, once, in order (no shuffling)."""
    from .datum import parse_datum
    from .lmdb_io import iter_lmdb
    from .transformer import as_hwc
    lp = layer.layer_param
    tp = lp.transform_param
    if layer.type == "Data":
        from .transformer import DataTransformer
        decoder = DataTransformer(tp, caffe_pb2.TEST)
        source = lp.data_param.source
        for key, value in iter_lmdb(source):
            datum = parse_datum(value, source, key)
            image, layout = decoder.decode(datum, source, key)
            yield as_hwc(image, layout), datum.label
    else:
        from .batches import read_list_file, read_listed_image
        ip = lp.image_data_param
        for number, name, label in read_list_file(ip.source):
            yield read_listed_image(ip.source, number, ip.root_folder, name, ip.new_height, ip.new_width,
                                    ip.is_color), label


def _score_blob(net):
    for name, layer in zip(net.layer_names, net.layers):
        if getattr(layer, "type", None) == "Accuracy":
            return net.bottom_names[name][0]
    for name, layer in zip(net.layer_names, net.layers):
        if getattr(layer, "type", None) in ("SoftmaxWithLoss", "Softmax"):
            return net.bottom_names[name][0]
    raise ValueError("cannot tell which blob holds the class scores: pass score_blob")


def evaluate(net, num_images=None, scales=(None,), mirror=True, corners=True, crop_size=None,
             score_blob=None, top_k=(1, 5), images_per_batch=1):
    """Accuracy of `net` (TEST phase) with test-time augmentation over its data layer's records.

    Returns {"accuracy": top-1, "accuracy_top5": ..., "num_images": n,
    "probabilities": (n, K) averaged class probabilities, "labels": (n,)}.
    Scales apply before cropping; crop_size defaults to transform_param.crop_size or the data top's size.
    """
    index, layer = _data_layer(net)
    lp = layer.layer_param
    tops = net.top_names[net.layer_names[index]]
    data_blob = tops[0]
    label_blob = tops[1] if len(tops) > 1 else None
    tp = lp.transform_param
    crop = crop_size or tp.crop_size or None
    crop = _input_crop(net, data_blob, crop)
    score_blob = score_blob or _score_blob(net)
    pre = _Preprocess(tp)
    dtype = np.dtype(net.blobs[data_blob].dtype)
    like = net.blobs[data_blob].data
    nv = num_views(scales, mirror, corners)
    probs, labels = [], []
    chunk = []

    def flush():
        batch = np.concatenate([pre.image_views(im, crop, scales, mirror, corners, dtype) for im, _ in chunk])
        _feed(net, data_blob, batch, like)
        if label_blob is not None:
            lab = np.repeat(np.asarray([lb for _, lb in chunk], dtype), nv)
            _feed(net, label_blob, lab, like)
        _run_after_sources(net)
        probs.append(_average(net, batch, score_blob, "prob", len(chunk), nv))
        labels.extend(lb for _, lb in chunk)
        chunk.clear()

    with _KeepShapes(net, [data_blob, label_blob]):
        for n, record in enumerate(_records(layer)):
            if num_images is not None and n >= num_images:
                break
            chunk.append(record)
            if len(chunk) == images_per_batch:
                flush()
        if chunk:
            flush()
    if not labels:
        raise ValueError("no images were evaluated")
    p = np.concatenate(probs)
    y = np.asarray(labels)
    ranked = np.argsort(-p, axis=1, kind="stable")
    result = {"num_images": len(y), "probabilities": p, "labels": y}
    for k in top_k:
        hit = (ranked[:, :k] == y[:, None]).any(axis=1).mean()
        result["accuracy" if k == 1 else f"accuracy_top{k}"] = float(hit)
    return result
