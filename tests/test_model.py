"""CharLSTM against a float64 NumPy model built from the equations, plus dropout and tracing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm
from lstm import recurrence
from lstm import state as run_state
from lstm.cells.lstm import LSTM
from tests.numpy_reference import lstm_sequence, to_numpy_gates

B, T, V = 3, 4, 7
HIDDEN = (6, 5)


def make_model(encoding, **kwargs):
    model = lstm.CharLSTM(V, hidden_sizes=HIDDEN, encoding=encoding, embed_dim=4,
                          rngs=nnx.Rngs(0), **kwargs)
    # Non-zero biases everywhere so the reference must get the bias placement right.
    rng = np.random.default_rng(1)
    for layer in model.layers:
        layer.set_gate_params({n: {"b": rng.normal(0, 0.3, layer.hidden_size)} for n in "ifgo"})
    model.head_b[...] = jnp.asarray(rng.normal(0, 0.3, V), jnp.float32)
    return model


def tokens_and_state(seed=2):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    state = tuple(lstm.LSTMState(jnp.asarray(rng.normal(0, 0.5, (B, h)), jnp.float32),
                                 jnp.asarray(rng.normal(0, 0.5, (B, h)), jnp.float32)) for h in HIDDEN)
    return tokens, state


def reference_forward(model, tokens, state, gate_activation="sigmoid"):
    """The model recomputed in float64 NumPy: encode, run each layer, dense head."""
    if model.encoding == "scaled":
        x = tokens[..., None] / V
    elif model.encoding == "onehot":
        x = np.eye(V)[tokens]
    else:
        x = np.asarray(model.embedding[...], np.float64)[tokens]
    layers = []
    for layer, layer_state in zip(model.layers, state):
        steps = lstm_sequence(to_numpy_gates(layer.gate_params()), x, layer_state.h, layer_state.c,
                              gate_activation)
        layers.append(steps)
        x = steps["h"]
    logits = x @ np.asarray(model.head_W[...], np.float64) + np.asarray(model.head_b[...], np.float64)
    return logits, layers


@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_forward_matches_numpy_reference(encoding):
    model = make_model(encoding)
    tokens, state = tokens_and_state()
    logits, final = model(tokens, state)
    expected_logits, layers = reference_forward(model, tokens, state)
    assert logits.shape == (B, T, V)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
    for got, steps in zip(final, layers):
        np.testing.assert_allclose(got.h, steps["h"][:, -1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.c, steps["c"][:, -1], rtol=1e-5, atol=1e-6)


def test_hard_sigmoid_from_the_config_reaches_every_layer_and_the_decoder():
    """`model.gate_activation=hard_sigmoid` (the tutorial's Keras gates) through the same
    `build_model` train.py uses: the forward pass and token-by-token decoding both match the
    float64 NumPy model with Keras's hard sigmoid, and differ from the logistic one."""
    from configs import default
    config = default.get_config()
    config.model.hidden_sizes, config.model.encoding = HIDDEN, "onehot"
    config.model.gate_activation = "hard_sigmoid"
    config.model.matmul_dtype = "float32"  # the NumPy reference multiplies in full precision
    model = run_state.build_model(config, V)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # large biases, so some gates clip at exactly 0 or 1
        layer.set_gate_params({n: {"b": rng.normal(0, 2.0, layer.hidden_size)} for n in "ifo"})
    tokens, state = tokens_and_state()
    logits, _ = model(tokens, state)
    expected, layers = reference_forward(model, tokens, state, "hard_sigmoid")
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert any(np.isin(steps[n], (0.0, 1.0)).any() for steps in layers for n in "ifo")
    logistic, _ = reference_forward(model, tokens, state, "sigmoid")
    assert np.abs(logits - logistic).max() > 1e-2
    decoded, table = [], model.input_table()
    for t in range(T):
        step_logits, state = model.decode_step(jnp.asarray(tokens[:, t]), state, table)
        decoded.append(step_logits)
    np.testing.assert_allclose(np.stack(decoded, axis=1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoding", ["scaled", "embed"])
def test_last_only_gives_the_reference_logits_of_the_last_position(encoding):
    # The `last` objective's shortcut: the head runs on the final position alone.
    model = make_model(encoding)
    tokens, state = tokens_and_state()
    logits, final = model(tokens, state, last_only=True)
    expected_logits, layers = reference_forward(model, tokens, state)
    assert logits.shape == (B, 1, V)
    np.testing.assert_allclose(logits[:, 0], expected_logits[:, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final[-1].h, layers[-1]["h"][:, -1], rtol=1e-5, atol=1e-6)


def test_parameter_shapes_per_encoding():
    scaled, onehot, embed = (make_model(e) for e in ("scaled", "onehot", "embed"))
    assert scaled.layers[0].W_x[...].shape == (1, 4 * HIDDEN[0])
    assert onehot.layers[0].W_x[...].shape == (V, 4 * HIDDEN[0])
    assert embed.embedding[...].shape == (V, 4)
    assert embed.layers[0].W_x[...].shape == (4, 4 * HIDDEN[0])
    for model in (scaled, onehot, embed):
        assert model.layers[1].W_x[...].shape == (HIDDEN[0], 4 * HIDDEN[1])
        assert model.head_W[...].shape == (HIDDEN[1], V)


def test_scaled_encoding_feeds_exactly_index_over_vocab_size():
    model = lstm.CharLSTM(V, hidden_sizes=(2,), encoding="scaled", rngs=nnx.Rngs(0))
    # With W_x's input-gate column 1 and everything else zero, the input gate's pre-activation
    # at step 0 is the fed feature itself, so it can be read back through the trace.
    layer = model.layers[0]
    zeros = {n: {"W_x": np.zeros((1, 2)), "W_h": np.zeros((2, 2)), "b": np.zeros(2)} for n in "ifgo"}
    zeros["i"]["W_x"] = np.ones((1, 2))
    layer.set_gate_params(zeros)
    tokens = np.arange(V, dtype=np.int32)[:, None]
    gates = lstm.trace(model, tokens)[0]
    fed = np.log(gates["i"][:, 0, 0] / (1 - gates["i"][:, 0, 0]))  # inverse sigmoid
    np.testing.assert_allclose(fed, np.arange(V) / V, atol=1e-5)


def test_states_feed_back_to_continue_the_sequence():
    model = make_model("onehot")
    tokens, state = tokens_and_state()
    whole, whole_state = model(tokens, state)
    first, mid = model(tokens[:, :2], state)
    second, split_state = model(tokens[:, 2:], mid)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(split_state, whole_state):
        np.testing.assert_allclose(a.c, b.c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_dropout_only_in_training_and_deterministic_given_the_key(encoding):
    model = make_model(encoding, dropout=0.5, input_dropout=0.3)
    tokens, state = tokens_and_state()
    evaluation, _ = model(tokens, state)
    expected, _ = reference_forward(model, tokens, state)
    np.testing.assert_allclose(evaluation, expected, rtol=1e-5, atol=1e-5)  # train=False: no dropout
    key = jax.random.key(4)
    a, _ = model(tokens, state, train=True, dropout_key=key)
    b, _ = model(tokens, state, train=True, dropout_key=key)
    c, _ = model(tokens, state, train=True, dropout_key=jax.random.key(5))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, evaluation)
    with pytest.raises(ValueError, match="dropout_key"):
        model(tokens, state, train=True)


def test_dropout_drops_at_the_requested_rate_and_rescales():
    model = lstm.CharLSTM(V, hidden_sizes=(64,), encoding="onehot", dropout=0.25, rngs=nnx.Rngs(0))
    tokens = np.zeros((32, 16), np.int32)
    # The head sees the dropped h; with an identity head the logits expose the mask.
    model.head_W[...] = jnp.eye(64, V)
    clean = lstm.trace(model, tokens)[0]["h"][..., :V]
    dropped, _ = model(tokens, train=True, dropout_key=jax.random.key(0))
    dropped = np.asarray(dropped - model.head_b[...])
    kept = dropped != 0
    assert abs(1 - kept.mean() - 0.25) < 0.03
    np.testing.assert_allclose(dropped[kept], np.asarray(clean)[kept] / 0.75, rtol=1e-5, atol=1e-6)


def plain_forward(model, tokens, state, input_scale=None):
    """The model's forward pass written the plain way, for JAX's own autodiff: every input
    encoded as a dense vector and multiplied by W_x before the scan (one-hot as a matmul),
    the scan over the LSTM's step with no custom VJP. `input_scale` [B, T, 1] stands for input
    dropout's mask on the first layer's input."""
    spec = recurrence.Recurrence(LSTM())
    if model.encoding == "scaled":
        x = (tokens.astype(jnp.float32) / V)[..., None].astype(jnp.float64)
    elif model.encoding == "onehot":
        x = jax.nn.one_hot(tokens, V, dtype=jnp.float64)
    else:
        x = model.embedding[...][tokens]
    if input_scale is not None:
        x = x * input_scale
    x = jnp.swapaxes(x, 0, 1)
    finals = []
    for layer, layer_state in zip(model.layers, state):
        W_h = layer.W_h[...]
        step = lambda carry, xp, W_h=W_h: (recurrence.step(spec, {"W_h": W_h}, carry, xp)[0],) * 2
        final, states = jax.lax.scan(step, layer_state, x @ layer.W_x[...] + layer.b[...])
        finals.append(final)
        x = states.h
    return jnp.swapaxes(x @ model.head_W[...] + model.head_b[...], 0, 1), finals


@pytest.mark.parametrize("encoding,input_dropout", [  # each of the first layer's input paths
    ("scaled", 0.5), ("onehot", 0.0), ("onehot", 0.5), ("embed", 0.0), ("embed", 0.5)])
def test_gradients_equal_autodiff_of_the_plain_forward_in_float64(encoding, input_dropout):
    """Every parameter's gradient through the first layer's input path (the row gathers of
    one-hot and embedded tokens, input dropout) and the custom backward of the scan,
    against JAX's autodiff of `plain_forward`, to 1e-10 in float64."""
    from tests.test_cell import float64
    key = jax.random.key(3)
    with float64():
        model = make_model(encoding, input_dropout=input_dropout)
        graphdef, params = nnx.split(model)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        tokens, state = tokens_and_state()
        state = jax.tree.map(lambda a: a.astype(jnp.float64), state)
        rng = np.random.default_rng(5)
        weights = [jnp.asarray(rng.normal(size=shape)) for shape in ((B, T, V), (B, HIDDEN[-1]))]
        # Input dropout's mask: drawn here from the same key the model uses for it
        # (fold_in(key, 0)), so the reference drops the same inputs; any other mask fails.
        scale = None
        if input_dropout:
            keep = jax.random.bernoulli(jax.random.fold_in(key, 0), 1 - input_dropout,
                                        (T, B, 4 if encoding == "embed" else 1))
            scale = jnp.swapaxes(jnp.where(keep, 1 / (1 - input_dropout), 0.0), 0, 1)

        def loss(forward):
            def scalar(params):
                logits, finals = forward(nnx.merge(graphdef, params))
                return jnp.sum(logits * weights[0]) + jnp.sum(jnp.sin(finals[-1].c) * weights[1])
            return jax.grad(scalar)(params)

        ours = loss(lambda m: m(tokens, state, train=bool(input_dropout), dropout_key=key))
        reference = loss(lambda m: plain_forward(m, jnp.asarray(tokens), state, scale))
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(reference)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=jax.tree_util.keystr(path))


def test_trace_matches_equations_and_the_forward_pass():
    model = make_model("embed")
    tokens, state = tokens_and_state()
    traced = lstm.trace(model, tokens, state)
    logits, final = model(tokens, state)
    _, layers = reference_forward(model, tokens, state)
    assert len(traced) == len(HIDDEN)
    for got, steps, hidden, final_state in zip(traced, layers, HIDDEN, final):
        for name in ("i", "f", "g", "o", "c", "h"):
            assert got[name].shape == (B, T, hidden)
            np.testing.assert_allclose(got[name], steps[name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(got["h"][:, -1], final_state.h)
    head = traced[-1]["h"] @ model.head_W[...] + model.head_b[...]
    np.testing.assert_allclose(head, logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_decode_step_token_by_token_equals_the_scanned_forward_pass(encoding):
    model = make_model(encoding)
    tokens, state = tokens_and_state()
    logits, final = model(tokens, state)
    table = model.input_table()
    states = state
    for t in range(T):
        step_logits, states = model.decode_step(jnp.asarray(tokens[:, t]), states, table)
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
    for a, b in zip(states, final):
        np.testing.assert_allclose(a.h, b.h, rtol=1e-5, atol=1e-6)


def test_bad_arguments_fail_with_clear_messages():
    with pytest.raises(ValueError, match="encoding"):
        lstm.CharLSTM(V, encoding="binary", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        lstm.CharLSTM(V, dropout=1.0, rngs=nnx.Rngs(0))
    model = make_model("scaled")
    with pytest.raises(ValueError, match="batch, time"):
        model(np.zeros((T,), np.int32))
