"""Every cell variant against float64 NumPy equations written from the papers, its derived
backward against autodiff of a plain scan and finite differences, and its wiring (trace,
decoding, bfloat16, hard sigmoid, configs and old workdirs).

Sizes are all different (batch 3, time 4, input 5, hidden 6) so a swapped axis fails loudly.
"""
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm
from configs import tiny
from lstm import checkpoint, data, recurrence, train
from lstm import state as run_state
from lstm.cells import CELLS, get_cell
from lstm.cells.contract import Extra
from lstm.cells.lstm import LSTM, FeedbackState, Gates, LSTMState
from lstm.layer import LSTMCell
from tests.numpy_reference import to_numpy_gates, variant_sequence
from tests.test_cell import float64, random_inputs

B, T, I, H = 3, 4, 5, 6
VARIANTS = tuple(cell for cell in CELLS if cell != "gru")  # the LSTM's; the GRU: tests/test_gru.py
REMOVED = {"nig": ("i", 1.0), "nfg": ("f", 1.0), "nog": ("o", 1.0)}


def random_cell(cell, seed=0, dtype=jnp.float32, gate_activation="sigmoid", matmul_dtype="float32"):
    """Every parameter random, extras included: peepholes and LN gains away from their init,
    so a peephole read from the wrong c or a gain on the wrong gate changes the numbers."""
    layer = LSTMCell(I, H, rngs=nnx.Rngs(seed), param_dtype=dtype, gate_activation=gate_activation,
                     cell=cell, matmul_dtype=matmul_dtype)
    rng = np.random.default_rng(seed + 100)
    pieces = {}
    for group, params in layer.gate_params().items():
        pieces[group] = {}
        for key, value in params.items():
            centre = 1.0 if key.startswith("gain") else 0.0
            pieces[group][key] = centre + rng.normal(0, 0.5, value.shape)
    layer.set_gate_params(pieces)
    return layer


def initial_gates(cell, seed=3, dtype=np.float32):
    """Gates handed to the first step, [B, k·H] in (0, 1), for a variant that feeds gates back
    (fgr); None for the others."""
    fed_back = get_cell(cell).Carry is FeedbackState
    return np.random.default_rng(seed).uniform(0, 1, (B, 3 * H)).astype(dtype) if fed_back else None


def carry_of(h0, c0, fed0=None):
    if fed0 is None:
        return LSTMState(jnp.asarray(h0), jnp.asarray(c0))
    return FeedbackState(jnp.asarray(h0), jnp.asarray(c0), jnp.asarray(fed0))


def run_traced(layer, xs, h0, c0, fed0=None):
    x_proj = layer.project_inputs(jnp.swapaxes(jnp.asarray(xs), 0, 1))
    final, (states, gates) = layer.scan(x_proj, carry_of(h0, c0, fed0), trace=True)
    steps = gates._asdict() | {"c": states.c, "h": states.h}
    return final, {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in steps.items()}


def test_parameters_per_variant_and_their_initial_values():
    expected_extras = {"lstm": {}, "np": {}, "peephole": {"p": "ifo"}, "nig": {"p": "fo"},
                       "nfg": {"p": "io"}, "nog": {"p": "if"}, "niaf": {"p": "ifo"},
                       "noaf": {"p": "ifo"}, "cifg": {"p": "io"}, "fgr": {"p": "ifo", "R": "ifo"},
                       "layernorm": {"gain_x": "ifgo", "bias_x": "ifgo", "gain_h": "ifgo",
                                     "bias_h": "ifgo", "gain": "c", "bias": "c"}}
    assert set(expected_extras) == set(VARIANTS)
    for cell, extras in expected_extras.items():
        gates = LSTMCell(I, H, rngs=nnx.Rngs(0), cell=cell).gate_params()
        for group, params in gates.items():
            assert {k for k in params if k not in ("W_x", "W_h", "b")} == {
                name for name, groups in extras.items() if group in groups}, (cell, group)
            for name, value in params.items():
                assert value.shape == {"W_x": (I, H), "W_h": (H, H), "R": (3 * H, H)}.get(name, (H,))
                if name.startswith("gain"):
                    np.testing.assert_array_equal(value, np.ones(H))
                elif name not in ("W_x", "W_h", "b"):
                    np.testing.assert_array_equal(value, 0.0)  # peepholes, LN biases, fgr's R


