"""Recurrent layers: RNN, LSTM and LSTMUnit, with BVLC Caffe's blobs and parameters.

Caffe builds RNN and LSTM as an unrolled sub-net; here the same maths runs as
one loop over time steps, with the input transform of all steps done as a
single matrix product.  recurrent_param.debug_info is accepted and has no
effect (there is no unrolled net to log).  Blob layout and parameters match Caffe's, so weights
convert both ways:

    bottoms  x (T, N, ...), cont (T, N) [, x_static (N, ...)] [, h_0 (1, N, H) [, c_0 (1, N, H)]]
    tops     (T, N, H) [, h_T (1, N, H) [, c_T (1, N, H)]]     (the extra ones with expose_hidden)
    LSTM parameters: W_xc (4H, D), b_c (4H) [, W_xc_static (4H, D_static)], W_hc (4H, H)
    RNN parameters:  W_xh (H, D), b_h (H) [, W_xh_static (H, D_static)], W_hh (H, H), W_ho (H, H), b_o (H)

with D = x.count(2).  cont_t = 0 starts a new sequence: the previous hidden
(and cell) state is multiplied by cont_t before it enters step t.  Without
expose_hidden the state at the end of one forward is the initial state of the
next (truncated backpropagation through time across batches, as in Caffe);
`reset()` zeroes it.

    layer { name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
            recurrent_param { num_output: 256
                              weight_filler { type: "uniform" min: -0.08 max: 0.08 } } }

One deliberate difference: with expose_hidden, Caffe passes no gradient from
h_T/c_T to the net nor to h_0/c_0 (their diffs are not shared with its
unrolled net); here they get their exact gradients.
"""

from ..backend import get_array_module
from ..layer import Layer, register


def sigmoid(x):
    """1 / (1 + exp(-x)), computed through tanh so it never overflows."""
    xp = get_array_module(x)
    return 0.5 * xp.tanh(0.5 * x) + 0.5


# ---------------------------------------------------------------------------
# one LSTM step (shared by LSTM and LSTMUnit)
# ---------------------------------------------------------------------------
def lstm_unit_forward(c_prev, gate_input, cont):
    """Caffe's LSTMUnit: gate_input (N, 4H) holds (i, f, o, g) pre-activations.

        i, f, o = sigmoid(...), g = tanh(...)
        c = cont * f * c_prev + i * g;   h = o * tanh(c)
    Returns (c, h, acts) with acts (N, 4H) = the activated (i, f, o, g).
    """
    xp = get_array_module(gate_input)
    H = c_prev.shape[-1]
    acts = xp.concatenate([sigmoid(gate_input[:, :3 * H]), xp.tanh(gate_input[:, 3 * H:])], axis=1)
    i, f, o, g = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
    c = cont[:, None] * f * c_prev + i * g
    h = o * xp.tanh(c)
    return c, h, acts


