"""One case per registered layer type (more where a type has modes): the layer harness's table.

tests/layers/test_layer_harness.py runs every case: set-up and output shapes, forward against
the case's plain NumPy reference in every dtype of DTYPES, float64 numerical gradients of every
bottom and parameter (tests/layer_check.py), in-place use where the case says the layer allows
it, on every available array module; its completeness test fails when a registered type has no
case here.  tests/gpu/test_gpu_layers.py also runs the cases on CuPy against NumPy.

A case's bottoms are drawn from its seed, kept off the layer's kinks by layer_check's
`away_from_kinks` (the case declares its `kinks` and `ties`).  A data or IO layer's case may check
set-up and shapes only: `shape_only` says why.

Adding a layer: one Case with a reference (bottoms, params) -> tops, written from Caffe's code,
in tests/layer_refs.py when it is longer than a line.
"""
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from layer_check import away_from_kinks
from layer_refs import (FLT_MIN, argmax_reference, batch_reference, broadcast_reference, conv_loops, deconv_loops,
                        elementwise, fixed_point, im2col_loops, mvn_reference, prelu_reference, ref_contrastive,
                        ref_infogain, ref_lrn_across, ref_lrn_within, ref_lstm, ref_pool, ref_rnn, ref_sigmoid_ce,
                        ref_softmax, ref_softmax_loss, ref_sto_test, sigm, sigmoid)
from pycaffe_lite import backend
from pycaffe_lite.blob import Blob
from pycaffe_lite.layer import Layer, create_layer
from pycaffe_lite.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


# The dtypes every forward is checked in, against the float64 reference (adding one is one line).
DTYPES = {
    "float32": (np.float32, Tolerance(rtol=1e-5, atol=1e-5)),
    "float64": (np.float64, Tolerance(rtol=1e-6, atol=1e-12)),
}


@dataclass
class Case:
    id: str
    text: str                      # LayerParameter text (type and parameters); {dir} is prepare's folder
    bottoms: list                  # [(shape, kind)]: kind "normal", "positive", "prob", "int<K>", "binary",
    #                                "cont" or (low, high) for uniform values
    reference: object = None       # (bottoms, params) -> [tops], float64 host arrays; None when shape_only
    num_tops: int = 1
    phase: int = TRAIN
    propagate: tuple = None        # bottoms to differentiate (default: every float kind)
    backward: bool = True          # False for layers without a backward (Accuracy, ArgMax, ...)
    no_gradient_check: str = ""    # why a layer's backward is not the numerical gradient (Ristretto)
    kinks: tuple = ()              # values where the derivative jumps, kept layer_check.GAP away
    ties: bool = False             # the layer picks a maximum among its inputs: values kept apart
    in_place: bool = False         # top may be the bottom (neuron layers)
    shape_only: str = ""           # why only set-up and shapes are checked (data and IO layers)
    top_shapes: tuple = None       # the expected top shapes, for shape_only cases
    setup_shapes: tuple = None     # the tops after SetUp where they differ from the forward's
    prepare: object = None         # folder -> writes the files the layer reads (shape_only cases)
    feed: object = None            # layer -> hands the layer its input before forward (MemoryData)
    gpu: bool = True               # False: host-side layer, no CuPy run
    seed: int = 0

    @property
    def type(self):
        return text_format.Parse(self.text.replace("{dir}", ""), caffe_pb2.LayerParameter()).type

    def layer_text(self, folder=None):
        """The LayerParameter text, after writing the files the layer reads under `folder`."""
        if self.prepare is None:
            return self.text
        self.prepare(Path(folder))
        return self.text.replace("{dir}", str(folder))

    @property
    def float_bottoms(self):
        return [i for i, (_, kind) in enumerate(self.bottoms) if _is_float(kind)]

    @property
    def differentiated(self):
        """Indices of the bottoms the gradient check and the GPU comparison propagate to."""
        return self.float_bottoms if self.propagate is None else list(self.propagate)


def _is_float(kind):
    return isinstance(kind, tuple) or kind in ("normal", "positive", "prob")


def _draw(rng, shape, kind):
    if isinstance(kind, tuple):
        return rng.uniform(kind[0], kind[1], shape)
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "positive":
        return rng.random(shape) + 0.1
    if kind == "prob":
        p = rng.random(shape) + 0.05
        return p / p.sum(axis=1, keepdims=True)
    if kind == "binary":
        return rng.integers(0, 2, shape).astype(np.float64)
    if kind == "cont":              # RNN sequence continuation: 0 at t == 0, then 1
        a = np.ones(shape)
        a[0] = 0
        return a
    if kind.startswith("int"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.float64)
    raise ValueError(kind)