@pytest.mark.parametrize("cell", VARIANTS)
def test_set_gate_params_round_trips_every_piece(cell):
    layer = random_cell(cell)
    written = to_numpy_gates(layer.gate_params())
    other = LSTMCell(I, H, rngs=nnx.Rngs(9), cell=cell)
    other.set_gate_params(written)
    for group, params in to_numpy_gates(other.gate_params()).items():
        for key, value in params.items():
            np.testing.assert_array_equal(value, np.float32(written[group][key]), err_msg=f"{group} {key}")
    with pytest.raises(KeyError, match="no parameter"):
        other.set_gate_params({"g": {"p": np.zeros(H)}})  # no variant has a peephole on g


def test_unknown_cell_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="cell must be one of lstm, np, peephole"):
        LSTMCell(I, H, rngs=nnx.Rngs(0), cell="bogus")
    config = tiny.get_config()
    config.model.cell = "bogus"
    with pytest.raises(run_state.ConfigError, match="model.cell must be one of lstm, np, peephole") as error:
        run_state.validate_config(config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("cell", VARIANTS)
def test_every_gate_c_and_h_match_the_papers_equations_in_float64(cell, gate_activation):
    with float64():
        layer = random_cell(cell, dtype=jnp.float64, gate_activation=gate_activation)
        xs, h0, c0 = random_inputs(dtype=np.float64)
        fed0 = initial_gates(cell, dtype=np.float64)
        final, steps = run_traced(layer, xs, h0, c0, fed0)
        expected = variant_sequence(cell, to_numpy_gates(layer.gate_params()), xs, h0, c0, gate_activation, fed0)
        for name in ("i", "f", "g", "o", "c", "h"):
            np.testing.assert_allclose(steps[name], expected[name], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{cell} {name}")
        np.testing.assert_allclose(final.h, expected["h"][:, -1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(final.c, expected["c"][:, -1], rtol=1e-12, atol=1e-12)
    if cell in REMOVED:
        gate, constant = REMOVED[cell]
        np.testing.assert_array_equal(steps[gate], constant)
    if cell == "cifg":
        np.testing.assert_allclose(steps["f"], 1 - steps["i"], atol=1e-15)
    if gate_activation == "hard_sigmoid":  # both pieces of the hard sigmoid are exercised
        values = np.concatenate([steps[n].ravel() for n in ("i", "f", "o") if n != REMOVED.get(cell, ("",))[0]])
        assert ((values > 0) & (values < 1)).sum() >= len(values) // 3


def test_np_is_lstm_and_lstm_is_unchanged():
    xs, h0, c0 = random_inputs()
    reference = random_cell("lstm")
    _, want = run_traced(reference, xs, h0, c0)
    same = LSTMCell(I, H, rngs=nnx.Rngs(0), cell="np")
    same.set_gate_params(reference.gate_params())
    _, got = run_traced(same, xs, h0, c0)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    # Peepholes at their initial zero are the plain cell too.
    peephole = LSTMCell(I, H, rngs=nnx.Rngs(0), cell="peephole")
    peephole.set_gate_params({g: {k: v for k, v in p.items()} for g, p in reference.gate_params().items()})
    _, got = run_traced(peephole, xs, h0, c0)
    np.testing.assert_allclose(got["h"], want["h"], rtol=1e-6, atol=1e-7)


def losses_of(graphdef, weights):
    """(loss through the derived backward, loss through autodiff of a plain scan of the same
    step), both of (the layer's parameters, xs, h0, c0[, the gates fed to the first step]).
    The parameters enter through project_inputs (so a variant's own input preparation,
    layernorm's, is differentiated too) and the scan; every output and the final c enter the
    loss."""
    def loss(forward):
        def scalar(params, xs, h0, c0, fed0=None):
            layer = nnx.merge(graphdef, params)
            x_proj = layer.project_inputs(jnp.swapaxes(xs, 0, 1))
            final, hs = forward(layer, x_proj, carry_of(h0, c0, fed0))
            return jnp.sum(hs * weights[0]) + jnp.sum(final.h * weights[1]) + jnp.sum(jnp.sin(final.c))
        return scalar

    def plain(layer, x_proj, carry):
        params = layer.params()

        def body(carry, xp):
            new, _ = recurrence.step(layer.recurrence, params, carry, xp)
            return new, new.h
        return jax.lax.scan(body, carry, x_proj)

    derived = lambda layer, x_proj, carry: recurrence.scan(dataclasses.replace(layer.recurrence, unroll=2),
                                                           layer.params(), x_proj, carry)
    return loss(derived), loss(plain)


@pytest.mark.parametrize("gate_activation", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("cell", VARIANTS)
def test_derived_backward_equals_autodiff_and_finite_differences_in_float64(cell, gate_activation):
    """Gradients of every parameter of the layer, the inputs, h0 and c0: all entries against
    autodiff of a plain scan of the same step, and a few random
    entries of each against central differences (with hard sigmoid no pre-activation of this
    draw lies within eps of a kink)."""
    with float64():
        layer = random_cell(cell, dtype=jnp.float64, gate_activation=gate_activation)
        xs, h0, c0 = random_inputs(dtype=np.float64)
        fed0 = initial_gates(cell, dtype=np.float64)
        rng = np.random.default_rng(5)
        weights = (rng.normal(size=(T, B, H)), rng.normal(size=(B, H)))
        graphdef, params = nnx.split(layer)
        args = (params, jnp.asarray(xs), jnp.asarray(h0), jnp.asarray(c0))
        args += () if fed0 is None else (jnp.asarray(fed0),)
        derived, plain = losses_of(graphdef, weights)
        check_gradients(derived, plain, args, rng, cell)


def check_gradients(derived, plain, args, rng, label):
    """Every entry of the gradient of `derived` (the scan's derived backward) against autodiff of
    `plain` (a lax.scan of the same step), both float64 losses of the pytree `args`, and three
    random entries of each leaf against central differences."""
    both = jax.jit(lambda a: (jax.value_and_grad(lambda a: derived(*a))(a),
                              jax.value_and_grad(lambda a: plain(*a))(a)))
    (loss, got), (plain_loss, want) = both(args)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-13)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(args)
    eps = 1e-6
    for k, ((path, value), g, w) in enumerate(zip(leaves, jax.tree.leaves(got), jax.tree.leaves(want))):
        name = f"{label} {jax.tree_util.keystr(path)}"
        assert np.abs(np.asarray(w)).max() > 0, name  # every input reaches the loss
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12, err_msg=name)
        value = np.asarray(value)
        for index in [tuple(rng.integers(0, n) for n in value.shape) for _ in range(3)]:
            numeric = 0.0
            for sign in (1, -1):
                shifted = value.copy()
                shifted[index] += sign * eps
                trial = [leaf for _, leaf in leaves]
                trial[k] = jnp.asarray(shifted)
                numeric += sign * float(both(jax.tree.unflatten(treedef, trial))[0][0]) / (2 * eps)
            np.testing.assert_allclose(np.asarray(g)[index], numeric, rtol=1e-6, atol=1e-8,
                                       err_msg=f"{name} {index}")


@pytest.mark.parametrize("cell", ["peephole", "fgr", "layernorm"])
def test_derived_backward_equals_autodiff_with_zoneout(cell):
    """The derived backward applies each step's vjp, kept by the forward scan with its cheap
    arithmetic left to recompute (lstm/recurrence.py, RECOMPUTED_IN_BACKWARD); with zoneout's
    per-step masks it gives autodiff's gradients of a plain scan of the same step, in float64."""
    with float64():
        layer = random_cell(cell, dtype=jnp.float64)
        xs, h0, c0 = random_inputs(dtype=np.float64)
        fed0 = initial_gates(cell, dtype=np.float64)
        rng = np.random.default_rng(7)
        zone = {name: jnp.asarray(rng.random((T, B, H)) < rate, jnp.float64) for name, rate in (("h", 0.3), ("c", 0.5))}
        weights = jnp.asarray(rng.normal(size=(T, B, H)))
        graphdef, params = nnx.split(layer)
        args = (params, jnp.asarray(xs), jnp.asarray(h0), jnp.asarray(c0), None if fed0 is None else jnp.asarray(fed0))

        def loss(forward):
            def scalar(args):
                params, xs, h0, c0, fed0 = args
                layer = nnx.merge(graphdef, params)
                x_proj = layer.project_inputs(jnp.swapaxes(xs, 0, 1))
                final, hs = forward(layer, x_proj, carry_of(h0, c0, fed0))
                return jnp.sum(hs * weights) + jnp.sum(jnp.sin(final.c))
            return scalar

        def plain(layer, x_proj, carry):
            params = layer.params()

            def body(carry, inputs):
                xp, zone_t = inputs
                new, _ = recurrence.step(layer.recurrence, params, carry, xp, zone_t)
                return new, new.h
            return jax.lax.scan(body, carry, (x_proj, zone))

        want = jax.grad(loss(plain))(args)
        derived = lambda layer, x_proj, carry: recurrence.scan(layer.recurrence, layer.params(), x_proj, carry, zone)
        got = jax.grad(loss(derived))(args)
        for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12, err_msg=f"{cell} {jax.tree_util.keystr(path)}")


def test_the_backward_keeps_no_more_per_step_than_the_gates_c_and_tanh_c():
    """The forward scan stacks what each step's vjp saves. For `lstm`'s equations that is the
    gates, tanh c_t and c_{t-1} at most: the 7 [B, H] arrays the hand-written backward this
    replaced read. Without the recompute rule, jax.vjp also keeps the products on the way (11
    arrays), whose writing measured slower than redoing them in the reverse loop."""
    step = jax.ShapeDtypeStruct((B, 4 * H), jnp.float32)
    state = LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H)))
    vjp = jax.eval_shape(lambda xp, hp: recurrence.step_vjp(LSTM(), {}, state, xp, hp)[1], step, step)
    assert sum(leaf.size for leaf in jax.tree.leaves(vjp)) <= 7 * B * H


