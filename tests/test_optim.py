"""Adam with ε placed as optax and as Keras place it, against float64 NumPy written from each
library's published update rule (Keras 1.2's `Adam.get_updates`; optax's `scale_by_adam`)."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from lstm import optim, train
from lstm import state as run_state

ROOT = Path(__file__).resolve().parents[1]
B1, B2 = 0.9, 0.999


def adam_moments(grads):
    """(t, m, v) after each gradient: the raw moments, which Keras and optax agree on."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        yield t, m, v


def keras_adam_reference(param, grads, lr, eps, weight_decay=0.0):
    """Keras 1.2: lr_t = lr·√(1-β₂ᵗ)/(1-β₁ᵗ); p -= lr_t·m/(√v + ε). Decoupled weight decay
    (AdamW) subtracts lr·wd·p from the pre-step parameters, as optax.adamw does."""
    p = np.asarray(param, np.float64)
    for t, m, v in adam_moments(grads):
        lr_t = lr * np.sqrt(1 - B2**t) / (1 - B1**t)
        p = p - lr_t * m / (np.sqrt(v) + eps) - lr * weight_decay * p
    return p


def optax_adam_reference(param, grads, lr, eps):
    """Kingma & Ba's Algorithm 1 as optax writes it: p -= lr·m̂/(√v̂ + ε)."""
    p = np.asarray(param, np.float64)
    for t, m, v in adam_moments(grads):
        p = p - lr * (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + eps)
    return p


def train_config(**overrides):
    t = default.get_config().train
    t.update(overrides)
    return t


def run_optimizer(optimizer, param, grads):
    params = {"w": jnp.asarray(param, jnp.float32)}
    state = optimizer.init(params)
    for g in grads:
        updates, state = optimizer.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params["w"], np.float64), state


