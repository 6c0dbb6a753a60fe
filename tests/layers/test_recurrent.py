"""RNN, LSTM and LSTMUnit: Caffe's blob layout and parameter order, forward against a per-stream
loop, cont = 0 resetting the state, the state carried across forwards, and numerical gradients."""
import numpy as np
import pytest

from layer_check import build, check_gradient
from layer_refs import ref_lstm, ref_rnn, sigm

rng = np.random.default_rng(11)
T, N, D, H = 4, 3, 2, 3
FILLERS = ('weight_filler { type: "uniform" min: -0.6 max: 0.6 } '
           'bias_filler { type: "uniform" min: -0.5 max: 0.5 }')


def recurrent(kind, expose=False, num_output=H):
    return (f'type: "{kind}" recurrent_param {{ num_output: {num_output} {FILLERS} '
            f'expose_hidden: {str(expose).lower()} }}')


def inputs(static=False):
    x = rng.standard_normal((T, N, D))
    cont = np.ones((T, N))
    cont[0] = 0          # every stream starts a sequence
    cont[2, 1] = 0       # stream 1 starts another one at t = 2
    return [x, cont] + ([rng.standard_normal((N, 2))] if static else [])


# ---------------------------------------------------------------------------
# per-stream, per-step references written from Caffe's unrolled-net comments
# ---------------------------------------------------------------------------
def params_of(layer):
    return [b.data for b in layer.blobs]


# ---------------------------------------------------------------------------
def test_lstm_parameters_in_caffes_order_and_shapes():
    layer, _, top = build(recurrent("LSTM"), inputs())
    assert [b.shape for b in layer.blobs] == [(4 * H, D), (4 * H,), (4 * H, H)]       # W_xc, b_c, W_hc
    assert top[0].shape == (T, N, H)
    layer, _, _ = build(recurrent("LSTM"), inputs(static=True))
    assert [b.shape for b in layer.blobs] == [(4 * H, D), (4 * H,), (4 * H, 2), (4 * H, H)]