def test_a_new_cell_needs_no_backward_code(monkeypatch):
    """The contract's docstring example (lstm/cells/contract.py), registered as written: its
    gradients (the new leak parameter's included) come out of the derived backward equal to
    autodiff of a plain scan of its step."""
    from lstm import cells

    @dataclasses.dataclass(frozen=True)
    class Leaky(LSTM):
        extras = {"leak": Extra(("f",), 1.0)}

        def step(self, p, carry, x_proj, h_proj):
            i, f, g, o = self.split(x_proj + h_proj)
            i, f, g, o = self.sigma(i), self.sigma(f), jnp.tanh(g), self.sigma(o)
            c = p["f"]["leak"] * f * carry.c + i * g
            return LSTMState(h=o * jnp.tanh(c), c=c), Gates(i, f, g, o)

    monkeypatch.setitem(cells.CELLS, "leaky", Leaky)
    layer = random_cell("leaky")
    xs, h0, c0 = random_inputs()
    rng = np.random.default_rng(5)
    weights = tuple(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((T, B, H), (B, H)))
    graphdef, params = nnx.split(layer)
    args = (params, jnp.asarray(xs), jnp.asarray(h0), jnp.asarray(c0))
    derived, plain = losses_of(graphdef, weights)
    got, want = (jax.grad(loss, argnums=range(4))(*args) for loss in (derived, plain))
    assert np.abs(np.asarray(got[0]["extras"]["leak"][...])).max() > 0
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_sums_projections_holds_exactly_where_a_cell_declares_it(cell):
    """A cell with sums_projections has its backward store one cotangent for x_proj and h_proj:
    the step's vjp must give the two equal. A cell without it must read them apart (else the
    flag is merely missing, which costs a stored array per step)."""
    layer = random_cell(cell)
    carry = layer.initial_state(B)
    carry = jax.tree.map(lambda x: x + jnp.asarray(np.random.default_rng(2).uniform(0, 1, x.shape), x.dtype), carry)
    rng = np.random.default_rng(3)
    xp, hp = (jnp.asarray(rng.normal(size=(B, 4 * H if cell != "gru" else 3 * H)), jnp.float32) for _ in range(2))
    new, vjp = recurrence.step_vjp(layer.cell, layer.cell.step_params(layer.params()), carry, xp, hp)
    d_xp, dz, *_ = vjp(jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), new))
    assert bool(jnp.array_equal(d_xp, dz)) == layer.cell.sums_projections


