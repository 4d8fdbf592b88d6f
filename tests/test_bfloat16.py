"""matmul_dtype="bfloat16": bfloat16 matmul operands, float32 accumulation, float32 state.

The references are float64 NumPy equations whose matmul operands are rounded to bfloat16 by
ml_dtypes (not by JAX), and JAX's own autodiff of the same forward scan for the gradients."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

import lstm
from configs import small, tiny
from lstm import environment, model, recurrence, state
from lstm.cells.lstm import GATE_ORDER, LSTM, LSTMState
from lstm.layer import LSTMCell
from lstm.matmul import matmul
from tests.numpy_reference import sigmoid

B, T, I, H = 3, 5, 4, 6


def bf16(x):
    """Round to bfloat16 (round to nearest even) and widen to float64 again."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def test_matmul_rounds_operands_and_accumulates_in_float32():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 512)).astype(np.float32), rng.normal(size=(512, 5)).astype(np.float32)
    got = matmul(jnp.asarray(a), jnp.asarray(b), "bfloat16")
    assert got.dtype == jnp.float32
    # float32 accumulation of 512 products: ~1e-7 relative; bfloat16 accumulation would be ~1e-3
    assert rel_error(got, bf16(a) @ bf16(b)) < 1e-6
    assert rel_error(got, a.astype(np.float64) @ b) > 1e-4  # the operands really were rounded
    np.testing.assert_array_equal(matmul(jnp.asarray(a), jnp.asarray(b)), jnp.asarray(a) @ jnp.asarray(b))


def random_cell(matmul_dtype):
    cell = LSTMCell(I, H, rngs=nnx.Rngs(0), matmul_dtype=matmul_dtype)
    rng = np.random.default_rng(1)
    cell.set_gate_params({n: {"W_x": rng.normal(0, 0.5, (I, H)), "W_h": rng.normal(0, 0.5, (H, H)),
                              "b": rng.normal(0, 0.5, H)} for n in GATE_ORDER})
    return cell


def test_bfloat16_scan_matches_numpy_equations_with_rounded_operands():
    rng = np.random.default_rng(2)
    xs, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(0, 0.5, (B, H)), rng.normal(0, 0.5, (B, H))
    cell = random_cell("bfloat16")
    gates = {n: {k: np.asarray(v, np.float64) for k, v in piece.items()}
             for n, piece in cell.gate_params().items()}
    h, c, want = h0, c0, []
    for t in range(T):  # the module docstring's equations, each product from rounded operands
        pre = {n: bf16(xs[t]) @ bf16(gates[n]["W_x"]) + bf16(h) @ bf16(gates[n]["W_h"]) + gates[n]["b"]
               for n in GATE_ORDER}
        c = sigmoid(pre["f"]) * c + sigmoid(pre["i"]) * np.tanh(pre["g"])
        h = sigmoid(pre["o"]) * np.tanh(c)
        want.append(h)
    state = LSTMState(jnp.asarray(h0, jnp.float32), jnp.asarray(c0, jnp.float32))
    final, hs = cell.scan(cell.project_inputs(jnp.asarray(xs, jnp.float32)), state)
    assert hs.dtype == final.h.dtype == final.c.dtype == jnp.float32  # the state stays float32
    # Same rounded operands, so only float32 elementwise error is left. (A float32 h could in
    # principle round to the other bfloat16 neighbour than the float64 h; these inputs do not.)
    np.testing.assert_allclose(hs, np.stack(want), atol=1e-5)
    fp32 = random_cell("float32")
    _, hs32 = fp32.scan(fp32.project_inputs(jnp.asarray(xs, jnp.float32)), state)
    assert np.abs(np.asarray(hs32) - np.asarray(hs)).max() > 1e-4  # bfloat16 was really used


