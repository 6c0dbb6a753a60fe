"""Ristretto's `ristretto quantize` (pmgysel/caffe, tools/ristretto.cpp and quantization.cpp):
find the word widths a trained net keeps its accuracy with, and write the quantized prototxt.

    Quantization(model, weights, model_quantized, iterations=50,
                 trimming_mode="dynamic_fixed_point", error_margin=2).quantize_net()

Ristretto's procedure, step for step:
1. the float net's TEST score over `iterations` batches is the baseline (the score is the
   first value of the net's outputs, sorted by name as Caffe keeps them: `accuracy` before
   `loss`);
2. 10 TRAIN batches give, per layer the tool quantizes, the largest |input|, |output| and
   |weight| (bias ignored);
3. dynamic_fixed_point: the integer lengths il = ceil(log2 max) (ceil(log2 max + 1) for the
   weights), fl = bit width - il; then, each part on its own with the rest in float, bit
   widths 16, 8, 4, 2, 1 are tried, stopping after the first whose score is more than
   `error_margin` percent (absolute) under the baseline: the CONV weights, the FC weights,
   then the activations (inputs and outputs of both kinds alike); each part gets the
   smallest width of the passing run from 16 down (32 if 16 fails already), and the net with
   all three is scored and written.
   minifloat: exponent bits max(4, ceil(log2(log2 max - 1) + 1)) over the activations; total
   widths 16, 8, ... while a mantissa bit is left, the same stopping rule; one width for all.
   integer_power_of_2_weights: weights 2^-8 .. 2^-1, activations 8-bit dynamic fixed point.
The written prototxt is the model with the layers' types changed to the Ristretto types
(which layers: those whose type has a Ristretto counterpart, asked of layers/ristretto.py)
and their quantization_param set; the net state is dropped.  Ristretto says "Please
fine-tune." at the end, and so does this.
"""
import logging
import math
import os

import numpy as np

from .. import backend
from ..layers.ristretto import ristretto_type
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2
from ..proto.files import read_net_param
from ..proto.text import write_text

log = logging.getLogger("pycaffe_lite.quantize")
Q = caffe_pb2.QuantizationParameter
MODES = ("dynamic_fixed_point", "minifloat", "integer_power_of_2_weights")
STATS_BATCHES = 10