def lstm_unit_backward(dc, dh, c_prev, c, acts, cont):
    """Gradients of one LSTMUnit step: (d c_prev (N, H), d gate_input (N, 4H)).

    dc, dh are the gradients reaching c and h.  Exact for any cont (Caffe's
    GPU formula; its CPU formula agrees for cont in {0, 1}).
    """
    xp = get_array_module(acts)
    H = c.shape[-1]
    i, f, o, g = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
    cont = cont[:, None]
    tanh_c = xp.tanh(c)
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    d_gates = xp.concatenate([
        dc_total * g * i * (1 - i),
        dc_total * cont * c_prev * f * (1 - f),
        dh * tanh_c * o * (1 - o),
        dc_total * i * (1 - g * g),
    ], axis=1)
    return dc_total * cont * f, d_gates


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM step, as used inside Caffe's unrolled LSTM.

    bottoms c_prev (1, N, H), gate_input (1, N, 4H) in (i, f, o, g) order, cont (1, N);
    tops c (1, N, H), h (1, N, H).  No gradient to cont.
    """
    num_bottom = (3, 3)
    num_top = (2, 2)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        n = bottom[0].shape[1] if len(bottom[0].shape) > 1 else -1
        for i, blob in enumerate(bottom):
            axes = 2 if i == 2 else 3
            if len(blob.shape) != axes or blob.shape[0] != 1 or blob.shape[1] != n:
                raise ValueError(self.error(f"needs bottoms c_prev (1, N, H), gate_input (1, N, 4H) and "
                                            f"cont (1, N); got shapes {[b.shape for b in bottom]}"))
        self.hidden = bottom[0].shape[2]
        if bottom[1].shape[2] != 4 * self.hidden:
            raise ValueError(self.error(f"needs gate_input of width 4 * {self.hidden}, got {bottom[1].shape}"))
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        c_prev, gates, cont = bottom[0].data[0], bottom[1].data[0], bottom[2].data[0]
        c, h, self.acts = lstm_unit_forward(c_prev, gates, cont)
        top[0].data = c[None]
        top[1].data = h[None]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise ValueError(self.error("cannot backpropagate to the sequence indicators (bottom 2)"))
        if not (propagate_down[0] or propagate_down[1]):
            return
        dc_prev, d_gates = lstm_unit_backward(top[0].diff[0], top[1].diff[0], bottom[0].data[0],
                                              top[0].data[0], self.acts, bottom[2].data[0])
        if propagate_down[0]:
            bottom[0].diff = dc_prev[None]
        if propagate_down[1]:
            bottom[1].diff = d_gates[None]


# ---------------------------------------------------------------------------
# the recurrent layers
# ---------------------------------------------------------------------------
def _count(bottom_shapes, index, start):
    """The elements of bottom `index` from axis `start` on (None when the bottoms are not known)."""
    if not bottom_shapes:
        return None
    n = 1
    for d in tuple(bottom_shapes[index])[start:]:
        n *= int(d)
    return n


class RecurrentLayer(Layer):
    """What RNN and LSTM share: blob checks, parameters, the carried state, input transforms.

    Subclasses set `num_recur` (state blobs), `gate_factor` (rows of the input
    transform per hidden unit) and write `recur_forward` / `recur_backward`.
    """
    num_recur = 1
    gate_factor = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        self.hidden = p.num_output
        if self.hidden <= 0:
            raise ValueError(self.error("needs recurrent_param.num_output > 0"))
        self.expose_hidden = p.expose_hidden
        exposed = self.num_recur if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + exposed
        want_bottoms = 2 + self.static_input + exposed
        if len(bottom) != want_bottoms or len(top) != 1 + exposed:
            raise ValueError(self.error(
                f"takes bottoms x, cont[, x_static]{', and the initial state' if exposed else ''} and "
                f"{1 + exposed} top(s) (expose_hidden: {str(bool(exposed)).lower()}); "
                f"got {len(bottom)} bottom(s) and {len(top)} top(s)"))
        self._check_inputs(bottom)
        if not self.blobs:
            self.blobs = [self.fill_param(shape, filler, bottom[0].dtype, like=bottom[0])
                          for shape, filler in self._param_specs(bottom, p)]
        self.state = None

    def _check_inputs(self, bottom):
        x, cont = bottom[0].shape, bottom[1].shape
        if len(x) < 2:
            raise ValueError(self.error(f"needs x with at least 2 axes (timesteps, streams, ...), got {x}"))
        if cont != x[:2]:
            raise ValueError(self.error(f"needs cont of shape (T, N) = {x[:2]}, got {cont}"))
        if self.static_input and (len(bottom[2].shape) < 1 or bottom[2].shape[0] != x[1]):
            raise ValueError(self.error(f"needs x_static with {x[1]} rows (one per stream), "
                                        f"got shape {bottom[2].shape}"))

    @classmethod
    def param_shapes(cls, layer_param, bottom_shapes=None):
        """Caffe's order: the input transform (and the static input's) first, then the recurrence's."""
        p = layer_param.recurrent_param
        hidden = int(p.num_output)
        rows = cls.gate_factor * hidden
        shapes = [(rows, _count(bottom_shapes, 0, 2)), (rows,)]
        if cls._has_static_input(layer_param, bottom_shapes):
            shapes.append((rows, _count(bottom_shapes, 2, 1)))
        return shapes + [shape for shape, _ in cls.recurrence_params(hidden)]

    @classmethod
    def _has_static_input(cls, layer_param, bottom_shapes):
        exposed = cls.num_recur if layer_param.recurrent_param.expose_hidden else 0
        n = len(bottom_shapes) if bottom_shapes is not None else len(layer_param.bottom)
        return n > 2 + exposed

    def _param_specs(self, bottom, p):
        """[(shape, filler)] in param_shapes' order."""
        fillers = [p.weight_filler, p.bias_filler] + [p.weight_filler] * self.static_input
        fillers += [getattr(p, name) for _, name in self.recurrence_params(self.hidden)]
        return list(zip(self.param_shapes(self.layer_param, [b.shape for b in bottom]), fillers))

    def reshape(self, bottom, top):
        self._check_inputs(bottom)
        T, N = bottom[0].shape[:2]
        for blob, (shape, _) in zip(self.blobs, self._param_specs(bottom, self.layer_param.recurrent_param)):
            if blob.shape != shape:
                raise ValueError(self.error(f"has a parameter of shape {blob.shape} where the inputs "
                                            f"need {shape}"))
        state_shape = (1, N, self.hidden)
        if self.expose_hidden:
            for blob in bottom[2 + self.static_input:]:
                if blob.shape != state_shape:
                    raise ValueError(self.error(f"needs initial-state bottoms of shape {state_shape}, "
                                                f"got {blob.shape}"))
        top[0].reshape(T, N, self.hidden)
        for blob in top[1:]:
            blob.reshape(state_shape)
        if self.state is not None and self.state[0].shape != (N, self.hidden):
            self.state = None

    def reset(self):
        """Zero the carried hidden state (Caffe's RecurrentLayer::Reset)."""
        self.state = None

    def _initial_state(self, bottom):
        if self.expose_hidden:
            return [b.data[0] for b in bottom[2 + self.static_input:]]
        if self.state is None:
            xp = get_array_module(bottom[0].data)
            N = bottom[0].shape[1]
            self.state = [xp.zeros((N, self.hidden), dtype=bottom[0].dtype) for _ in range(self.num_recur)]
        return self.state

    def _input_transform(self, bottom):
        """W x_t + b for all steps at once (T, N, rows), plus the static term (N, rows)."""
        T, N = bottom[0].shape[:2]
        x2 = bottom[0].data.reshape(T * N, -1)
        pre = (x2 @ self.blobs[0].data.T + self.blobs[1].data).reshape(T, N, -1)
        if self.static_input:
            pre = pre + (bottom[2].data.reshape(N, -1) @ self.blobs[2].data.T)[None]
        return pre

    def _input_transform_backward(self, d_pre, propagate_down, bottom):
        """Gradients of _input_transform given d_pre (T, N, rows)."""
        T, N = bottom[0].shape[:2]
        flat = d_pre.reshape(T * N, -1)
        self._add_param_diff(0, flat.T @ bottom[0].data.reshape(T * N, -1))
        self._add_param_diff(1, flat.sum(axis=0))
        if propagate_down[0]:
            bottom[0].diff = (flat @ self.blobs[0].data).reshape(bottom[0].shape)
        if self.static_input:
            d_static = d_pre.sum(axis=0)
            self._add_param_diff(2, d_static.T @ bottom[2].data.reshape(N, -1))
            if propagate_down[2]:
                bottom[2].diff = (d_static @ self.blobs[2].data).reshape(bottom[2].shape)

    def _add_param_diff(self, i, grad):
        if self.learns_param(i):
            self.blobs[i].diff += grad

    def forward(self, bottom, top):
        initial = self._initial_state(bottom)
        cont = bottom[1].data.astype(bottom[0].dtype)
        output, final = self.recur_forward(self._input_transform(bottom), cont, initial)
        top[0].data = output
        for blob, value in zip(top[1:], final):
            blob.data = value[None]
        if not self.expose_hidden:
            self.state = final

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise ValueError(self.error("cannot backpropagate to the sequence indicators (bottom 1)"))
        final_diffs = [t.diff[0] for t in top[1:]] if self.expose_hidden else None
        d_pre, initial_diffs = self.recur_backward(top[0].diff, final_diffs)
        self._input_transform_backward(d_pre, propagate_down, bottom)
        if self.expose_hidden:
            first = 2 + self.static_input
            for j, grad in enumerate(initial_diffs):
                if propagate_down[first + j]:
                    bottom[first + j].diff = grad[None]