def bottom_arrays(case, dtype=np.float64):
    """The case's bottoms in `dtype` (labels and indices too, as Caffe's blobs hold them)."""
    rng = np.random.default_rng(case.seed)
    arrays = [_draw(rng, shape, kind) for shape, kind in case.bottoms]
    floats = case.float_bottoms
    for i, a in zip(floats, away_from_kinks([arrays[i] for i in floats], case.kinks, case.ties)):
        arrays[i] = a
    return [a.astype(dtype) for a in arrays]


# ---- references not worth a function in layer_refs -----------------------------------------------
def neuron(fn):
    return lambda b, p: [elementwise(fn, b[0])]


def conv_ref(kernel=3, stride=1, pad=0, dilation=1, group=1):
    def ref(b, p):
        return [conv_loops(b[0], p[0], p[1] if len(p) > 1 else None, (kernel,) * 2, (stride,) * 2, (pad,) * 2,
                           (dilation,) * 2, group)]
    return ref


def binary_ref(product, binarize_input, scale, out_axis=0):
    """The binary layers: alpha * product(sign(x), sign(W)) + b, sign(0) = +1, alpha = mean |W| per output."""
    def ref(b, p):
        w = p[0]
        y = product(np.where(b[0] >= 0, 1.0, -1.0) if binarize_input else b[0], np.where(w >= 0, 1.0, -1.0))
        axes = tuple(a for a in range(w.ndim) if a != out_axis)
        alpha = np.abs(w).mean(axis=axes) if scale else np.ones(w.shape[out_axis])
        view = (-1,) + (1,) * (y.ndim - 2)
        return [y * alpha.reshape(view) + (p[1].reshape(view) if len(p) > 1 else 0)]
    return ref


# The binary layers' backward is the straight-through estimator, not the numerical gradient:
# tests/layers/test_binary.py checks it against numerical gradients where they are defined.
BINARY_STE = {"no_gradient_check": "the straight-through estimator (tests/layers/test_binary.py)"}


RISTRETTO = ("quantization_param { bw_layer_in: 16 fl_layer_in: 12 bw_params: 8 fl_params: 7 "
             "bw_layer_out: 16 fl_layer_out: 10 }")


def ristretto(float_ref):
    """Ristretto's TEST phase (RISTRETTO's widths): the float layer on trimmed inputs and parameters,
    its output trimmed."""
    def ref(b, p):
        out = float_ref([fixed_point(b[0], 16, 12)], [fixed_point(a, 8, 7) for a in p])[0]
        return [fixed_point(out, 16, 10)]
    return ref


# Ristretto's TEST phase trims inputs and outputs (a staircase: no numerical gradient) and its
# parameter gradients are straight-through by design; tests/layers/test_ristretto.py checks its
# backward in TRAIN against the float twin.  TEST rounds to nearest, so both devices trim alike.
STRAIGHT_THROUGH = {"phase": TEST, "no_gradient_check": "Ristretto's straight-through estimator"}


def pool_ref(method, kernel, stride, pad=0, tops=1):
    return lambda b, p: list(ref_pool(b[0], method, (kernel,) * 2, (stride,) * 2, (pad,) * 2))[:tops]


def global_ave_pool(b, p):
    return [ref_pool(b[0], "AVE", b[0].shape[2:], (1, 1), (0, 0))[0]]


