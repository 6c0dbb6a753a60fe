"""`engine: AUTO` and `DEFAULT`: time the engines that apply, once per distinct layer shape.

For a shape seen for the first time, every applicable engine runs on random
data of that shape (after a warm-up, so that neither Numba compiles nor the
first touches of full-size buffers are timed), twice, interleaved, the
better run counting: forward and backward
for a layer that trains, forward alone for one that does not (a TEST-phase
net), or the transposed pair for a Deconvolution.  The fastest wins, except
that im2col (exact Caffe arithmetic) is kept unless another engine is at
least `MARGIN` faster in every round: one burst of other work on the machine
must not leave a layer on an engine twice as slow (it did, on CaffeNet's conv2,
when the better round alone decided).  The choice is cached for the rest of the run and
listed by `chosen_engines()` ({shape key: engine}), which `pycaffe-lite time`
prints.

What the prototxt's engine values mean is decided in `resolve()`:

    CAFFE            im2col, Caffe's own algorithm: exact to float rounding and
                     the same from run to run (ask for it to reproduce Caffe bit for bit)
    DEFAULT, CUDNN   the timed choice, for layers with at least `DEFAULT_MIN_MACS`
                     multiply-adds per pass; smaller layers run im2col untimed (the
                     other engines only pay on large layers, and a small net then
                     starts at once and runs the same every time).  As Caffe's
                     DEFAULT picks its fastest engine (cuDNN) where there is one.
    AUTO             the timed choice for every layer
    FFT, WINOGRAD, WINOGRAD4   that engine

A timed choice depends on the machine being quiet (a busy machine can flip a
close call, and two runs then differ in the last bits), and Winograd F(4x4)
is about 1e-5 relative less precise in float32.
"""
import logging
import time

import numpy as np

from ..proto import caffe_pb2
from .engines import ENGINES, get_engine
from .geometry import shape_key

log = logging.getLogger("pycaffe_lite")

MARGIN = 0.10          # another engine must beat im2col by 10 % to be chosen
DEFAULT_MIN_MACS = 2e8  # DEFAULT times the engines only for layers this large (multiply-adds per forward)
AUTO, DEFAULT = None, "default"
ROUNDS = 2             # timed runs per engine (interleaved; the best counts)
_CHOICES = {}          # shape key -> engine name
_TIMINGS = {}          # shape key -> {engine name: seconds for forward + backward}

# The prototxt's engine (ConvolutionParameter.Engine, named as proto/caffe.proto names it) -> the engine
# that runs, or AUTO / DEFAULT (the timed choices).  The one table of engine names.
ENGINE_FOR = {"DEFAULT": DEFAULT, "CAFFE": "im2col", "CUDNN": DEFAULT, "FFT": "fft", "WINOGRAD": "winograd",
              "WINOGRAD4": "winograd4", "AUTO": AUTO}
TIMED = (AUTO, DEFAULT)
_ENGINE_ENUM = caffe_pb2.ConvolutionParameter.Engine
ENUM_NAMES = {_ENGINE_ENUM.Value(name): engine for name, engine in ENGINE_FOR.items()}   # enum value -> engine


def prototxt_name(enum_value):
    """The prototxt's name of a ConvolutionParameter.engine value (CAFFE, WINOGRAD, ...)."""
    try:
        return _ENGINE_ENUM.Name(int(enum_value))
    except ValueError:
        raise ValueError(f"unknown convolution engine value {enum_value}; known: "
                         + ", ".join(ENGINE_FOR)) from None


def resolve(enum_value):
    """Engine name for a ConvolutionParameter.engine value, or AUTO (None) / DEFAULT ("default")."""
    name = prototxt_name(enum_value)
    if name not in ENGINE_FOR:
        raise ValueError(f"convolution engine {name} has no engine here; known: " + ", ".join(ENGINE_FOR))
    return ENGINE_FOR[name]


def is_auto(engine):
    """Whether an engine argument of conv.forward / backward asks for the timed choice (None or "auto")."""
    return engine is AUTO or engine == "auto"


