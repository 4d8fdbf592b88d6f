"""The recurrent regularisers (lstm/regularisers.py, model.dropout_kind / embed_dropout /
weight_drop) against what their papers define: masks shared where the method shares them and
drawn fresh where it does not, the expected value kept, evaluation without masks, and the
model's values and gradients against a plain float64 forward that applies the same masks by
hand, as dense operations; then a seed, a resume and the config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm
from lstm import recurrence, regularisers, train
from lstm import state as run_state
from lstm.model import EMBEDDING_SITE, WEIGHT_DROP_SITE, ZONEOUT_SITE
from tests.test_cell import float64
from tests.test_train import final_params, losses, tiny_config

B, T, V, D = 3, 5, 7, 4
HIDDEN = (6, 5)
RATES = {"dropout": 0.3, "input_dropout": 0.25, "embed_dropout": 0.35, "weight_drop": 0.4}
ZONEOUT = {"zoneout_h": 0.2, "zoneout_c": 0.45}  # unlike the others, it changes evaluation too


def test_locked_masks_are_shared_across_time_and_drawn_per_sequence_and_key():
    x = jnp.ones((T, 64, 32))
    locked = np.asarray(regularisers.dropout(x, jax.random.key(0), 0.5, "locked"))
    np.testing.assert_array_equal(locked, np.broadcast_to(locked[:1], locked.shape))  # every step alike
    assert len({row.tobytes() for row in locked[0]}) == 64  # every sequence its own mask
    standard = np.asarray(regularisers.dropout(x, jax.random.key(0), 0.5, "standard"))
    assert not np.array_equal(standard[0], standard[1])  # a fresh mask every step
    again = np.asarray(regularisers.dropout(x, jax.random.key(0), 0.5, "locked"))
    other = np.asarray(regularisers.dropout(x, jax.random.key(1), 0.5, "locked"))
    np.testing.assert_array_equal(locked, again)
    assert not np.array_equal(locked, other)


@pytest.mark.parametrize("draw", ["standard", "locked", "embedding", "weight"])
def test_every_mask_keeps_the_expected_value(draw):
    """Each entry is 0 with probability p and 1/(1 − p) otherwise, so its mean is 1."""
    rate, key = 0.3, jax.random.key(7)
    mask = {"standard": lambda: regularisers.dropout(jnp.ones((4, 250, 200)), key, rate, "standard"),
            "locked": lambda: regularisers.dropout(jnp.ones((4, 1000, 200)), key, rate, "locked")[0],
            "embedding": lambda: regularisers.embedding_mask(key, rate, 200_000),
            "weight": lambda: regularisers.weight_drop(jnp.ones((256, 1024)), key, rate)}[draw]()
    mask = np.asarray(mask, np.float64).ravel()
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / (1 - rate))}
    standard_error = np.sqrt(rate / (1 - rate) / mask.size)
    assert abs(mask.mean() - 1) < 5 * standard_error
    assert abs((mask == 0).mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / mask.size)


def test_locked_one_hot_input_dropout_is_a_per_sequence_mask_on_the_one_hot_vectors():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (40, 6)), jnp.int32)  # [T, B]
    key = jax.random.key(2)
    scale = np.asarray(regularisers.one_hot_input_scale(key, 0.5, "locked", tokens, V))[..., 0]
    mask = np.asarray(regularisers.keep_scale(key, 0.5, (6, V)))  # the [1, B, V] mask, per sequence
    dense = np.asarray(jax.nn.one_hot(tokens, V)) * mask[None]  # dropout on the one-hot vectors
    np.testing.assert_array_equal(scale, dense.sum(-1))  # only the hot entry survives the product
    for b in range(6):  # a token's every occurrence in one sequence shares its fate
        for token in range(V):
            assert len(set(scale[np.asarray(tokens[:, b]) == token, b])) <= 1


def make_model(encoding, kind, cell="lstm", **rates):
    model = lstm.CharLSTM(V, hidden_sizes=HIDDEN, encoding=encoding, embed_dim=D, dropout_kind=kind, cell=cell,
                          rngs=nnx.Rngs(0), **rates)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        layer.set_gate_params({n: {"b": rng.normal(0, 0.3, layer.hidden_size)} for n in "ifgo"})
    return model


def rates_for(encoding):
    rates = RATES | ZONEOUT
    return {k: v for k, v in rates.items() if not (k == "embed_dropout" and encoding == "scaled")}


def masks_from(key, model):
    """Every mask, drawn from the site keys the model documents (lstm/model.py), in the
    reference's dense form: batch-major, broadcastable."""
    def keep(index, rate, shape):
        kept = jax.random.bernoulli(jax.random.fold_in(key, index), 1 - rate, shape)
        return jnp.where(kept, 1 / (1 - rate), 0.0)

    m = model.config
    locked = m.dropout_kind == "locked"
    width = {"scaled": 1, "onehot": V, "embed": D}[model.encoding]
    masks = {}
    if model.encoding == "onehot":  # a [T, B, 1] factor, or a [B, V] mask on the one-hot vectors
        masks["input"] = (keep(0, m.input_dropout, (B, V))[:, None, :] if locked
                          else jnp.swapaxes(keep(0, m.input_dropout, (T, B, 1)), 0, 1))
    else:
        masks["input"] = jnp.swapaxes(keep(0, m.input_dropout, (1 if locked else T, B, width)), 0, 1)
    if m.embed_dropout:
        masks["tokens"] = keep(EMBEDDING_SITE, m.embed_dropout, (V, 1))
    masks["weights"] = [keep(WEIGHT_DROP_SITE + i, m.weight_drop, (h, 4 * h)) for i, h in enumerate(HIDDEN)]
    masks["outputs"] = [jnp.swapaxes(keep(i + 1, m.dropout, (1 if locked else T, B, h)), 0, 1)
                        for i, h in enumerate(HIDDEN)]
    # zoneout: 1 keeps a unit's previous value, drawn afresh for every step, sequence and unit
    masks["zone"] = [tuple(jax.random.bernoulli(jax.random.fold_in(key, ZONEOUT_SITE + 2 * i + j), rate, (T, B, h))
                           .astype(jnp.float64) for j, rate in enumerate((m.zoneout_h, m.zoneout_c)))
                     for i, h in enumerate(HIDDEN)]
    return masks