def test_bfloat16_custom_backward_equals_autodiff_of_the_same_scan():
    rng = np.random.default_rng(3)
    W_h = jnp.asarray(rng.normal(0, 0.5, (H, 4 * H)), jnp.float32)
    x_proj = jnp.asarray(rng.normal(0, 1.0, (T, B, 4 * H)), jnp.float32)
    state = LSTMState(*(jnp.asarray(rng.normal(0, 0.5, (B, H)), jnp.float32) for _ in range(2)))
    weights = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((T, B, H), (B, H), (B, H))]

    def grads(forward):
        def scalar(W_h, x_proj, state):
            final, hs = forward(W_h, x_proj, state)
            return jnp.sum(hs * weights[0]) + jnp.sum(final.h * weights[1]) + jnp.sum(final.c * weights[2])
        return jax.tree.leaves(jax.grad(scalar, argnums=(0, 1, 2))(W_h, x_proj, state))

    def autodiff(dtype):
        def forward(W_h, x_proj, state):
            def body(carry, xp):
                new = recurrence.step(recurrence.Recurrence(LSTM(), dtype), {"W_h": W_h}, carry, xp)[0]
                return new, new.h
            return jax.lax.scan(body, state, x_proj)
        return forward

    ours = grads(lambda W, x, s: recurrence.scan(recurrence.Recurrence(LSTM(), "bfloat16"), {"W_h": W}, x, s))
    reference = grads(autodiff("bfloat16"))
    exact = grads(autodiff("float32"))
    for got, want, full in zip(ours, reference, exact):
        assert got.dtype == jnp.float32
        # Both round their operands to bfloat16 (8-bit mantissa), at different points of the chain
        assert rel_error(got, want) < 2e-2
        assert rel_error(got, full) < 3e-2


def test_bfloat16_model_tracks_float32_and_decodes_consistently():
    vocab_size = 11
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, vocab_size, (2, 9)), jnp.int32)
    for encoding in ("scaled", "onehot", "embed"):
        models = [lstm.CharLSTM(vocab_size, hidden_sizes=(16, 8), encoding=encoding, embed_dim=4,
                                matmul_dtype=dtype, rngs=nnx.Rngs(5)) for dtype in ("float32", "bfloat16")]
        (logits32, _), (logits16, states) = (model(tokens) for model in models)
        assert logits16.dtype == jnp.float32 and all(s.c.dtype == jnp.float32 for s in states)
        assert 1e-5 < rel_error(logits16, logits32) < 2e-2, encoding
        if encoding != "scaled":
            continue  # decoding shares its matmuls with the forward pass; one encoding shows it
        model, decode_states = models[1], models[1].initial_state(2)
        for t in range(tokens.shape[1]):  # the generation path uses the same rounded matmuls
            step_logits, decode_states = model.decode_step(tokens[:, t], decode_states, model.input_table())
        np.testing.assert_allclose(step_logits, logits16[:, -1], rtol=1e-5, atol=1e-5)


def test_config_option_builds_and_validates(monkeypatch):
    config = tiny.get_config()
    config.model.matmul_dtype = "float32"
    built = state.build_model(config, 7)
    assert built.matmul_dtype == "float32" and all(layer.matmul_dtype == "float32" for layer in built.layers)
    config.model.matmul_dtype = "bfloat16"
    state.validate_config(config)
    built = state.build_model(config, 7)
    assert built.matmul_dtype == "bfloat16" and all(layer.matmul_dtype == "bfloat16" for layer in built.layers)
    # "auto" (the default): bfloat16 where the CPU multiplies it in hardware, float32 elsewhere.
    config.model.matmul_dtype = "auto"
    state.validate_config(config)
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(environment, "native_bfloat16", lambda native=native: native)
        assert state.build_model(config, 7).matmul_dtype == want
    assert model.resolve_matmul_dtype("auto", started_with="bfloat16") == "bfloat16"  # a resumed run
    assert model.ModelConfig.from_config(config.model, auto_as="bfloat16").matmul_dtype == "bfloat16"
    assert small.get_config().model.matmul_dtype == "float32"  # the faithful configs keep float32
    config.model.matmul_dtype = "float16"
    with pytest.raises(state.ConfigError, match="model.matmul_dtype must be one of auto, float32, bfloat16"):
        state.validate_config(config)
    with pytest.raises(ValueError, match="matmul_dtype must be one of float32, bfloat16"):
        LSTMCell(2, 3, rngs=nnx.Rngs(0), matmul_dtype="float16")


def test_native_bfloat16_is_read_from_the_cpu_flags(monkeypatch):
    for flags, native in ((["avx2", "avx512_bf16"], True), (["amx_bf16"], True), (["avx512f", "avx2"], False)):
        monkeypatch.setattr(environment, "cpu", lambda flags=flags: {"vector_extensions": flags})
        assert environment.native_bfloat16() is native