@register("LSTM")
class LSTMLayer(RecurrentLayer):
    """Long short-term memory over T steps (Caffe's LSTMLayer, gates in (i, f, o, g) order):

        gate_input_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
        c_t = cont_t f_t c_{t-1} + i_t g_t;   h_t = o_t tanh(c_t)     (see lstm_unit_forward)
    top[0] = (h_1 .. h_T); expose_hidden adds bottoms h_0, c_0 and tops h_T, c_T.
    """
    num_bottom = (2, 5)
    num_top = (1, 3)
    num_recur = 2
    gate_factor = 4

    @staticmethod
    def recurrence_params(hidden):
        return [((4 * hidden, hidden), "weight_filler")]                  # W_hc

    def recur_forward(self, pre, cont, initial):
        xp = get_array_module(pre)
        W_hc = self.blobs[-1].data
        T, N = cont.shape
        h_prev, c_prev = initial
        hs = xp.empty((T + 1, N, self.hidden), dtype=pre.dtype)
        cs = xp.empty((T + 1, N, self.hidden), dtype=pre.dtype)
        acts = xp.empty((T, N, 4 * self.hidden), dtype=pre.dtype)
        hs[0], cs[0] = h_prev, c_prev
        for t in range(T):
            gates = pre[t] + (cont[t][:, None] * hs[t]) @ W_hc.T
            cs[t + 1], hs[t + 1], acts[t] = lstm_unit_forward(cs[t], gates, cont[t])
        self.saved = (cont, hs, cs, acts)
        return hs[1:].copy(), [hs[T].copy(), cs[T].copy()]

    def recur_backward(self, top_diff, final_diffs):
        xp = get_array_module(top_diff)
        cont, hs, cs, acts = self.saved
        W_hc = self.blobs[-1].data
        T, N = cont.shape
        dh_next = xp.zeros((N, self.hidden), dtype=top_diff.dtype)
        dc_next = xp.zeros_like(dh_next)
        if final_diffs:
            dh_next, dc_next = dh_next + final_diffs[0], dc_next + final_diffs[1]
        d_pre = xp.empty(acts.shape, dtype=top_diff.dtype)
        dW_hc = xp.zeros(W_hc.shape, dtype=top_diff.dtype)
        for t in range(T - 1, -1, -1):
            dc_next, d_pre[t] = lstm_unit_backward(dc_next, top_diff[t] + dh_next, cs[t], cs[t + 1],
                                                   acts[t], cont[t])
            h_conted = cont[t][:, None] * hs[t]
            dW_hc += d_pre[t].T @ h_conted
            dh_next = cont[t][:, None] * (d_pre[t] @ W_hc)
        self._add_param_diff(len(self.blobs) - 1, dW_hc)
        return d_pre, [dh_next, dc_next]