def evaluation_masks(model):
    """No dropout at evaluation; zoneout keeps its expected share of the previous state."""
    ones = lambda shape: jnp.ones(shape, jnp.float64)
    rates = (model.config.zoneout_h, model.config.zoneout_c)
    return {"input": 1.0, "weights": [1.0] * len(HIDDEN), "outputs": [ones((1, 1, 1))] * len(HIDDEN),
            "zone": [tuple(jnp.full((T, B, 1), rate, jnp.float64) for rate in rates)] * len(HIDDEN)}


def masked_plain_forward(model, tokens, state, masks):
    """The model written the plain way with every mask applied where its paper puts it: on the
    dense input vectors (one-hot as a matmul), the embedding rows, W_h, each layer's output,
    and zoneout mixing each step's new h and c with the previous ones. Returns the logits, the
    final states and the top layer's outputs before and after dropout (time-major)."""
    if model.encoding == "scaled":  # the model encodes k/V in float32, and drops it there
        x = (tokens.astype(jnp.float32) / V)[..., None]
        x = jnp.where(jnp.asarray(masks["input"]) > 0, x / (1 - model.config.input_dropout), 0.0).astype(jnp.float64)
    elif model.encoding == "onehot":
        x = jax.nn.one_hot(tokens, V, dtype=jnp.float64)
        if "tokens" in masks:
            x = x * masks["tokens"][:, 0]  # the token's one-hot row of W_x dropped
        x = x * masks["input"]
    else:
        table = model.embedding[...] * masks.get("tokens", 1.0)
        x = table[tokens] * masks["input"]
    x = jnp.swapaxes(x, 0, 1)  # time-major
    finals = []
    for layer, layer_state, W_mask, out_mask, (keep_h, keep_c) in zip(
            model.layers, state, masks["weights"], masks["outputs"], masks["zone"]):
        W_h = layer.W_h[...] * W_mask

        def step(carry, inputs, W_h=W_h, layer=layer):
            xp, kh, kc = inputs
            new, _ = recurrence.step(layer.recurrence, layer.params() | {"W_h": W_h}, carry, xp)
            new = lstm.LSTMState(kh * carry.h + (1 - kh) * new.h, kc * carry.c + (1 - kc) * new.c)
            return new, new

        x_proj = layer.finish_projection(x @ layer.W_x[...])
        final, states = jax.lax.scan(step, layer_state, (x_proj, keep_h, keep_c))
        finals.append(final)
        top = states.h  # the last layer's, before its dropout
        x = states.h * jnp.swapaxes(out_mask, 0, 1)
    return jnp.swapaxes(x @ model.head_W[...] + model.head_b[...], 0, 1), finals, (top, x)


@pytest.mark.parametrize("kind", ["standard", "locked"])
@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_values_and_gradients_match_a_plain_forward_applying_the_same_masks_in_float64(encoding, kind):
    key = jax.random.key(3)
    with float64():
        model = make_model(encoding, kind, **rates_for(encoding))
        graphdef, params = nnx.split(model)  # every regulariser at once, zoneout included
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        rng = np.random.default_rng(2)
        tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
        state = tuple(lstm.LSTMState(*(jnp.asarray(rng.normal(0, 0.5, (B, h))) for _ in range(2))) for h in HIDDEN)
        weights = [jnp.asarray(rng.normal(size=shape)) for shape in ((B, T, V), (B, HIDDEN[-1]))]
        masks = masks_from(key, model)

        def value_and_grad(forward):
            def scalar(params):
                logits, finals = forward(nnx.merge(graphdef, params))[:2]
                return jnp.sum(logits * weights[0]) + jnp.sum(jnp.sin(finals[-1].c) * weights[1])
            return jax.value_and_grad(scalar)(params)

        ours, ours_grads = value_and_grad(lambda m: m(tokens, state, train=True, dropout_key=key))
        want, want_grads = value_and_grad(lambda m: masked_plain_forward(m, tokens, state, masks))
        np.testing.assert_allclose(ours, want, rtol=1e-12)
        for (path, got), expected in zip(jax.tree_util.tree_leaves_with_path(ours_grads), jax.tree.leaves(want_grads)):
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=jax.tree_util.keystr(path))
        plain, _ = value_and_grad(lambda m: masked_plain_forward(m, tokens, state, masks_from(jax.random.key(4), m)))
        assert abs(float(plain) - float(want)) > 1e-3  # another key's masks are another function