class Quantization:
    """One run of Ristretto's tool; `quantize_net()` returns the summary lines it logged."""

    def __init__(self, model, weights, model_quantized, iterations=50, trimming_mode="dynamic_fixed_point",
                 error_margin=2.0):
        if trimming_mode not in MODES:
            raise ValueError(f"Unknown trimming mode: '{trimming_mode}' (use {', '.join(MODES)})")
        if iterations < 1:
            raise ValueError(f"--iterations must be at least 1, got {iterations}")
        self.model, self.weights, self.model_quantized = model, weights, model_quantized
        self.iterations, self.trimming_mode, self.error_margin = int(iterations), trimming_mode, float(error_margin)
        self.summary = []

    # ---- running nets -------------------------------------------------------------
    def _net(self, param, phase):
        return Net(param, weights=self.weights, phase=phase)

    def score(self, param, iterations):
        """Ristretto's RunForwardBatches: the mean over batches of the first output value."""
        net = self._net(param, TEST)
        try:
            log.info("Running for %d iterations.", iterations)
            total = 0.0
            for i in range(iterations):
                net.forward_from_to()
                name = net.outputs[0]
                value = float(backend.to_numpy(net.blobs[name].data).ravel()[0])
                log.info("Batch %d, %s = %g", i, name, value)
                total += value
            return total / iterations
        finally:
            net.close()

    def layer_ranges(self, param):
        """{layer: (max |input|, max |output|, max |weight|)} over STATS_BATCHES TRAIN batches."""
        net = self._net(param, TRAIN)
        ranges = {}
        try:
            for _ in range(STATS_BATCHES):
                net.forward_from_to()
                for i, layer in enumerate(net.layers):
                    if ristretto_type(layer.type) is None:
                        continue
                    seen = [float(np.abs(backend.to_numpy(a)).max()) for a in
                            (net.bottom_vecs[i][0].data, net.top_vecs[i][0].data, layer.blobs[0].data)]
                    old = ranges.get(net.layer_names[i], seen)
                    ranges[net.layer_names[i]] = tuple(max(a, b) for a, b in zip(old, seen))
        finally:
            net.close()
        if not ranges:
            raise ValueError(f"{self.model}: no layer the tool quantizes (Convolution or InnerProduct) in "
                             "the TRAIN net")
        return ranges

    def test_param(self):
        param = read_net_param(self.model)
        param.state.phase = TEST
        return param

    def passes(self, score):
        return score + self.error_margin / 100 >= self.baseline

    def trials(self, widths, edit):
        """Score `edit(param, width)` for each width until one fails; [(width, score)]."""
        results = []
        for width in widths:
            param = self.test_param()
            edit(param, width)
            results.append((width, self.score(param, self.iterations)))
            if not self.passes(results[-1][1]):
                break
        return results

    def chosen(self, results, default=32):
        """The smallest width of the passing run from the widest down (default when none passes)."""
        width = default
        for w, score in results:
            if not self.passes(score):
                break
            width = w
        return width

    # ---- the tool -------------------------------------------------------------------
    def quantize_net(self):
        directory = os.path.dirname(os.path.abspath(self.model_quantized))
        if not os.access(directory, os.W_OK):
            raise ValueError(f"Missing write permissions for {self.model_quantized}")
        self.baseline = self.score(self.test_param(), self.iterations)
        self.ranges = self.layer_ranges(read_net_param(self.model))
        param = getattr(self, "_" + self.trimming_mode)()
        param.ClearField("state")
        write_text(self.model_quantized, param)
        self.say(f"Wrote {self.model_quantized}", "Please fine-tune.")
        return self.summary

    def say(self, *lines):
        for line in lines:
            log.info("%s", line)
            self.summary.append(line)

    def _quantized_layers(self, param):
        """(LayerParameter, Ristretto type, group) for each layer the tool quantizes."""
        for layer in param.layer:
            found = ristretto_type(layer.type)
            if found is not None:
                if layer.name not in self.ranges:
                    raise ValueError(f"layer '{layer.name}' (type {layer.type}) is not in the TRAIN net, so the "
                                     "tool has no ranges for it")
                yield layer, found[0], found[1]

    def integer_lengths(self, name):
        """(il_in, il_out, il_params): ceil(log2 max), one more for the weights' sign (a blob that
        was all zeros gets 0, where Ristretto's log2(0) is undefined)."""
        def log2(value):
            return math.log2(value) if value > 0 else 0.0
        max_in, max_out, max_params = self.ranges[name]
        return math.ceil(log2(max_in)), math.ceil(log2(max_out)), math.ceil(log2(max_params) + 1)

    def edit_dynamic_fixed_point(self, param, bw_conv=None, bw_fc=None, bw_act=None):
        """Ristretto's EditNetDescriptionDynamicFixedPoint: weights of the CONV and/or FC layers,
        and/or the activations of both, in <bw, bw - il>."""
        for layer, new_type, group in self._quantized_layers(param):
            bw_params = bw_conv if group == "CONV" else bw_fc
            if bw_params is None and bw_act is None:
                continue
            il_in, il_out, il_params = self.integer_lengths(layer.name)
            layer.type = new_type
            q = layer.quantization_param
            if bw_params is not None:
                q.bw_params, q.fl_params = bw_params, bw_params - il_params
            if bw_act is not None:
                q.bw_layer_in, q.fl_layer_in = bw_act, bw_act - il_in
                q.bw_layer_out, q.fl_layer_out = bw_act, bw_act - il_out

    def _dynamic_fixed_point(self):
        for name in self.ranges:
            il_in, il_out, il_params = self.integer_lengths(name)
            log.info("Layer %s, integer length input=%d, integer length output=%d, integer length "
                     "parameters=%d", name, il_in, il_out, il_params)
        widths = (16, 8, 4, 2, 1)
        conv = self.trials(widths, lambda p, w: self.edit_dynamic_fixed_point(p, bw_conv=w))
        fc = self.trials(widths, lambda p, w: self.edit_dynamic_fixed_point(p, bw_fc=w))
        act = self.trials(widths, lambda p, w: self.edit_dynamic_fixed_point(p, bw_act=w))
        bw_conv, bw_fc, bw_act = self.chosen(conv), self.chosen(fc), self.chosen(act)
        param = self.test_param()
        self.edit_dynamic_fixed_point(param, bw_conv, bw_fc, bw_act)
        accuracy = self.score(param, self.iterations)
        self.say("------------------------------", "Network accuracy analysis for",
                 "Convolutional (CONV) and fully", "connected (FC) layers.",
                 f"Baseline 32bit float: {self.baseline:g}")
        for title, results in (("Dynamic fixed point CONV weights:", conv), ("Dynamic fixed point FC weights:", fc),
                               ("Dynamic fixed point layer activations:", act)):
            self.say(title, *(f"{w}bit: \t{score:g}" for w, score in results))
        self.say("Dynamic fixed point net:", f"{bw_conv}bit CONV weights,", f"{bw_fc}bit FC weights,",
                 f"{bw_act}bit layer activations:", f"Accuracy: {accuracy:g}")
        return param

    def edit_minifloat(self, param, bitwidth, exp_bits):
        for layer, new_type, _ in self._quantized_layers(param):
            layer.type = new_type
            q = layer.quantization_param
            q.precision, q.mant_bits, q.exp_bits = Q.MINIFLOAT, bitwidth - exp_bits - 1, exp_bits

    def _minifloat(self):
        exp_bits = 4         # Ristretto's start: LeNet needs 4
        for max_in, max_out, _ in self.ranges.values():
            for value in (max_in, max_out):
                inner = math.log2(value) - 1 if value > 0 else -1.0
                if inner > 0:
                    exp_bits = max(exp_bits, math.ceil(math.log2(inner) + 1))
        widths = [w for w in (16, 8, 4, 2, 1) if w - 1 - exp_bits > 0]
        results = self.trials(widths, lambda p, w: self.edit_minifloat(p, w, exp_bits))
        best = self.chosen(results)
        param = read_net_param(self.model)
        self.edit_minifloat(param, best, exp_bits)
        self.say("------------------------------", "Network accuracy analysis for",
                 "Convolutional (CONV) and fully", "connected (FC) layers.",
                 f"Baseline 32bit float: {self.baseline:g}", "Minifloat net:",
                 *(f"{w}bit: \t{score:g}" for w, score in results))
        return param

    def _integer_power_of_2_weights(self):
        param = self.test_param()
        for layer, new_type, _ in self._quantized_layers(param):
            layer.type = new_type
            q = layer.quantization_param
            q.precision, q.exp_min, q.exp_max = Q.INTEGER_POWER_OF_2_WEIGHTS, -8, -1
        self.edit_dynamic_fixed_point(param, bw_act=8)       # activations: 8 bits, as Ristretto
        accuracy = self.score(param, self.iterations)
        self.say("------------------------------", "Network accuracy analysis for",
                 "Integer-power-of-two weights", "in Convolutional (CONV) and",
                 "fully connected (FC) layers.", f"Baseline 32bit float: {self.baseline:g}",
                 "Quantized net:", f"4bit: \t{accuracy:g}")
        return param