@register("RNN")
class RNNLayer(RecurrentLayer):
    """Elman RNN over T steps (Caffe's RNNLayer):

        h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
        o_t = tanh(W_ho h_t + b_o)
    top[0] = (o_1 .. o_T); expose_hidden adds bottom h_0 and top h_T.
    """
    num_bottom = (2, 4)
    num_top = (1, 2)
    num_recur = 1
    gate_factor = 1

    @staticmethod
    def recurrence_params(hidden):
        H = hidden
        return [((H, H), "weight_filler"), ((H, H), "weight_filler"), ((H,), "bias_filler")]   # W_hh, W_ho, b_o

    def recur_forward(self, pre, cont, initial):
        xp = get_array_module(pre)
        W_hh, W_ho, b_o = (b.data for b in self.blobs[-3:])
        T, N = cont.shape
        hs = xp.empty((T + 1, N, self.hidden), dtype=pre.dtype)
        hs[0] = initial[0]
        for t in range(T):
            hs[t + 1] = xp.tanh(pre[t] + (cont[t][:, None] * hs[t]) @ W_hh.T)
        out = xp.tanh(hs[1:] @ W_ho.T + b_o)
        self.saved = (cont, hs, out)
        return out, [hs[T].copy()]

    def recur_backward(self, top_diff, final_diffs):
        xp = get_array_module(top_diff)
        cont, hs, out = self.saved
        W_hh, W_ho = self.blobs[-3].data, self.blobs[-2].data
        T, N = cont.shape
        H = self.hidden
        d_out = top_diff * (1 - out * out)
        n = len(self.blobs)
        self._add_param_diff(n - 2, d_out.reshape(-1, H).T @ hs[1:].reshape(-1, H))
        self._add_param_diff(n - 1, d_out.reshape(-1, H).sum(axis=0))
        dh_from_out = d_out @ W_ho
        dh_next = xp.zeros((N, H), dtype=top_diff.dtype)
        if final_diffs:
            dh_next = dh_next + final_diffs[0]
        d_pre = xp.empty((T, N, H), dtype=top_diff.dtype)
        dW_hh = xp.zeros(W_hh.shape, dtype=top_diff.dtype)
        for t in range(T - 1, -1, -1):
            d_pre[t] = (dh_from_out[t] + dh_next) * (1 - hs[t + 1] * hs[t + 1])
            dW_hh += d_pre[t].T @ (cont[t][:, None] * hs[t])
            dh_next = cont[t][:, None] * (d_pre[t] @ W_hh)
        self._add_param_diff(n - 3, dW_hh)
        return d_pre, [dh_next]
