"""The LSTM against the textbook equations, a Python loop, finite differences and Flax's cell.

Sizes are all different (batch 3, time 4, input 5, hidden 6) so a swapped axis fails loudly.
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from lstm import recurrence
from lstm.cells.lstm import GATE_ORDER, LSTM, LSTMState
from lstm.layer import LSTMCell
from tests.numpy_reference import lstm_sequence, to_numpy_gates

B, T, I, H = 3, 4, 5, 6


@contextlib.contextmanager
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def random_cell(seed=0, dtype=jnp.float32, gate_activation="sigmoid", unroll=1):
    """A cell with every parameter random and O(1), so no gate sits in a flat region (hard
    sigmoid gates: some do, and `test_every_gate_...` checks that both regions occur)."""
    cell = LSTMCell(I, H, rngs=nnx.Rngs(seed), param_dtype=dtype, gate_activation=gate_activation, unroll=unroll)
    rng = np.random.default_rng(seed + 100)
    cell.set_gate_params({
        n: {"W_x": rng.normal(0, 0.5, (I, H)), "W_h": rng.normal(0, 0.5, (H, H)), "b": rng.normal(0, 0.5, H)}
        for n in GATE_ORDER})
    return cell


def random_inputs(seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, I)).astype(dtype)
    h0 = rng.normal(0, 0.5, (B, H)).astype(dtype)
    c0 = rng.normal(0, 0.5, (B, H)).astype(dtype)
    return xs, h0, c0


def run_traced(cell, xs, h0, c0):
    x_proj = cell.project_inputs(jnp.swapaxes(jnp.asarray(xs), 0, 1))
    final, (states, gates) = cell.scan(x_proj, LSTMState(jnp.asarray(h0), jnp.asarray(c0)), trace=True)
    steps = gates._asdict() | states._asdict()
    return final, {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in steps.items()}


def test_parameter_shapes_fused_and_per_gate():
    cell = LSTMCell(I, H, rngs=nnx.Rngs(0))
    assert cell.W_x[...].shape == (I, 4 * H)
    assert cell.W_h[...].shape == (H, 4 * H)
    assert cell.b[...].shape == (4 * H,)
    gates = cell.gate_params()
    assert list(gates) == list(GATE_ORDER)
    for piece in gates.values():
        assert piece["W_x"].shape == (I, H)
        assert piece["W_h"].shape == (H, H)
        assert piece["b"].shape == (H,)


def test_set_gate_params_writes_into_the_named_block_only():
    cell = LSTMCell(I, H, rngs=nnx.Rngs(0))
    before = to_numpy_gates(cell.gate_params())
    marker = np.full((H, H), 7.0)
    cell.set_gate_params({"g": {"W_h": marker}})
    after = to_numpy_gates(cell.gate_params())
    np.testing.assert_array_equal(after["g"]["W_h"], marker)
    # Gate order i, f, g, o: g is the third H-wide column block of the fused matrix.
    np.testing.assert_array_equal(np.asarray(cell.W_h[...])[:, 2 * H:3 * H], marker)
    for name in ("i", "f", "o"):
        np.testing.assert_array_equal(after[name]["W_h"], before[name]["W_h"])


def test_keras_init_forget_bias_one_and_orthogonal_rows():
    cell = LSTMCell(I, H, rngs=nnx.Rngs(3))
    gates = to_numpy_gates(cell.gate_params())
    np.testing.assert_array_equal(gates["f"]["b"], np.ones(H))
    for name in ("i", "g", "o"):
        np.testing.assert_array_equal(gates[name]["b"], np.zeros(H))
    # Keras draws one orthogonal H×4H matrix, so its rows are orthonormal: W_h W_hᵀ = I_H.
    W_h = np.asarray(cell.W_h[...], np.float64)
    np.testing.assert_allclose(W_h @ W_h.T, np.eye(H), atol=1e-5)
    # Glorot-uniform over the fused I×4H kernel: every entry inside ±sqrt(6 / (I + 4H)).
    assert np.abs(np.asarray(cell.W_x[...])).max() <= np.sqrt(6.0 / (I + 4 * H))


def test_every_gate_matches_float64_numpy_equations():
    cell = random_cell()
    xs, h0, c0 = random_inputs()
    final, steps = run_traced(cell, xs, h0, c0)
    expected = lstm_sequence(to_numpy_gates(cell.gate_params()), xs, h0, c0)
    for name in ("i", "f", "g", "o", "c", "h"):
        np.testing.assert_allclose(steps[name], expected[name], rtol=2e-5, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(final.h, expected["h"][:, -1], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(final.c, expected["c"][:, -1], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
def test_every_gate_matches_numpy_to_1e12_in_float64(gate_activation):
    with float64():
        cell = random_cell(dtype=jnp.float64, gate_activation=gate_activation)
        xs, h0, c0 = random_inputs(dtype=np.float64)
        _, steps = run_traced(cell, xs, h0, c0)
        assert steps["h"].dtype == np.float64
        expected = lstm_sequence(to_numpy_gates(cell.gate_params()), xs, h0, c0, gate_activation)
        for name in ("i", "f", "g", "o", "c", "h"):
            np.testing.assert_allclose(steps[name], expected[name], rtol=1e-12, atol=1e-12, err_msg=name)
    if gate_activation == "hard_sigmoid":
        # Both pieces of the hard sigmoid are exercised: clipped gates and the linear middle.
        values = np.concatenate([steps[n].ravel() for n in ("i", "f", "o")])
        assert np.isin(values, (0.0, 1.0)).sum() >= 3
        assert ((values > 0) & (values < 1)).sum() >= len(values) // 2


def test_hard_sigmoid_gates_are_kerass_piecewise_line():
    from lstm.cells.contract import hard_sigmoid
    z = jnp.asarray([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    np.testing.assert_allclose(hard_sigmoid(z), [0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0], atol=1e-7)


def test_unknown_gate_activation_is_rejected_when_the_cell_is_built():
    with pytest.raises(ValueError, match="gate_activation"):
        LSTMCell(I, H, rngs=nnx.Rngs(0), gate_activation="relu")


def test_scan_equals_python_loop_of_single_steps():
    cell = random_cell()
    xs, h0, c0 = random_inputs()
    scanned, _ = run_traced(cell, xs, h0, c0)
    state = LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    for t in range(T):
        state, _ = cell.step(state, cell.project_inputs(jnp.asarray(xs[:, t])))
    np.testing.assert_allclose(scanned.h, state.h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scanned.c, state.c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("unroll", [1, 3, T])
def test_split_sequence_with_carried_state_equals_whole_sequence(unroll):
    cell = random_cell(unroll=unroll)
    xs, h0, c0 = random_inputs()
    x_proj = cell.project_inputs(jnp.swapaxes(jnp.asarray(xs), 0, 1))
    state0 = LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    whole_final, whole_hs = cell.scan(x_proj, state0)
    mid, first_hs = cell.scan(x_proj[:1], state0)
    split_final, second_hs = cell.scan(x_proj[1:], mid)
    np.testing.assert_allclose(jnp.concatenate([first_hs, second_hs]), whole_hs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(split_final.c, whole_final.c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
def test_gradients_match_central_finite_differences_in_float64(gate_activation):
    # With hard sigmoid gates no pre-activation of this draw lies within eps of a kink (±2.5),
    # so each difference quotient stays on one linear piece.
    with float64():
        cell = random_cell(dtype=jnp.float64, gate_activation=gate_activation)
        xs, h0, c0 = random_inputs(dtype=np.float64)
        weights = np.random.default_rng(5).normal(size=(B, T, H))
        graphdef, params = nnx.split(cell)

        def loss(params):
            model = nnx.merge(graphdef, params)
            x_proj = model.project_inputs(jnp.swapaxes(xs, 0, 1))
            final, hs = model.scan(x_proj, LSTMState(jnp.asarray(h0), jnp.asarray(c0)))
            # Every output and the final memory enter the loss, so every path is checked.
            return jnp.sum(jnp.swapaxes(hs, 0, 1) * weights) + jnp.sum(jnp.sin(final.c))

        loss = jax.jit(loss)
        grads = jax.grad(loss)(params)
        eps = 1e-6
        for name in ("W_x", "W_h", "b"):
            value = np.asarray(params[name][...])
            numeric = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                for sign in (1, -1):
                    shifted = value.copy()
                    shifted[index] += sign * eps
                    trial = nnx.State({**params, name: params[name].replace(jnp.asarray(shifted))})
                    numeric[index] += sign * float(loss(trial)) / (2 * eps)
            np.testing.assert_allclose(np.asarray(grads[name][...]), numeric, rtol=1e-6, atol=1e-8,
                                       err_msg=name)


def test_matches_flax_optimized_lstm_cell_with_copied_weights():
    """Mapping to Flax's cell: its gate order is also i, f, g, o; its input kernels `i?` carry no
    bias and its recurrent kernels `h?` carry the whole bias; its carry is (c, h), ours (h, c)."""
    cell = random_cell()
    xs, h0, c0 = random_inputs()
    ours, steps = run_traced(cell, xs, h0, c0)
    gates = cell.gate_params()
    params = {}
    for name in GATE_ORDER:
        params[f"i{name}"] = {"kernel": gates[name]["W_x"]}
        params[f"h{name}"] = {"kernel": gates[name]["W_h"], "bias": gates[name]["b"]}
    flax_cell = nn.OptimizedLSTMCell(H)
    carry = (jnp.asarray(c0), jnp.asarray(h0))
    outputs = []
    for t in range(T):
        carry, h = flax_cell.apply({"params": params}, carry, jnp.asarray(xs[:, t]))
        outputs.append(h)
    np.testing.assert_allclose(np.stack(outputs, axis=1), steps["h"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry[0], ours.c, rtol=1e-5, atol=1e-6)


def test_set_gate_params_rejects_unknown_gates_and_wrong_shapes():
    cell = LSTMCell(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(KeyError, match="unknown gate"):
        cell.set_gate_params({"z": {"b": np.zeros(H)}})
    with pytest.raises(ValueError, match="W_x"):
        cell.set_gate_params({"i": {"W_x": np.zeros((I + 1, H))}})


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
def test_the_scans_backward_equals_autodiff_of_the_plain_scan_in_float64(gate_activation):
    """The scan's custom VJP (the step's vjp kept per step, dW_h after the loop) against JAX's own
    differentiation of the same forward scan, for every input (W_h, the projected inputs, h0
    and c0) and both outputs, unrolled by 2."""
    spec = recurrence.Recurrence(LSTM(gate_activation), unroll=2)

    def autodiff_reference(W_h, x_proj, state):
        step = lambda carry, xp: (recurrence.step(spec, {"W_h": W_h}, carry, xp)[0],) * 2
        return jax.lax.scan(step, state, x_proj)

    with float64():
        rng = np.random.default_rng(7)
        W_h = jnp.asarray(rng.normal(0, 0.5, (H, 4 * H)))
        x_proj = jnp.asarray(rng.normal(0, 1.0, (T, B, 4 * H)))
        state = LSTMState(jnp.asarray(rng.normal(0, 0.5, (B, H))), jnp.asarray(rng.normal(0, 0.5, (B, H))))
        w_hs, w_h, w_c = (jnp.asarray(rng.normal(size=s)) for s in ((T, B, H), (B, H), (B, H)))

        def loss(forward):
            def scalar(W_h, x_proj, state):
                final, outputs = forward(W_h, x_proj, state)
                hs = outputs if not isinstance(outputs, LSTMState) else outputs.h
                return jnp.sum(hs * w_hs) + jnp.sum(final.h * w_h) + jnp.sum(jnp.cos(final.c) * w_c)
            return jax.grad(scalar, argnums=(0, 1, 2))(W_h, x_proj, state)

        ours = loss(lambda W, x, s: recurrence.scan(spec, {"W_h": W}, x, s))
        reference = loss(autodiff_reference)
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("merge_time_and_batch", [True, False])
def test_recurrent_weight_gradient_both_layouts_equal_the_numpy_sum_over_steps(merge_time_and_batch):
    # One device merges (T, B); several keep them apart. Both must be Σ_t h_{t-1}ᵀ dz_t.
    from lstm.matmul import recurrent_weight_gradient
    with float64():
        rng = np.random.default_rng(3)
        h_prev, dzs = rng.normal(size=(T, B, H)), rng.normal(size=(T, B, 4 * H))
        expected = sum(h_prev[t].T @ dzs[t] for t in range(T))
        got = recurrent_weight_gradient(jnp.asarray(h_prev), jnp.asarray(dzs), merge_time_and_batch)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