def candidates(geom, channels):
    """Engines worth timing for this geometry (im2col first)."""
    names = ["im2col"]
    if geom.is_depthwise(channels) or geom.is_1x1:
        return names          # im2col's direct depthwise / plain GEMM paths win outright
    if ENGINES["winograd"].supports(geom):
        names += ["winograd", "winograd4"]
    if ENGINES["fft"].supports(geom) and max(geom.extent) >= 5:
        names.append("fft")       # measured: FFT never wins on 3x3 or factorised 1xk kernels
    return names


def _device(xp):
    return "cpu" if xp.__name__ == "numpy" else "gpu"


def _random(xp, shape, dtype, rng):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


def _run(engine, kind, geom, x, w, dy, x_shape, train):
    if kind == "conv":
        engine.forward(x, w, None, geom)
        if train:
            engine.backward(x, w, dy, geom)
    else:   # deconv: forward is the convolution's backward_data, backward its forward + dw
        engine.backward_data(dy, w, geom, x_shape)
        if train:
            engine.forward(x, w, None, geom)
            engine.backward_weights(x, dy, geom, w.shape)


def _sync(xp):
    if xp.__name__ != "numpy":
        xp.cuda.Stream.null.synchronize()


def choose(kind, x_shape, w_shape, geom, dtype, xp=np, train=True, request=AUTO):
    """The engine name for this shape, timing the candidates the first time.

    kind: "conv" or "deconv"; x_shape / w_shape: the underlying convolution's
    NCHW input and (K, C/g, kh, kw) weights (for a Deconvolution, its top is x);
    train: time the backward pass too; request: AUTO, or DEFAULT (im2col below
    DEFAULT_MIN_MACS)."""
    if request == DEFAULT and geom.macs(x_shape, w_shape[0]) < DEFAULT_MIN_MACS:
        return "im2col"                                  # small: not a choice, not listed
    key = shape_key(kind, x_shape, w_shape[0], geom, dtype, _device(xp)) + ("" if train else " inference")
    if key in _CHOICES:
        return _CHOICES[key]
    names = candidates(geom, x_shape[1])
    if len(names) == 1:
        _CHOICES[key] = names[0]
        return names[0]
    log.info("Timing convolution engines %s for %s", ", ".join(names), key)   # seconds on large layers
    rng = np.random.default_rng(0)
    n, c, h, wd = x_shape
    ho, wo = geom.output_hw(h, wd)
    x = _random(xp, x_shape, dtype, rng)
    w = _random(xp, w_shape, dtype, rng)
    dy = _random(xp, (n, w_shape[0], ho, wo), dtype, rng)
    small = (1,) + tuple(x_shape[1:])
    xs, dys = x[:1], dy[:1]
    # Warm-up, untimed: Numba compiles and FFT plans on one image, then the first
    # touches (page faults) of the full-size buffers.
    for name in names:
        _run(get_engine(name), kind, geom, xs, w, dys, small, train)
        _run(get_engine(name), kind, geom, x, w, dy, x_shape, train)
    rounds = {name: [] for name in names}
    for _ in range(ROUNDS):                              # interleaved: a busy machine
        for name in names:                               # disturbs every engine alike
            _sync(xp)
            start = time.perf_counter()
            _run(get_engine(name), kind, geom, x, w, dy, x_shape, train)
            _sync(xp)
            rounds[name].append(time.perf_counter() - start)
    timings = {name: min(times) for name, times in rounds.items()}
    best = min(timings, key=timings.get)
    if best != "im2col" and any(t > (1 - MARGIN) * ref for t, ref in zip(rounds[best], rounds["im2col"])):
        best = "im2col"
    _CHOICES[key] = best
    _TIMINGS[key] = timings
    log.info("  chose %s (%s)", best, ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in timings.items()))
    return best


def chosen_engines():
    """{shape key: engine name} of every AUTO choice made in this run."""
    return dict(_CHOICES)


def engine_timings():
    """{shape key: {engine: seconds}} measured for the AUTO choices (forward + backward)."""
    return {k: dict(v) for k, v in _TIMINGS.items()}


def reset_choices():
    _CHOICES.clear()
    _TIMINGS.clear()


def set_choice(kind, x_shape, k, geom, dtype, engine, device="cpu"):
    """Pin the AUTO choice for a shape (e.g. from a previous run's `chosen_engines()`)."""
    get_engine(engine)
    _CHOICES[shape_key(kind, x_shape, k, geom, dtype, device)] = engine