V = 7


def variant_model(cell, encoding="onehot", matmul_dtype="float32"):
    model = lstm.CharLSTM(V, hidden_sizes=(6, 5), encoding=encoding, embed_dim=4, cell=cell,
                          matmul_dtype=matmul_dtype, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-zero extras, so a trace or decode that skips them differs
        layer.set_gate_params({g: {k: v + rng.normal(0, 0.3, v.shape) for k, v in p.items() if k != "W_x"}
                               for g, p in layer.gate_params().items()})
    return model


@pytest.mark.parametrize("cell", VARIANTS)
def test_trace_emits_each_variants_gates_and_decoding_matches_the_forward_pass(cell):
    model = variant_model(cell, encoding="embed" if cell == "layernorm" else "onehot")
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, V, (2, 5)), jnp.int32)
    logits, _ = model(tokens)
    traces = lstm.trace(model, tokens)
    for layer, layer_trace in zip(model.layers, traces):
        assert set(layer_trace) == {"i", "f", "g", "o", "c", "h"} | ({"gates"} if cell == "fgr" else set())
        assert layer_trace["h"].shape == (2, 5, layer.hidden_size)
    if cell in REMOVED:
        gate, constant = REMOVED[cell]
        for layer_trace in traces:
            np.testing.assert_array_equal(layer_trace[gate], constant)
    states, table = model.initial_state(2), model.input_table()
    for t in range(tokens.shape[1]):  # what lstm.sample runs, one token at a time
        step_logits, states = model.decode_step(tokens[:, t], states, table)
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states[-1].h, traces[-1]["h"][:, -1], rtol=1e-6, atol=1e-6)


