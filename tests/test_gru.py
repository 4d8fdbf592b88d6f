"""The GRU (lstm/cells/gru.py), the contract's proof that a cell whose carry is not (h, c) fits:
every gate and h against float64 NumPy equations (tests/numpy_reference.py), its derived
backward against autodiff of a plain scan and finite differences, zoneout on its one state,
tracing, decoding, a stateful run that resumes exactly, sampling and checkpoints.

Sizes are all different (batch 3, time 4, input 5, hidden 6) so a swapped axis fails loudly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm
from configs import tiny
from lstm import recurrence, sample, train
from lstm import state as run_state
from lstm.cells.gru import GRUState
from lstm.layer import LSTMCell
from tests.numpy_reference import gru_sequence, to_numpy_gates
from tests.test_cell import float64, random_inputs
from tests.test_variants import check_gradients, random_cell

B, T, I, H = 3, 4, 5, 6


def test_parameters_and_their_initial_values():
    layer = LSTMCell(I, H, rngs=nnx.Rngs(0), cell="gru")
    assert layer.W_x[...].shape == (I, 3 * H) and layer.W_h[...].shape == (H, 3 * H) and layer.b[...].shape == (3 * H,)
    gates = to_numpy_gates(layer.gate_params())
    assert list(gates) == ["r", "z", "n"]
    assert {name: set(pieces) for name, pieces in gates.items()} == {
        "r": {"W_x", "W_h", "b"}, "z": {"W_x", "W_h", "b"}, "n": {"W_x", "W_h", "b", "b_h"}}
    for pieces in gates.values():
        np.testing.assert_array_equal(pieces["b"], 0.0)  # Keras's GRU: zero biases
    np.testing.assert_array_equal(gates["n"]["b_h"], 0.0)
    W_h = np.asarray(layer.W_h[...], np.float64)  # one orthogonal H×3H draw: orthonormal rows
    np.testing.assert_allclose(W_h @ W_h.T, np.eye(H), atol=1e-5)
    carry = layer.initial_state(B)
    assert isinstance(carry, GRUState) and carry.h.shape == (B, H) and not np.any(np.asarray(carry.h))


def run_traced(layer, xs, h0):
    x_proj = layer.project_inputs(jnp.swapaxes(jnp.asarray(xs), 0, 1))
    final, (states, gates) = layer.scan(x_proj, GRUState(jnp.asarray(h0)), trace=True)
    steps = gates._asdict() | states._asdict()
    return final, {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in steps.items()}


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
def test_every_gate_and_h_match_the_equations_in_float64(gate_activation):
    with float64():
        layer = random_cell("gru", dtype=jnp.float64, gate_activation=gate_activation)
        xs, h0, _ = random_inputs(dtype=np.float64)
        final, steps = run_traced(layer, xs, h0)
        expected = gru_sequence(to_numpy_gates(layer.gate_params()), xs, h0, gate_activation)
        for name in ("r", "z", "n", "h"):
            np.testing.assert_allclose(steps[name], expected[name], rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(final.h, expected["h"][:, -1], rtol=1e-12, atol=1e-12)
    # b_hn sits inside the reset gate: moving it into b_n changes n wherever r ≠ 1.
    gates = to_numpy_gates(layer.gate_params())
    gates["n"]["b"] = gates["n"]["b"] + gates["n"].pop("b_h")
    gates["n"]["b_h"] = np.zeros(H)
    assert np.abs(gru_sequence(gates, xs, h0, gate_activation)["n"] - expected["n"]).max() > 1e-3


def gru_losses(graphdef, weights, zone=None):
    """(loss through the layer's scan, loss through autodiff of a plain scan of the same step)
    of (parameters, xs, h0); zone: zoneout's per-step masks for h, or None."""
    def loss(forward):
        def scalar(params, xs, h0):
            layer = nnx.merge(graphdef, params)
            final, hs = forward(layer, layer.project_inputs(jnp.swapaxes(xs, 0, 1)), GRUState(h0))
            return jnp.sum(hs * weights[0]) + jnp.sum(jnp.sin(final.h) * weights[1])
        return scalar

    def plain(layer, x_proj, carry):
        params = layer.params()

        def body(carry, inputs):
            xp, keep = inputs
            new, _ = recurrence.step(layer.recurrence, params, carry, xp, None if zone is None else {"h": keep})
            return new, new.h
        return jax.lax.scan(body, carry, (x_proj, zone))

    derived = lambda layer, x_proj, carry: layer.scan(x_proj, carry, zone=None if zone is None else {"h": zone})
    return loss(derived), loss(plain)


@pytest.mark.parametrize("with_zoneout", [False, True])
def test_derived_backward_equals_autodiff_and_finite_differences_in_float64(with_zoneout):
    """Every parameter (b_hn included), the inputs and h0: all entries against autodiff of a
    plain scan, and a few random entries of each against central differences. h_{t-1} reaches
    h_t elementwise (through z) and through W_h: the backward must add both."""
    with float64():
        layer = random_cell("gru", dtype=jnp.float64)
        xs, h0, _ = random_inputs(dtype=np.float64)
        rng = np.random.default_rng(5)
        weights = (jnp.asarray(rng.normal(size=(T, B, H))), jnp.asarray(rng.normal(size=(B, H))))
        zone = jnp.asarray(rng.random((T, B, H)) < 0.4, jnp.float64) if with_zoneout else None
        graphdef, params = nnx.split(layer)
        args = (params, jnp.asarray(xs), jnp.asarray(h0))
        derived, plain = gru_losses(graphdef, weights, zone)
        check_gradients(derived, plain, args, rng, "gru")

V = 7


def gru_model(**fields):
    model = lstm.CharLSTM(V, hidden_sizes=(6, 5), encoding="embed", embed_dim=4, cell="gru", rngs=nnx.Rngs(0),
                          **fields)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # b_hn away from zero, so a trace or decode that skips it differs
        layer.set_gate_params({"n": {"b_h": rng.normal(0, 0.5, layer.hidden_size)}})
    return model


def test_trace_shows_the_grus_gates_and_decoding_matches_the_forward_pass():
    model = gru_model()
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, V, (2, 5)), jnp.int32)
    logits, finals = model(tokens)
    assert all(isinstance(final, GRUState) for final in finals)
    traces = lstm.trace(model, tokens)
    for layer, layer_trace in zip(model.layers, traces):
        assert set(layer_trace) == {"r", "z", "n", "h"}
        assert layer_trace["h"].shape == (2, 5, layer.hidden_size)
    states, table = model.initial_state(2), model.input_table()
    for t in range(tokens.shape[1]):
        step_logits, states = model.decode_step(tokens[:, t], states, table)
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states[-1].h, traces[-1]["h"][:, -1], rtol=1e-6, atol=1e-6)


