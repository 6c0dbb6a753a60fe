"""Weight fillers with Caffe's distributions (FillerParameter).

Each filler returns a NumPy array; the random draws come from
`backend.rng()`, so `set_random_seed` makes them repeatable.
"""
import numpy as np

from . import backend


def _fans(shape):
    # Caffe: fan_in = count / shape(0), fan_out = count / shape(1).
    count = int(np.prod(shape))
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _variance_n(param, shape):
    fan_in, fan_out = _fans(shape)
    norm = param.variance_norm
    FP = type(param)
    if norm == FP.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_out if norm == FP.FAN_OUT else fan_in


# Draws are made in the blob's precision (float32 draws are about twice as fast,
# which matters for the 61M weights of AlexNet); `dtype` is float32 or float64.
# A range or std beyond the dtype gives +-inf values, as Caffe's own draws do: not a NumPy warning.
def _draw_uniform(rng, low, high, shape, dtype):
    with np.errstate(over="ignore"):
        return rng.random(shape, dtype=dtype) * dtype.type(high - low) + dtype.type(low)


def _draw_normal(rng, mean, std, shape, dtype):
    with np.errstate(over="ignore"):
        return rng.standard_normal(shape, dtype=dtype) * dtype.type(std) + dtype.type(mean)


def _constant(p, shape, rng, dtype):
    return np.full(shape, p.value, dtype)


def _uniform(p, shape, rng, dtype):
    return _draw_uniform(rng, p.min, p.max, shape, dtype)


def _gaussian(p, shape, rng, dtype):
    values = _draw_normal(rng, p.mean, p.std, shape, dtype)
    if p.sparse >= 0:
        # Keep each weight with probability sparse / num_outputs.
        if len(shape) < 1:
            raise ValueError("a sparse gaussian filler needs a blob with at least one axis")
        keep = rng.random(shape) < p.sparse / float(shape[0])
        values *= keep
    return values


def _positive_unitball(p, shape, rng, dtype):
    values = _draw_uniform(rng, 0.0, 1.0, shape, dtype)
    rows = values.reshape(shape[0], -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def _xavier(p, shape, rng, dtype):
    scale = np.sqrt(3.0 / _variance_n(p, shape))
    return _draw_uniform(rng, -scale, scale, shape, dtype)


def _msra(p, shape, rng, dtype):
    return _draw_normal(rng, 0.0, np.sqrt(2.0 / _variance_n(p, shape)), shape, dtype)


def _bilinear(p, shape, rng, dtype):
    # Upsampling kernel for a Deconvolution layer (Caffe's BilinearFiller).
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"the bilinear filler needs a 4-D blob with square kernels, got {tuple(shape)}")
    k = shape[3]
    f = np.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    axis = 1 - np.abs(np.arange(k) / f - c)
    return np.broadcast_to(np.outer(axis, axis), shape).copy()


FILLERS = {
    "constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
    "positive_unitball": _positive_unitball, "xavier": _xavier, "msra": _msra,
    "bilinear": _bilinear,
}


def fill(filler_param, shape, dtype=np.float32):
    """An array of `shape` drawn as the FillerParameter says."""
    shape = tuple(int(s) for s in shape)
    try:
        make = FILLERS[filler_param.type]
    except KeyError:
        raise ValueError(f"unknown filler type '{filler_param.type}'; known: "
                         + ", ".join(sorted(FILLERS))) from None
    dtype = np.dtype(dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    return np.asarray(make(filler_param, shape, backend.rng(), draw_dtype), dtype=dtype)