def gradients(steps=6, seed=0):
    """Gradient magnitudes from 1e-9 to 1 across the entries, so some sit well below ε (where
    the placement decides the step) and some far above (where it does not)."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(-9, 0, 10)
    return [rng.standard_normal(10) * scale for _ in range(steps)]


# Small and exact in float32, so float32 rounding of the parameters stays far below the steps.
PARAM = np.linspace(-0.01, 0.01, 10).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("eps", [1e-8, 1e-7])
def test_keras_placement_follows_keras_update_rule(eps):
    grads = gradients()
    got, _ = run_optimizer(optim.make_optimizer(train_config(eps=eps), 100, "keras"), PARAM, grads)
    want = keras_adam_reference(PARAM, grads, 1e-3, eps)
    np.testing.assert_allclose(got - PARAM, want - PARAM, rtol=2e-4, atol=1e-8)  # atol: float32 rounding of |p| ~ 0.01


def test_optax_placement_follows_kingma_ba():
    grads = gradients(seed=1)
    got, _ = run_optimizer(optim.make_optimizer(train_config(eps=1e-8), 100, "optax"), PARAM, grads)
    want = optax_adam_reference(PARAM, grads, 1e-3, 1e-8)
    np.testing.assert_allclose(got - PARAM, want - PARAM, rtol=2e-4, atol=1e-8)  # atol: float32 rounding of |p| ~ 0.01


def test_placements_differ_only_where_gradients_are_near_eps():
    """The two rules must disagree on the tiny entries (else the tests above could not tell them
    apart) and agree on the large ones, where ε is negligible under either placement."""
    grads = gradients()
    keras = keras_adam_reference(PARAM, grads, 1e-3, 1e-8) - PARAM
    optax_ = optax_adam_reference(PARAM, grads, 1e-3, 1e-8) - PARAM
    assert np.all(np.abs(keras[:2] - optax_[:2]) > 0.5 * np.abs(optax_[:2]))
    np.testing.assert_allclose(keras[-2:], optax_[-2:], rtol=1e-3)


def test_keras_placement_with_adamw_and_clipping():
    grads = [g * 50 for g in gradients(seed=2)]  # global norms far above the clip threshold
    config = train_config(optimizer="adamw", weight_decay=0.1, grad_clip_norm=1.0, eps=1e-8)
    got, _ = run_optimizer(optim.make_optimizer(config, 100, "keras"), PARAM, grads)
    clipped = [g / max(1.0, np.linalg.norm(g)) for g in grads]
    want = keras_adam_reference(PARAM, clipped, 1e-3, 1e-8, weight_decay=0.1)
    np.testing.assert_allclose(got - PARAM, want - PARAM, rtol=2e-4, atol=1e-8)  # atol: float32 rounding of |p| ~ 0.01


def test_placements_share_optax_adam_state_layout():
    """Same state tree as optax.adam, so workdirs saved before the option (and under either
    placement) restore into the optimizer built now."""
    params = {"w": jnp.zeros(3), "b": jnp.zeros(2)}
    reference = jax.tree.structure(optax.adam(1e-3).init(params))
    for placement in optim.EPS_PLACEMENTS:
        state = optim.make_optimizer(train_config(), 10, placement).init(params)
        assert jax.tree.structure(state) == reference


def test_config_names_a_bad_placement_and_defaults_old_configs_to_optax():
    config = default.get_config()
    config.train.eps_placement = "torch"
    with pytest.raises(run_state.ConfigError, match="train.eps_placement must be one of optax, keras"):
        run_state.validate_config(config)
    del config.train["eps_placement"]  # a config saved before the option existed
    upgraded = run_state.upgrade_config(config)
    run_state.validate_config(upgraded)
    assert upgraded.train.eps_placement == "optax"


# ------------------------------------------------------------------------------ √v̂ read-out
@pytest.mark.parametrize("placement", optim.EPS_PLACEMENTS)
def test_sqrt_v_hat_is_the_bias_corrected_second_moment(placement):
    grads = [g * 50 for g in gradients(seed=3)]  # clipped: the moments see the clipped gradient
    config = train_config(grad_clip_norm=1.0)
    _, state = run_optimizer(optim.make_optimizer(config, 100, placement), PARAM, grads)
    t, scales = optim.sqrt_v_hat(state, B2)
    clipped = [g / max(1.0, np.linalg.norm(g)) for g in grads]
    *_, (steps, _, v) = adam_moments(clipped)
    assert t == steps == len(grads) and list(scales) == ["w"]
    np.testing.assert_allclose(np.asarray(scales["w"]), np.sqrt(v / (1 - B2**steps)), rtol=1e-5)


def test_sqrt_v_hat_refuses_a_state_without_steps():
    state = optim.make_optimizer(train_config(), 10).init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="no step yet"):
        optim.sqrt_v_hat(state, B2)
    with pytest.raises(ValueError, match="found 0"):
        optim.sqrt_v_hat(optax.sgd(0.1).init({"w": jnp.zeros(3)}), B2)


def test_adam_moments_script_on_a_trained_workdir(tmp_path, corpus_path):
    from configs import tiny
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.train.max_steps = 3
    config.eval.max_windows = 16
    train.train_and_evaluate(config, tmp_path / "run")
    script = [sys.executable, str(ROOT / "scripts" / "research" / "adam_moments.py"), f"--workdir={tmp_path / 'run'}"]
    done = subprocess.run([*script, "--json", "--eps=1e-3,1e-12"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    sizes = {name: p["size"] for name, p in report["parameters"].items()}
    params = run_state.init_train_state(config, report_vocab_size(tmp_path / "run"))[2].params
    assert sum(sizes.values()) == report["total"]["size"] == sum(x.size for x in jax.tree.leaves(params))
    assert report["adam_step"] == 3 and report["total"]["min"] <= report["total"]["median"]
    assert report["total"]["under"]["1e-12"] <= report["total"]["under"]["0.001"]
    bad = subprocess.run([*script, "--which=7"], capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "no checkpoint for step 7" in bad.stderr


def report_vocab_size(workdir):
    from lstm import checkpoint, data
    return len(data.Vocab.from_json(checkpoint.read_meta(workdir)[1]))