def test_regularisers_name_the_grus_units():
    """zoneout_h and weight drop act on the GRU (its carry has h, it has W_h); zoneout_c names a
    unit it does not have: one line, naming the cell and its carry."""
    model = gru_model(zoneout_h=0.3, weight_drop=0.2, dropout_kind="locked", dropout=0.1)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, V, (2, 5)), jnp.int32)
    trained = [model(tokens, train=True, dropout_key=jax.random.key(seed))[0] for seed in (0, 0, 1)]
    np.testing.assert_array_equal(trained[0], trained[1])
    assert np.abs(np.asarray(trained[0] - trained[2])).max() > 1e-4
    config = tiny.get_config()
    config.model.cell, config.model.zoneout_c = "gru", 0.1
    with pytest.raises(run_state.ConfigError, match=r"^model.zoneout_c needs a cell whose carry has c; "
                                                     r"gru carries \(h\)$"):
        run_state.validate_config(config)


def test_a_gru_trains_statefully_resumes_exactly_samples_and_loads(corpus_path, tmp_path):
    from tests.test_train import losses, restore_latest, tiny_config

    def config(max_steps):
        config = tiny_config(corpus_path, max_steps=max_steps, log_every_steps=1, eval_every_steps=2)
        config.model.cell, config.data.objective, config.data.stride = "gru", "stateful", 1
        config.checkpoint.every_steps = 2
        config.eval.sample_length = 0
        return config

    train.train_and_evaluate(config(4), tmp_path / "whole")
    train.train_and_evaluate(config(2), tmp_path / "split")
    train.train_and_evaluate(config(4), tmp_path / "split")
    (_, whole), (_, split) = (restore_latest(tmp_path / run, config(4)) for run in ("whole", "split"))
    assert ".carry[0].h" in whole and not any(key.startswith(".carry[0].c") for key in whole)
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(split[key]), err_msg=key)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    model, vocab, restored = run_state.load_model(tmp_path / "split", which="latest")
    assert restored.model.cell == "gru" and model.config.cell == "gru"
    assert np.abs(np.asarray(model.layers[0].gate_params()["n"]["b_h"])).max() > 0  # trained, restored
    generator = sample.Generator.from_workdir(tmp_path / "split", which="latest")
    text = generator.generate("alice", 30, temperature=0.8, rng=1)
    assert len(text) == 30 and set(text) <= set(vocab.chars)