def spp_max(levels):
    """Caffe's SPPLayer: level i max-pools into 2^i x 2^i bins (kernel = stride = ceil(H / bins),
    pad = (kernel * bins - H + 1) // 2), each flattened, then concatenated."""
    def ref(b, p):
        x = b[0]
        parts = []
        for level in range(levels):
            bins = 2 ** level
            kernel = [-(-d // bins) for d in x.shape[2:]]
            pad = [(k * bins - d + 1) // 2 for k, d in zip(kernel, x.shape[2:])]
            parts.append(ref_pool(x, "MAX", kernel, kernel, pad)[0].reshape(x.shape[0], -1))
        return [np.concatenate(parts, axis=1)]
    return ref


def eltwise(fn):
    return lambda b, p: [np.vectorize(fn)(b[0], b[1])]


def hinge_loss(norm):
    """Caffe's HingeLossLayer: sum over n, j of max(0, 1 - delta(j = label) x_nj ...), by loops."""
    def ref(b, p):
        x, label = b
        total = 0.0
        for n in range(x.shape[0]):
            for j in range(x.shape[1]):
                margin = max(0.0, 1 + (-x[n, j] if j == int(label[n]) else x[n, j]))
                total += margin if norm == "L1" else margin * margin
        return [np.array(total / x.shape[0])]
    return ref


def multinomial_loss(b, p):
    prob, label = b
    return [np.array(-sum(math.log(max(prob[n, int(label[n])], FLT_MIN)) for n in range(prob.shape[0]))
                     / prob.shape[0])]


def accuracy(top_k):
    def ref(b, p):
        x, label = b
        hits = sum(int(label[n]) in np.argsort(-x[n], kind="stable")[:top_k] for n in range(x.shape[0]))
        return [np.array(hits / x.shape[0])]
    return ref


def lstm_unit(b, p):
    c_prev, gates, cont = b
    H = c_prev.shape[2]
    i, f, o = sigm(gates[..., :H]), sigm(gates[..., H:2 * H]), sigm(gates[..., 2 * H:3 * H])
    c = cont[..., None] * f * c_prev + i * np.tanh(gates[..., 3 * H:])
    return [c, o * np.tanh(c)]


class DoubleLayer(Layer):
    """The Python case's user layer: top = 2 * bottom, in place allowed."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff


# ---- files the data layers read ----------------------------------------------------------------
def _data_helpers():
    """tests/data/data_helpers.py (image files, LMDBs), imported when a data case runs."""
    folder = str(Path(__file__).resolve().parent / "data")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import data_helpers
    return data_helpers


def write_images(folder):
    _data_helpers().write_images(folder, n=3, size=(6, 5))


def write_lmdb(folder):
    _data_helpers().make_lmdb(folder, n=3, size=(6, 5))


def write_window_file(folder):
    write_images(folder)
    windows = "".join(f"# {i}\n{folder}/img/{i:03d}.png\n3\n6\n5\n2\n1 0.8 0 0 3 4\n0 0.1 1 1 4 5\n"
                      for i in range(3))
    (folder / "windows.txt").write_text(windows)


def write_hdf5(folder):
    import h5py
    with h5py.File(folder / "part.h5", "w") as h:
        h["data"] = np.arange(5 * 3, dtype=np.float64).reshape(5, 3)
        h["label"] = np.arange(5.0)
    (folder / "list.txt").write_text(f"{folder}/part.h5\n")


def feed_memory_data(layer):
    layer.set_input_arrays(np.zeros((4, 3, 2, 2), np.float32), np.zeros(4, np.float32))


def conv(extra=""):
    return f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 pad: 1 ' \
           f'weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "constant" value: 0.1 }} {extra} }}'


NCHW = (2, 4, 5, 4)
SMALL = (2, 3, 2, 3)


def data_layer(type_, param, transform="transform_param { crop_size: 4 }"):
    return f'type: "{type_}" top: "data" top: "label" {param} {transform}'


def neuron_case(id_, text, fn, kinks=(), low=-2, high=2, **kw):
    return Case(id_, text, [(SMALL, (low, high))], neuron(fn), kinks=kinks, in_place=True, seed=1, **kw)


CASES = [
    # --- vision -------------------------------------------------------------------------------
    Case("conv", conv(), [(NCHW, "normal")], conv_ref(3, 2, 1)),
    Case("conv_group_dilated", conv("group: 2 dilation: 2"), [(NCHW, "normal")], conv_ref(3, 2, 1, 2, 2)),
    Case("conv_1x1", 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 '
         'weight_filler { type: "gaussian" std: 0.1 } }', [(NCHW, "normal")], conv_ref(1)),
    Case("conv_depthwise", 'type: "Convolution" convolution_param { num_output: 8 group: 4 kernel_size: 3 pad: 1 '
         'weight_filler { type: "gaussian" std: 0.1 } }', [(NCHW, "normal")], conv_ref(3, 1, 1, 1, 4)),
    Case("deconv", 'type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 3 stride: 2 '
         'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.2 } }',
         [(NCHW, "normal")], lambda b, p: [deconv_loops(b[0], p[0], p[1], (3, 3), (2, 2))]),
    Case("im2col", 'type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 }', [(NCHW, "normal")],
         lambda b, p: [im2col_loops(b[0], (3, 3), (2, 2), (1, 1))], gpu=False),
    Case("binary_conv", 'type: "BinaryConvolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 '
         'group: 2 weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "constant" value: 0.1 } } '
         'binary_param { scale: MEAN_ABS }', [(NCHW, "normal")],
         binary_ref(lambda x, w: conv_loops(x, w, None, (3, 3), (1, 1), (1, 1), (1, 1), 2), True, True),
         **BINARY_STE),
    Case("binary_conv_packed_real_input", 'type: "BinaryConvolution" convolution_param { num_output: 3 '
         'kernel_size: 2 stride: 2 weight_filler { type: "uniform" min: -1 max: 1 } } '
         'binary_param { binarize_input: false }', [(NCHW, "int9")],
         binary_ref(lambda x, w: conv_loops(x, w, None, (2, 2), (2, 2)), False, False), phase=TEST,
         **BINARY_STE),
    Case("binary_fc_packed", 'type: "BinaryInnerProduct" inner_product_param { num_output: 5 transpose: true '
         'weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "constant" value: -0.2 } } '
         'binary_param { scale: MEAN_ABS }', [((3, 2, 4), "normal")],
         binary_ref(lambda x, w: x.reshape(3, -1) @ w, True, True, out_axis=1), phase=TEST, **BINARY_STE),
    Case("conv_ristretto", 'type: "ConvolutionRistretto" convolution_param { num_output: 4 kernel_size: 3 pad: 1 '
         'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } ' + RISTRETTO,
         [(NCHW, "normal")], ristretto(conv_ref(3, 1, 1)), **STRAIGHT_THROUGH),
    Case("fc_ristretto", 'type: "FcRistretto" inner_product_param { num_output: 5 weight_filler { type: "gaussian" '
         'std: 0.3 } bias_filler { type: "constant" value: 0.1 } } ' + RISTRETTO, [((3, 2, 4), "normal")],
         ristretto(lambda b, p: [b[0].reshape(3, -1) @ p[0].T + p[1]]), **STRAIGHT_THROUGH),
    Case("deconv_ristretto", 'type: "DeconvolutionRistretto" convolution_param { num_output: 3 kernel_size: 2 '
         'stride: 2 weight_filler { type: "gaussian" std: 0.3 } } ' + RISTRETTO, [(NCHW, "normal")],
         ristretto(lambda b, p: [deconv_loops(b[0], p[0], p[1], (2, 2), (2, 2))]), **STRAIGHT_THROUGH),
    Case("lrn_ristretto_float_widths", 'type: "LRNRistretto" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } '
         'quantization_param { precision: MINIFLOAT mant_bits: 23 exp_bits: 8 }', [(NCHW, "normal")],
         lambda b, p: [ref_lrn_across(b[0], 3, 0.5, 0.75, 2)], **STRAIGHT_THROUGH),
    Case("pool_max", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [(NCHW, "normal")],
         pool_ref("MAX", 3, 2), ties=True),
    Case("pool_max_pad_mask", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
         [(NCHW, "normal")], pool_ref("MAX", 3, 2, 1, tops=2), num_tops=2, ties=True),
    Case("pool_ave_pad", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
         [(NCHW, "normal")], pool_ref("AVE", 3, 2, 1)),
    Case("pool_global", 'type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [(NCHW, "normal")],
         global_ave_pool),
    Case("pool_stochastic_test", 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }',
         [(NCHW, "positive")], lambda b, p: [ref_sto_test(b[0], 2, 2)], phase=TEST, backward=False),
    Case("lrn_across", 'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }', [(NCHW, "normal")],
         lambda b, p: [ref_lrn_across(b[0], 3, 0.5, 0.75, 2)]),
    Case("lrn_within", 'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }',
         [(NCHW, "normal")], lambda b, p: [ref_lrn_within(b[0], 3, 0.5, 0.75)]),
    Case("spp", 'type: "SPP" spp_param { pyramid_height: 2 pool: MAX }', [(NCHW, "normal")], spp_max(2), ties=True),
    Case("crop", 'type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }',
         [(NCHW, "normal"), ((2, 4, 3, 2), "normal")], lambda b, p: [b[0][:, :, 1:4, 2:4]], propagate=(0,)),
    # --- neurons (y = f(x) per element) --------------------------------------------------------
    neuron_case("relu", 'type: "ReLU"', lambda v: max(v, 0.0), (0.0,)),
    neuron_case("relu_leaky", 'type: "ReLU" relu_param { negative_slope: 0.1 }',
                lambda v: v if v > 0 else float(np.float32(0.1)) * v, (0.0,)),
    neuron_case("relu_negative_slope", 'type: "ReLU" relu_param { negative_slope: -0.5 }',
                lambda v: v if v > 0 else -0.5 * v, (0.0,)),
    neuron_case("sigmoid", 'type: "Sigmoid"', sigmoid, low=-4, high=4),
    neuron_case("tanh", 'type: "TanH"', math.tanh, low=-3, high=3),
    neuron_case("absval", 'type: "AbsVal"', abs, (0.0,)),
    neuron_case("bnll", 'type: "BNLL"', lambda v: math.log(1 + math.exp(v)), low=-5, high=5),
    neuron_case("elu", 'type: "ELU"', lambda v: v if v > 0 else math.exp(v) - 1, (0.0,), -3, 2),
    neuron_case("elu_alpha", 'type: "ELU" elu_param { alpha: 0.5 }',
                lambda v: v if v > 0 else 0.5 * (math.exp(v) - 1), (0.0,), -3, 2),
    neuron_case("elu_negative_alpha", 'type: "ELU" elu_param { alpha: -0.25 }',
                lambda v: v if v > 0 else -0.25 * (math.exp(v) - 1), (0.0,), -3, 2),
    neuron_case("power_square", 'type: "Power" power_param { power: 2 }', lambda v: v * v),
    neuron_case("power_general", 'type: "Power" power_param { power: 1.5 scale: 0.5 shift: 2.5 }',
                lambda v: (2.5 + 0.5 * v) ** 1.5),
    neuron_case("power_cube_noshift", 'type: "Power" power_param { power: 3 scale: -1.5 }',
                lambda v: (-1.5 * v) ** 3),
    neuron_case("power_linear", 'type: "Power" power_param { power: 1 scale: 3 shift: -1 }', lambda v: 3 * v - 1),
    neuron_case("power_square_shift", 'type: "Power" power_param { power: 2 scale: 2 shift: 1 }',
                lambda v: (1 + 2 * v) ** 2),
    neuron_case("exp", 'type: "Exp"', math.exp),
    neuron_case("exp_base2", 'type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', lambda v: 2.0 ** (1 + 0.5 * v)),
    neuron_case("exp_e_shift", 'type: "Exp" exp_param { scale: -1 shift: 0.5 }', lambda v: math.exp(0.5 - v)),
    neuron_case("log", 'type: "Log"', math.log, low=0.2, high=3),
    neuron_case("log_base10", 'type: "Log" log_param { base: 10 scale: 2 shift: 3 }',
                lambda v: math.log10(3 + 2 * v), low=-1, high=2),
    neuron_case("log_shift", 'type: "Log" log_param { shift: 1 }', lambda v: math.log(1 + v), low=-0.5, high=2),
    neuron_case("swish", 'type: "Swish"', lambda v: v * sigmoid(v), low=-3, high=3),
    neuron_case("swish_beta", 'type: "Swish" swish_param { beta: 2.5 }', lambda v: v * sigmoid(2.5 * v),
                low=-3, high=3),
    neuron_case("swish_beta0", 'type: "Swish" swish_param { beta: 0 }', lambda v: v / 2, low=-3, high=3),
    neuron_case("clip", 'type: "Clip" clip_param { min: -0.5 max: 1 }', lambda v: max(-0.5, min(v, 1.0)),
                (-0.5, 1.0)),
    neuron_case("threshold", 'type: "Threshold" threshold_param { threshold: 0.2 }',
                lambda v: 1.0 if v > float(np.float32(0.2)) else 0.0, (0.2,), backward=False),
    Case("prelu", 'type: "PReLU" prelu_param { filler { type: "uniform" min: -0.8 max: 0.8 } }', [(NCHW, "normal")],
         lambda b, p: [prelu_reference(b[0], p[0])], kinks=(0.0,), in_place=True),
    Case("prelu_shared", 'type: "PReLU" prelu_param { channel_shared: true }', [((4, 3), "normal")],
         lambda b, p: [prelu_reference(b[0], p[0])], kinks=(0.0,), in_place=True),
    neuron_case("dropout_test", 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }', lambda v: v, phase=TEST),
    # --- common -------------------------------------------------------------------------------
    Case("innerproduct", 'type: "InnerProduct" inner_product_param { num_output: 5 '
         'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } }',
         [(NCHW, "normal")], lambda b, p: [b[0].reshape(2, -1) @ p[0].T + p[1]]),
    Case("innerproduct_transpose_axis", 'type: "InnerProduct" inner_product_param { num_output: 3 axis: 2 '
         'transpose: true weight_filler { type: "gaussian" std: 0.1 } }', [((2, 3, 4), "normal")],
         lambda b, p: [b[0] @ p[0] + p[1]]),
    Case("softmax", 'type: "Softmax"', [(NCHW, "normal")], lambda b, p: [ref_softmax(b[0], 1)]),
    Case("concat", 'type: "Concat"', [((2, 3, 4), "normal"), ((2, 2, 4), "normal")],
         lambda b, p: [np.concatenate(b, axis=1)]),
    Case("slice", 'type: "Slice" slice_param { axis: 1 slice_point: 1 }', [((2, 3, 4), "normal")],
         lambda b, p: [b[0][:, :1], b[0][:, 1:]], num_tops=2),
    Case("split", 'type: "Split"', [((2, 3), "normal")], lambda b, p: [b[0], b[0]], num_tops=2),
    Case("eltwise_sum", 'type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }',
         [((2, 3), "normal"), ((2, 3), "normal")], eltwise(lambda a, b: 0.5 * a - 2 * b)),
    Case("eltwise_prod", 'type: "Eltwise" eltwise_param { operation: PROD }',
         [((2, 3), "normal"), ((2, 3), "normal")], eltwise(lambda a, b: a * b)),
    Case("eltwise_max", 'type: "Eltwise" eltwise_param { operation: MAX }',
         [((2, 3), "normal"), ((2, 3), "normal")], eltwise(max), ties=True),
    Case("flatten", 'type: "Flatten"', [(NCHW, "normal")], lambda b, p: [b[0].reshape(2, -1)]),
    Case("reshape", 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [(NCHW, "normal")],
         lambda b, p: [b[0].reshape(2, -1)]),
    Case("tile", 'type: "Tile" tile_param { axis: 1 tiles: 3 }', [((2, 3), "normal")],
         lambda b, p: [np.tile(b[0], (1, 3))]),
    Case("reduction", 'type: "Reduction" reduction_param { operation: SUMSQ axis: 1 coeff: 0.5 }',
         [((2, 3, 4), "normal")], lambda b, p: [np.array([0.5 * sum(v * v for v in r) for r in b[0].reshape(2, -1)])]),
    Case("reduction_asum", 'type: "Reduction" reduction_param { operation: ASUM }', [((2, 3), "normal")],
         lambda b, p: [np.array(sum(abs(v) for v in b[0].ravel()))], kinks=(0.0,)),
    Case("argmax", 'type: "ArgMax" argmax_param { top_k: 2 out_max_val: true axis: 1 }',
         [((3, 6), "normal")], lambda b, p: [argmax_reference(b[0], 2, 1)[1]], backward=False),
    Case("argmax_indices", 'type: "ArgMax" argmax_param { top_k: 2 }', [((3, 6), "normal")],
         lambda b, p: [argmax_reference(b[0], 2, 1)[0][:, None]], backward=False),
    Case("scale_bias", 'type: "Scale" scale_param { axis: 1 num_axes: 1 bias_term: true '
         'filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } }', [(NCHW, "normal")],
         lambda b, p: [broadcast_reference(broadcast_reference(b[0], p[0], 1, np.multiply), p[1], 1, np.add)]),
    Case("scale_two_bottoms", 'type: "Scale" scale_param { axis: 0 }', [(NCHW, "normal"), ((2, 4), "normal")],
         lambda b, p: [broadcast_reference(b[0], b[1], 0, np.multiply)]),
    Case("bias", 'type: "Bias" bias_param { axis: 1 num_axes: 1 filler { type: "gaussian" std: 1 } }',
         [(NCHW, "normal")], lambda b, p: [broadcast_reference(b[0], p[0], 1, np.add)]),
    Case("embed", 'type: "Embed" embed_param { num_output: 4 input_dim: 6 '
         'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "constant" value: 0.1 } }',
         [((5,), "int6")], lambda b, p: [p[0][b[0].astype(int)] + p[1]], propagate=()),
    Case("batchreindex", 'type: "BatchReindex"', [((4, 3), "normal"), ((5,), "int4")],
         lambda b, p: [b[0][b[1].astype(int)]], propagate=(0,)),
    Case("filter", 'type: "Filter"', [((4, 3), "normal"), ((4,), "binary")],
         lambda b, p: [b[0][b[1] != 0]], propagate=(0,), setup_shapes=((4, 3),)),   # Caffe: all items
    Case("mvn", 'type: "MVN" mvn_param { normalize_variance: true across_channels: false }', [(NCHW, "normal")],
         lambda b, p: [mvn_reference(b[0], True, False)]),
    Case("batchnorm_train", 'type: "BatchNorm"', [(NCHW, "normal")], lambda b, p: [batch_reference(b[0])[0]]),
    Case("batchnorm_global", 'type: "BatchNorm" batch_norm_param { use_global_stats: true }',
         [(NCHW, "normal")], lambda b, p: [b[0] / math.sqrt(1e-5)], phase=TEST),
    Case("silence", 'type: "Silence"', [((2, 3), "normal")], lambda b, p: [], num_tops=0),
    Case("parameter", 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [],
         lambda b, p: [p[0]]),
    # --- losses -------------------------------------------------------------------------------
    Case("softmax_loss", 'type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }',
         [((4, 5, 2), "normal"), ((4, 2), "int5")],
         lambda b, p: [np.array(ref_softmax_loss(b[0], b[1], 1, "VALID"))], propagate=(0,)),
    Case("euclidean_loss", 'type: "EuclideanLoss"', [((4, 3), "normal"), ((4, 3), "normal")],
         lambda b, p: [np.array(((b[0] - b[1]) ** 2).sum() / 4 / 2)]),
    Case("sigmoid_ce_loss", 'type: "SigmoidCrossEntropyLoss"', [((4, 3), "normal"), ((4, 3), "binary")],
         lambda b, p: [np.array(ref_sigmoid_ce(b[0], b[1], None, "BATCH_SIZE"))], propagate=(0,)),
    Case("hinge_loss", 'type: "HingeLoss" hinge_loss_param { norm: L2 }', [((4, 5), "normal"), ((4,), "int5")],
         hinge_loss("L2"), propagate=(0,), kinks=(-1.0, 1.0)),
    Case("hinge_loss_l1", 'type: "HingeLoss"', [((4, 5), "normal"), ((4,), "int5")],
         hinge_loss("L1"), propagate=(0,), kinks=(-1.0, 1.0)),
    Case("multinomial_loss", 'type: "MultinomialLogisticLoss"', [((4, 5), "prob"), ((4,), "int5")],
         multinomial_loss, propagate=(0,)),
    Case("infogain_loss", 'type: "InfogainLoss"', [((4, 5), "prob"), ((4,), "int5"), ((5, 5), "positive")],
         lambda b, p: [np.array(ref_infogain(b[0], b[1], b[2]))], propagate=(0,)),
    Case("contrastive_loss", 'type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
         [((4, 3), "normal"), ((4, 3), "normal"), ((4,), "binary")],
         lambda b, p: [np.array(ref_contrastive(b[0], b[1], b[2], 2, False))], propagate=(0, 1)),
    Case("accuracy", 'type: "Accuracy" accuracy_param { top_k: 2 }', [((6, 5), "normal"), ((6,), "int5")],
         accuracy(2), backward=False),
    # --- recurrent ----------------------------------------------------------------------------
    Case("lstm", 'type: "LSTM" recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } '
         'bias_filler { type: "constant" value: 0.1 } }', [((3, 2, 4), "normal"), ((3, 2), "cont")],
         lambda b, p: [ref_lstm(b[0], b[1], p)[0]], propagate=(0,)),
    Case("rnn", 'type: "RNN" recurrent_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } '
         'bias_filler { type: "constant" value: 0.1 } }', [((3, 2, 4), "normal"), ((3, 2), "cont")],
         lambda b, p: [ref_rnn(b[0], b[1], p)[0]], propagate=(0,)),
    Case("lstm_unit", 'type: "LSTMUnit"', [((1, 2, 3), "normal"), ((1, 2, 12), "normal"), ((1, 2), "cont")],
         lstm_unit, num_tops=2, propagate=(0, 1)),
    # --- user code, fillers and inputs --------------------------------------------------------
    Case("python", 'type: "Python" python_param { module: "layer_cases" layer: "DoubleLayer" }',
         [(SMALL, "normal")], lambda b, p: [2 * b[0]], in_place=True, gpu=False),
    Case("dummydata", 'type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
         'data_filler { type: "constant" value: 1.5 } }', [], lambda b, p: [np.full((2, 3), 1.5)],
         backward=False, gpu=False),
    Case("input", 'type: "Input" input_param { shape { dim: 2 dim: 3 } }', [], top_shapes=((2, 3),),
         shape_only="no computation: its top holds whatever the caller writes into it", gpu=False),
    # --- data and IO layers: set-up and shapes (their values: tests/data, tests/layers/test_window_data.py)
    Case("data", data_layer("Data", 'data_param { source: "{dir}/db" batch_size: 2 backend: LMDB }'),
         [], num_tops=2, top_shapes=((2, 3, 4, 4), (2,)), prepare=write_lmdb,
         shape_only="reads an LMDB; its batches are checked against the images in tests/data"),
    Case("imagedata", data_layer("ImageData", 'image_data_param { source: "{dir}/list.txt" '
                                 'root_folder: "{dir}/" batch_size: 2 }'),
         [], num_tops=2, top_shapes=((2, 3, 4, 4), (2,)), prepare=write_images,
         shape_only="reads image files; their decoding is checked in tests/data/test_data_layers.py"),
    Case("windowdata", data_layer("WindowData", 'window_data_param { source: "{dir}/windows.txt" batch_size: 2 }'),
         [], num_tops=2, top_shapes=((2, 3, 4, 4), (2,)), prepare=write_window_file,
         shape_only="samples and warps image windows at random; checked in tests/layers/test_window_data.py"),
    Case("hdf5data", data_layer("HDF5Data", 'hdf5_data_param { source: "{dir}/list.txt" batch_size: 2 }', ""),
         [], num_tops=2, top_shapes=((2, 3), (2,)), prepare=write_hdf5,
         shape_only="reads HDF5 files; their batches are checked in tests/data/test_data_layers.py"),
    Case("hdf5output", 'type: "HDF5Output" hdf5_output_param { file_name: "{dir}/out.h5" }',
         [((2, 3), "normal"), ((2,), "int3")], num_tops=0, top_shapes=(), prepare=lambda folder: None,
         shape_only="writes its bottoms to a file (no tops); the file is checked in tests/data/test_data_layers.py"),
    Case("memorydata", data_layer("MemoryData", "memory_data_param { batch_size: 2 channels: 3 height: 2 width: 2 }",
                                  ""),
         [], num_tops=2, top_shapes=((2, 3, 2, 2), (2,)), feed=feed_memory_data,
         shape_only="hands out the caller's arrays; checked in tests/data/test_data_layers.py"),
]


def _param(case):
    param = text_format.Parse(case.text, caffe_pb2.LayerParameter())
    param.name = case.id
    param.phase = case.phase
    return param


def run_case(case, xp, dtype=np.float32, params=None):
    """Run the case on blobs of module xp; returns (results {name: host array}, initial params).

    The initial parameters are host copies taken after SetUp, before Forward (which
    may change them: BatchNorm's statistics).

    params: host arrays to load into the layer's parameter blobs after SetUp (the
    CPU run's, so that both runs start from the same values)."""
    rng = np.random.default_rng(case.seed)
    arrays = bottom_arrays(case, dtype)
    layer = create_layer(_param(case), case.phase)
    bottom = []
    for array in arrays:
        blob = Blob(array.shape, dtype=array.dtype, xp=xp)
        backend.copy_into(blob.data, array)
        bottom.append(blob)
    top = [Blob((), dtype=dtype, xp=xp) for _ in range(case.num_tops)]
    layer.SetUp(bottom, top)
    if params is not None:
        for blob, value in zip(layer.blobs, params):
            backend.copy_into(blob.data, value)
    initial = [backend.to_numpy(b.data).copy() for b in layer.blobs]
    for blob in layer.blobs:
        if backend.array_device(blob.data) != backend.array_device(bottom[0].data if bottom else blob.data):
            raise AssertionError(f"{case.id}: parameter on {backend.array_device(blob.data)}")
    layer.Forward(bottom, top)
    out = {f"top{i}": backend.to_numpy(t.data).copy() for i, t in enumerate(top)}
    if case.backward:
        for i, t in enumerate(top):
            if not layer.loss_weights[i]:
                backend.copy_into(t.diff, rng.standard_normal(t.shape).astype(dtype))
        for p in layer.blobs:
            p.diff[...] = 0
        wanted = case.differentiated
        layer.Backward(top, [i in wanted for i in range(len(bottom))], bottom)
        for i in wanted:
            out[f"bottom{i}.diff"] = backend.to_numpy(bottom[i].diff).copy()
        for j, p in enumerate(layer.blobs):
            out[f"param{j}.diff"] = backend.to_numpy(p.diff).copy()
    for j, p in enumerate(layer.blobs):
        out[f"param{j}"] = backend.to_numpy(p.data).copy()
    return out, initial


def relative_error(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        return float("inf")
    if not reference.size:
        return 0.0
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))