def test_rnn_parameters_in_caffes_order_and_shapes():
    layer, _, top = build(recurrent("RNN", num_output=5), inputs(static=True))
    assert [b.shape for b in layer.blobs] == [(5, D), (5,), (5, 2), (5, 5), (5, 5), (5,)]
    assert top[0].shape == (T, N, 5)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward_matches_the_step_by_step_reference(static):
    bottoms = inputs(static)
    layer, bottom, top = build(recurrent("LSTM"), bottoms)
    layer.Forward(bottom, top)
    out, _, _ = ref_lstm(*bottoms[:2], params_of(layer), bottoms[2] if static else None)
    np.testing.assert_allclose(top[0].data, out, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward_matches_the_step_by_step_reference(static):
    bottoms = inputs(static)
    layer, bottom, top = build(recurrent("RNN"), bottoms)
    layer.Forward(bottom, top)
    out, _ = ref_rnn(*bottoms[:2], params_of(layer), bottoms[2] if static else None)
    np.testing.assert_allclose(top[0].data, out, rtol=1e-12, atol=1e-14)


def test_cont_zero_resets_the_state():
    x, cont = inputs()
    layer, bottom, top = build(recurrent("LSTM"), [x, cont])
    layer.Forward(bottom, top)
    # stream 1 restarted at t = 2: its outputs from t = 2 on equal a fresh run over x[2:]
    fresh, _, _ = ref_lstm(np.concatenate([x[2:], x[:2]]), np.array([[0.0] * N, [1] * N, [0] * N, [1] * N]),
                           params_of(layer))
    np.testing.assert_allclose(top[0].data[2:, 1], fresh[:2, 1], rtol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_over_to_the_next_forward_until_reset(kind):
    x = rng.standard_normal((2 * T, N, D))
    cont = np.ones((2 * T, N))
    cont[0] = 0
    layer, bottom, top = build(recurrent(kind), [x[:T], cont[:T]])
    long_layer, long_bottom, long_top = build(recurrent(kind), [x, cont])
    for mine, theirs in zip(layer.blobs, long_layer.blobs):
        theirs.data[...] = mine.data
    long_layer.Forward(long_bottom, long_top)
    layer.Forward(bottom, top)
    bottom[0].data[...], bottom[1].data[...] = x[T:], cont[T:]
    layer.Forward(bottom, top)            # continues the sequence: cont = 1 at its first step
    np.testing.assert_allclose(top[0].data, long_top[0].data[T:], rtol=1e-12)
    layer.reset()
    layer.Forward(bottom, top)
    assert not np.allclose(top[0].data, long_top[0].data[T:])


def test_exposed_hidden_state_in_and_out():
    x, cont = inputs()
    cont[0] = 1                            # the given h_0, c_0 enter the first step
    h0, c0 = rng.standard_normal((1, N, H)), rng.standard_normal((1, N, H))
    layer, bottom, top = build(recurrent("LSTM", expose=True), [x, cont, h0, c0], num_tops=3)
    layer.Forward(bottom, top)
    out, hT, cT = ref_lstm(x, cont, params_of(layer), h0=h0, c0=c0)
    np.testing.assert_allclose(top[0].data, out, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, hT[None], rtol=1e-12)
    np.testing.assert_allclose(top[2].data, cT[None], rtol=1e-12)
    layer, bottom, top = build(recurrent("RNN", expose=True), [x, cont, h0], num_tops=2)
    layer.Forward(bottom, top)
    out, hT = ref_rnn(x, cont, params_of(layer), h0=h0)
    np.testing.assert_allclose(top[0].data, out, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, hT[None], rtol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_gradients_over_several_steps_with_resets(kind, static):
    check_gradient(recurrent(kind), inputs(static), check_bottoms=[0, 2] if static else [0])


@pytest.mark.parametrize("kind, states", [("LSTM", 2), ("RNN", 1)])
def test_gradients_with_exposed_hidden_state(kind, states):
    x, cont, x_static = inputs(static=True)
    cont[0] = 1
    cont[1, 0] = 0.5                       # the gradient is exact for any cont value
    hidden = [rng.standard_normal((1, N, H)) for _ in range(states)]
    check_gradient(recurrent(kind, expose=True), [x, cont, x_static] + hidden, num_tops=1 + states,
                   check_bottoms=[0, 2] + list(range(3, 3 + states)))


def test_recurrent_errors():
    x, cont = inputs()
    with pytest.raises(ValueError, match="num_output"):
        build('type: "LSTM"', [x, cont])
    with pytest.raises(ValueError, match=r"cont of shape \(T, N\)"):
        build(recurrent("LSTM"), [x, cont[:, :2]])
    with pytest.raises(ValueError, match="initial state"):
        build(recurrent("LSTM", expose=True), [x, cont, np.zeros((1, N, H))], num_tops=3)
    layer, bottom, top = build(recurrent("RNN"), [x, cont])
    layer.Forward(bottom, top)
    with pytest.raises(ValueError, match="sequence indicators"):
        layer.Backward(top, [True, True], bottom)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


# ---------------------------------------------------------------------------
# LSTMUnit
# ---------------------------------------------------------------------------
def test_lstm_unit_forward_and_gradient():
    c_prev = rng.standard_normal((1, N, H))
    gates = rng.standard_normal((1, N, 4 * H))
    cont = np.array([[1.0, 0.0, 1.0]])
    layer, bottom, top = build('type: "LSTMUnit"', [c_prev, gates, cont], num_tops=2)
    layer.Forward(bottom, top)
    g = gates[0]
    i, f, o, gg = sigm(g[:, :H]), sigm(g[:, H:2 * H]), sigm(g[:, 2 * H:3 * H]), np.tanh(g[:, 3 * H:])
    c = cont[0][:, None] * f * c_prev[0] + i * gg
    np.testing.assert_allclose(top[0].data[0], c, rtol=1e-12)
    np.testing.assert_allclose(top[1].data[0], o * np.tanh(c), rtol=1e-12)
    check_gradient('type: "LSTMUnit"', [c_prev, gates, cont], num_tops=2, check_bottoms=[0, 1])
    with pytest.raises(ValueError, match="gate_input of width"):
        build('type: "LSTMUnit"', [c_prev, gates[:, :, :-1], cont], num_tops=2)
