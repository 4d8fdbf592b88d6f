"""The optimizer: Adam or AdamW, with ε placed where optax puts it or where Keras does.

The two libraries agree on Adam's moments and differ in one place. optax adds ε to the
bias-corrected √v̂; Keras (1, 2 and 3 alike) folds the bias correction into the step size and
adds ε to the raw √v:

    optax:  Δθ = -lr · m̂ / (√v̂ + ε)
    Keras:  Δθ = -lr · √(1 - β₂ᵗ)/(1 - β₁ᵗ) · m / (√v + ε) = -lr · m̂ / (√v̂ + ε/√(1 - β₂ᵗ))

so Keras's ε is effectively 1/√(1 - β₂ᵗ) times larger: 32× at step 1 (β₂ = 0.999), within
10% after 1,750 steps. It matters only where √v̂ is comparable to ε (docs/investigations.md measures
it on the tutorial's model). Both placements keep the same state (optax's ScaleByAdamState:
count and the raw moments), so a workdir resumes under either.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

EPS_PLACEMENTS = ("optax", "keras")


def scale_by_keras_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's direction as Keras computes it (ε added to √v before the bias correction);
    chain it with optax.scale_by_learning_rate, as optax.adam chains scale_by_adam."""

    def init_fn(params):
        return optax.scale_by_adam(b1, b2, eps).init(params)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * jnp.square(g), updates, state.nu)
        t = count.astype(jnp.float32)
        bias_correction = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        direction = jax.tree.map(lambda m, v: bias_correction * m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def learning_rate_schedule(train_config, total_steps: int):
    t = train_config
    if t.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, t.learning_rate, max(t.warmup_steps, 0), max(total_steps, t.warmup_steps + 1),
            end_value=t.learning_rate * t.lr_end_fraction)
    if t.warmup_steps > 0:
        return optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps)
    return t.learning_rate


def make_optimizer(train_config, total_steps: int, eps_placement: str = "optax") -> optax.GradientTransformation:
    """Gradient clipping (if set), then Adam or AdamW. The chains mirror optax.adam and
    optax.adamw link for link, so checkpoints saved before ε placement was an option restore."""
    t = train_config
    if eps_placement == "keras":
        direction = scale_by_keras_adam(t.b1, t.b2, t.eps)
    else:
        direction = optax.scale_by_adam(t.b1, t.b2, t.eps)
    decay = [optax.add_decayed_weights(t.weight_decay)] if t.optimizer == "adamw" else []
    update = optax.chain(direction, *decay, optax.scale_by_learning_rate(learning_rate_schedule(t, total_steps)))
    if t.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), update)
    return update


def sqrt_v_hat(opt_state, b2: float) -> tuple[int, object]:
    """(t, √v̂ shaped like the parameters) from an optimizer state holding one
    ScaleByAdamState: the scale Adam divides by, which ε is added to (optax) and has to be
    compared with."""
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x)]
    if len(found) != 1:
        raise ValueError(f"expected one Adam state in the optimizer state, found {len(found)}")
    count = int(found[0].count)
    if count < 1:
        raise ValueError("the Adam state has taken no step yet: v̂ is undefined")
    correction = 1.0 - b2**count
    return count, jax.tree.map(lambda v: jnp.sqrt(jnp.asarray(v, jnp.float32) / correction), found[0].nu)