@pytest.mark.parametrize("encoding", ["onehot", "embed"])
def test_evaluation_is_mask_free_and_training_masks_follow_the_key(encoding):
    model = make_model(encoding, "locked", **{k: v for k, v in rates_for(encoding).items() if k in RATES})
    bare = make_model(encoding, "locked")  # same parameters (same seed), no regularisers
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, V, (B, T)), jnp.int32)
    np.testing.assert_array_equal(model(tokens)[0], bare(tokens)[0])
    a, b, c = (model(tokens, train=True, dropout_key=jax.random.key(k))[0] for k in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for rate in RATES:  # each regulariser alone changes training and leaves evaluation alone
        alone = make_model(encoding, "standard", **{rate: RATES[rate]})
        np.testing.assert_array_equal(alone(tokens)[0], bare(tokens)[0])
        assert not np.allclose(alone(tokens, train=True, dropout_key=jax.random.key(5))[0], bare(tokens)[0]), rate


@pytest.mark.parametrize("cell", ["lstm", "peephole", "layernorm"])
def test_zoneout_evaluates_with_its_expectation_and_decoding_agrees(cell):
    """At evaluation each unit keeps the expected share of its previous h and c; the sampler's
    token-by-token decode applies the same; training gradients with zoneout's masks match
    autodiff of the plain forward for variants too (the derived backward)."""
    with float64():
        model = make_model("embed", "standard", cell, **ZONEOUT)
        graphdef, params = nnx.split(model)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        model = nnx.merge(graphdef, params)
        rng = np.random.default_rng(6)
        tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
        state = model.initial_state(B)
        state = jax.tree.map(lambda a: a.astype(jnp.float64), state)
        logits, _ = model(tokens, state)
        want, *_ = masked_plain_forward(model, tokens, state, evaluation_masks(model))
        np.testing.assert_allclose(logits, want, rtol=1e-12, atol=1e-12)
        states, table = state, model.input_table()
        for t in range(T):
            step_logits, states = model.decode_step(tokens[:, t], states, table)
            np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-10, atol=1e-12)
        key = jax.random.key(8)
        weights = jnp.asarray(rng.normal(size=(B, T, V)))

        def grads(forward):
            return jax.grad(lambda p: jnp.sum(forward(nnx.merge(graphdef, p))[0] * weights))(params)

        ours = grads(lambda m: m(tokens, state, train=True, dropout_key=key))
        reference = grads(lambda m: masked_plain_forward(m, tokens, state, masks_from(key, m)))
        for (path, got), expected in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(reference)):
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=jax.tree_util.keystr(path))


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match="embed_dropout"):
        make_model("scaled", "standard", embed_dropout=0.1)
    with pytest.raises(ValueError, match="dropout_kind"):
        make_model("embed", "variational")
    with pytest.raises(ValueError, match="weight_drop"):
        make_model("embed", "standard", weight_drop=1.0)
    from configs import tiny
    for field, value, message in (("embed_dropout", 0.1, "needs encoding onehot or embed"),
                                  ("dropout_kind", "gal", "dropout_kind must be one of standard, locked"),
                                  ("weight_drop", -0.1, "must be in [0, 1)")):
        config = tiny.get_config()
        config.model.encoding = "scaled" if field == "embed_dropout" else "embed"
        setattr(config.model, field, value)
        with pytest.raises(run_state.ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")) as error:
            run_state.validate_config(config)
        assert "\n" not in str(error.value)


def test_a_run_with_every_regulariser_resumes_exactly(corpus_path, tmp_path):
    def config_for(max_steps):
        config = tiny_config(corpus_path, max_steps=max_steps)
        config.model.dropout_kind = "locked"
        for rate, value in (RATES | ZONEOUT).items():
            setattr(config.model, rate, value)
        return config

    train.train_and_evaluate(config_for(40), tmp_path / "whole")
    train.train_and_evaluate(config_for(20), tmp_path / "split")
    train.train_and_evaluate(config_for(40), tmp_path / "split")
    whole, split = final_params(tmp_path / "whole", config_for(40)), final_params(tmp_path / "split", config_for(40))
    for name in whole:
        np.testing.assert_array_equal(whole[name], split[name], err_msg=name)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
