"""Spatial relationships between the tops of a NetSpec, as pycaffe's caffe.coord_map.

A coordinate map (axis, a, b) says that coordinate x of a layer's input is
at a * x + b in its output.  Maps compose through Convolution, Pooling,
Im2col, Deconvolution, Crop and the pointwise layers, so the offset of one
top inside another follows, which is what a fully convolutional net needs
to crop its upsampled scores back onto the input:

    from pycaffe_lite.pycaffe.coord_map import crop
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(num_output=21, kernel_size=64, stride=32))
    n.score = crop(n.upscore, n.data)    # L.Crop with the right axis and offset
"""
import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
                       "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
                       "Threshold"]


class CoordMapError(ValueError, AssertionError):
    """A net whose layers cannot be mapped or cropped as asked.  A ValueError, as this project's errors
    are, and an AssertionError, as pycaffe's coord_map raises these with `assert` (its tests expect it)."""


def _spatial_params(fn, message):
    params = fn.params.get(message, fn.params)
    return params if isinstance(params, dict) else fn.params


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution, Deconvolution,
    Im2col or Pooling function, as arrays over the spatial axes."""
    message = "pooling_param" if fn.type_name == "Pooling" else "convolution_param"
    params = _spatial_params(fn, message)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & (set(params) | set(fn.params))
    if legacy:
        raise CoordMapError(f"{fn.type_name}: cropping does not support legacy _h/_w params ({sorted(legacy)}); "
                         "give kernel_size, stride and pad as lists")
    if "kernel_size" not in params:
        raise CoordMapError(f"{fn.type_name}: no kernel_size to compute a coordinate map from")
    axis = params.get("axis", 1)
    ks = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (axis, np.array(params.get("stride", 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop function, with Caffe's defaults (axis 2, offset 0)."""
    params = _spatial_params(fn, "crop_param")
    axis = params.get("axis", 2)  # default to spatial crop for N, C, H, W
    offset = np.array(params.get("offset", 0), ndmin=1)
    return axis, offset


class UndefinedMapException(Exception):
    """A layer without a defined coordinate mapping."""


def coord_map(fn):
    """The map (axis, scale, shift) of one layer: output coord = scale * input coord + shift.

    Pointwise layers give (None, 1, 0): any axis, identity.
    """
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    elif fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    elif fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    elif fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        axis -= 1  # -1 for the last non-coordinate axis
        return axis, 1, -offset
    raise UndefinedMapException(fn.type_name)


class AxisMismatchException(Exception):
    """Maps over incompatible axes."""


def compose(base_map, next_map):
    """Compose (a1, b1) with (a2, b2): scales multiply, the further shift is scaled by a1."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"axes {ax1} and {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The inverse map (de-scale, un-shift): the backward mapping."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def coord_map_from_to(top_from, top_to):
    """The coordinate map from top_from to top_to, through their common ancestor."""

    def collect_bottoms(top):
        # All bottoms of a layer map alike, except Crop's second (reference) bottom.
        bottoms = top.fn.inputs
        if top.fn.type_name == "Crop":
            bottoms = bottoms[:1]
        return bottoms

    from_maps = {top_from: (None, 1, 0)}
    frontier = {top_from}
    while frontier:
        top = frontier.pop()
        try:
            for bottom in collect_bottoms(top):
                from_maps[bottom] = compose(from_maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            pass

    to_maps = {top_to: (None, 1, 0)}
    frontier = {top_to}
    while frontier:
        top = frontier.pop()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            for bottom in collect_bottoms(top):
                to_maps[bottom] = compose(to_maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            continue

    raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")


def crop(top_from, top_to):
    """A Crop layer cropping top_from to top_to, its axis and offset found from the coordinate map."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if not (a == 1).all():
        raise CoordMapError(f"scale mismatch on crop (a = {a}): the tops are at different resolutions")
    if not (b <= 0).all():
        raise CoordMapError(f"cannot crop negative offset (b = {b}): top_from is smaller than top_to")
    if not (np.round(b) == b).all():
        raise CoordMapError(f"cannot crop noninteger offset (b = {b})")
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1,  # +1 for the first cropping axis
                                  offset=[int(v) for v in -np.round(b).astype(int)]))