# lstm: test_bfloat16.py. The matmuls are the variants' shared part; these two take the derived
# backward with one (peephole) and two (layernorm) emitted input-projection gradients.
@pytest.mark.parametrize("cell", ["peephole", "layernorm"])
def test_bfloat16_matmuls_track_float32_forward_and_backward(cell):
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, V, (2, 9)), jnp.int32)
    models = [variant_model(cell, "scaled", dtype) for dtype in ("float32", "bfloat16")]

    def value_and_grads(model):
        graphdef, params = nnx.split(model)
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens)[0] ** 2)
        return jax.jit(jax.value_and_grad(loss))(params)

    (loss32, grads32), (loss16, grads16) = (value_and_grads(m) for m in models)
    assert 1e-6 < abs(float(loss16) / float(loss32) - 1) < 2e-2
    for g32, g16 in zip(jax.tree.leaves(grads32), jax.tree.leaves(grads16)):
        assert g16.dtype == jnp.float32
        assert np.linalg.norm(g16 - g32) <= 5e-2 * np.linalg.norm(g32) + 1e-7


def test_a_saved_config_without_cell_loads_as_lstm(tmp_path):
    """A workdir written before the option existed: its config.json has no model.cell."""
    config, vocab = tiny.get_config(), data.Vocab.from_text("abcdefg")
    _, _, state = run_state.init_train_state(config, len(vocab))
    with checkpoint.Checkpointer(tmp_path) as saver:
        saver.save(1, run_state.flatten_state(state))
        saved = config.to_dict()
        del saved["model"]["cell"]
        saver.write_meta(config=saved, vocab_json=vocab.to_json())
    assert "cell" not in json.loads((Path(tmp_path) / "checkpoints" / "config.json").read_text())["model"]
    model, _, restored = run_state.load_model(tmp_path, which="latest")
    assert restored.model.cell == "lstm"
    assert all(layer.cell == LSTM() for layer in model.layers)
    np.testing.assert_array_equal(model.layers[0].W_h[...], state.params["layers"][0]["W_h"][...])


def test_a_variant_trains_resumes_exactly_and_loads_with_its_extra_parameters(corpus_path, tmp_path):
    """fgr under the `stateful` objective: its checkpointed carry holds the fed-back gates
    beside (h, c), so a run resumed from its middle must equal one that ran straight through."""
    from tests.test_train import losses, restore_latest, tiny_config

    def config(max_steps):
        config = tiny_config(corpus_path, max_steps=max_steps, log_every_steps=1, eval_every_steps=2)
        config.model.cell, config.data.objective, config.data.stride = "fgr", "stateful", 1
        config.checkpoint.every_steps = 2
        config.eval.sample_length = 0  # the sampler is test_trace_…'s decode_step, checked above
        return config

    train.train_and_evaluate(config(4), tmp_path / "whole")
    train.train_and_evaluate(config(2), tmp_path / "split")
    train.train_and_evaluate(config(4), tmp_path / "split")
    (_, whole), (_, split) = (restore_latest(tmp_path / run, config(4)) for run in ("whole", "split"))
    assert any(".carry" in key for key in whole) and whole.keys() == split.keys()
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(split[key]), err_msg=key)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    model, _, restored = run_state.load_model(tmp_path / "split", which="latest")
    assert restored.model.cell == "fgr"
    for piece in ("p", "R"):  # trained away from their zero init, and restored
        assert np.abs(np.asarray(model.layers[0].gate_params()["i"][piece])).max() > 0, piece
