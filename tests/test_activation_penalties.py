"""AR and TAR (train.activation_reg, train.temporal_activation_reg; Merity et al. 2017) against
their definitions: values from a float64 loop over positions and units on the plain forward's
top outputs (with every dropout mask and zoneout on), gradients against float64 autodiff of
that plain forward, padded positions ignored; in training they are logged beside the data loss,
which they leave comparable, and they work with every objective."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from lstm import logger, regularisers, train
from lstm import state as run_state
from tests.test_cell import float64
from tests.test_regularisers import HIDDEN, RATES, ZONEOUT, B, T, V, make_model, masked_plain_forward, masks_from
from tests.test_train import tiny_config

AR, TAR = 2.0, 1.0  # AWD-LSTM's alpha and beta


def loop_penalties(h, dropped, weights):
    """AR and TAR as Merity et al. define them (mean squares over the scored positions and the
    units), one position at a time; a padded position (weight 0) counts nowhere."""
    h, dropped, weights = (np.asarray(a, np.float64) for a in (h, dropped, weights))
    ar_sum = ar_count = tar_sum = tar_count = 0.0
    for t in range(h.shape[0]):
        for b in range(h.shape[1]):
            if weights[t, b]:
                ar_sum += np.sum(dropped[t, b] ** 2)
                ar_count += h.shape[2]
            if t and weights[t, b] and weights[t - 1, b]:
                tar_sum += np.sum((h[t, b] - h[t - 1, b]) ** 2)
                tar_count += h.shape[2]
    return AR * ar_sum / ar_count, TAR * tar_sum / tar_count


def plain_penalties(h, dropped, weights):
    """The same means written with dense masks, for autodiff."""
    scored = weights[..., None]
    pairs = scored[1:] * scored[:-1]
    ar = AR * jnp.sum(scored * dropped ** 2) / (jnp.sum(scored) * h.shape[2])
    tar = TAR * jnp.sum(pairs * (h[1:] - h[:-1]) ** 2) / (jnp.sum(pairs) * h.shape[2])
    return ar, tar


@pytest.mark.parametrize("kind", ["standard", "locked"])
def test_values_and_gradients_match_the_definition_on_a_plain_forward_in_float64(kind):
    key = jax.random.key(11)
    with float64():
        model = make_model("embed", kind, **RATES, **ZONEOUT)
        graphdef, params = nnx.split(model)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        rng = np.random.default_rng(12)
        tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
        state = nnx.merge(graphdef, params).initial_state(B)
        state = jax.tree.map(lambda a: a.astype(jnp.float64), state)
        weights = jnp.asarray(rng.random((T, B)) > 0.3, jnp.float64)  # some positions padded
        masks = masks_from(key, model)

        def ours(p):
            _, _, top = nnx.merge(graphdef, p)(tokens, state, train=True, dropout_key=key, with_top=True)
            return regularisers.activation_penalties(top, weights, AR, TAR)

        def reference(p):
            _, _, top = masked_plain_forward(nnx.merge(graphdef, p), tokens, state, masks)
            return plain_penalties(*top, weights)

        _, _, top = masked_plain_forward(nnx.merge(graphdef, params), tokens, state, masks)
        np.testing.assert_allclose(ours(params), loop_penalties(*top, weights), rtol=1e-12)
        for which in range(2):  # AR's gradient, then TAR's
            got = jax.grad(lambda p, which=which: ours(p)[which])(params)
            want = jax.grad(lambda p, which=which: reference(p)[which])(params)
            for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=jax.tree_util.keystr(path))
        assert np.linalg.norm(jax.grad(lambda p: ours(p)[1])(params)["layers"][0]["W_h"][...]) > 0


def test_the_top_outputs_do_not_change_the_logits():
    model = make_model("embed", "locked", **RATES)
    tokens = jnp.asarray(np.random.default_rng(13).integers(0, V, (B, T)), jnp.int32)
    key = jax.random.key(14)
    for last_only in (False, True):
        plain, _ = model(tokens, train=True, dropout_key=key, last_only=last_only)
        with_top, _, (h, dropped) = model(tokens, train=True, dropout_key=key, last_only=last_only, with_top=True)
        assert h.shape == dropped.shape == (T, B, HIDDEN[-1])  # every position, even for `last`
        if not last_only:  # `last` draws its output mask over all positions once the top is kept
            np.testing.assert_array_equal(plain, with_top)


@pytest.mark.parametrize("objective", ["all", "last", "sentences"])
def test_training_logs_the_terms_beside_an_unchanged_data_loss(corpus_path, tmp_path, objective):
    def run(ar, tar, name):
        config = tiny_config(corpus_path, max_steps=2, log_every_steps=1, eval_every_steps=0,
                             activation_reg=ar, temporal_activation_reg=tar)
        config.data.objective = objective
        if objective == "sentences":
            config.data.stride = 1  # a window per sentence; no stride
        if objective == "last":  # keeping the top draws its output mask over every position
            config.model.dropout = 0.0
        train.train_and_evaluate(config, tmp_path / name)
        return [r for r in logger.read_metrics(tmp_path / name) if r["event"] == "train"]

    plain, penalised = run(0.0, 0.0, "plain"), run(AR, TAR, "penalised")
    assert "ar_loss" not in plain[0]
    assert plain[0]["loss"] == penalised[0]["loss"]  # step 1 starts from the same parameters
    assert penalised[0]["ar_loss"] > 0 and penalised[0]["tar_loss"] > 0
    assert plain[1]["loss"] != penalised[1]["loss"]  # the penalties were in step 1's gradient


def test_negative_coefficients_are_refused_in_one_line():
    config = tiny.get_config()
    config.train.temporal_activation_reg = -1.0
    with pytest.raises(run_state.ConfigError, match="temporal_activation_reg must be >= 0") as error:
        run_state.validate_config(config)
    assert "\n" not in str(error.value)
