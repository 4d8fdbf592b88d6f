"""Dropout masks of the recurrent regularisers, each drawn from its own key.

Every mask is inverted: kept values are scaled by 1/(1 − p), so a unit's expected value is what
it is without the mask, and evaluation uses no mask at all. Activations are time-major
([T, B, F]), as inside the model.

  standard   a fresh mask for every position, [T, B, F] (Srivastava et al. 2014; the tutorial's
             Dropout(0.2)).
  locked     one mask per sequence, shared across time, [1, B, F]: variational dropout (Gal &
             Ghahramani 2016), AWD-LSTM's LockedDropout (Merity et al. 2018). The same units
             are silenced at every step, so the recurrence cannot route around them.
  embedding  one mask per batch over the vocabulary, [V, 1]: a dropped token loses its whole
             embedding (or one-hot row) at every occurrence in the batch (Gal & Ghahramani;
             AWD-LSTM's embedded_dropout).
  weight     DropConnect on the recurrent weights W_h, one mask per batch over its entries,
             [H, 4H], shared by every step and every sequence (AWD-LSTM's WeightDrop): the
             recurrence is regularised without touching the fast scan, which only sees a
             different W_h.
  zoneout    one 0/1 mask each for h and c, [T, B, H], fresh at every step and unit
             (Krueger et al. 2016): 1 where the unit keeps its previous value. The masks are
             scan inputs; lstm.recurrence.advance mixes the states, and evaluation uses the rates.

Two loss terms act on the top layer's outputs h_t (Merity et al. 2017, AWD-LSTM), as means
over the scored positions and the units, each scaled by its coefficient:
  AR   α · mean(m_t ⊙ h_t)², on the outputs after their dropout m_t: large activations cost;
  TAR  β · mean(h_t − h_{t−1})², before dropout, over neighbouring positions both scored:
       outputs that jump from one step to the next cost.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DROPOUT_KINDS = ("standard", "locked")


def keep_scale(key, rate: float, shape, dtype=jnp.float32):
    """A mask of 0 (dropped) and 1/(1 − rate) (kept), in the dtype of what it multiplies."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.asarray(0.0, dtype))


def dropout(x, key, rate: float, kind: str = "standard"):
    """x [T, B, F] with `kind` dropout at `rate`."""
    if rate <= 0:
        return x
    shape = x.shape if kind == "standard" else (1,) + x.shape[1:]
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    # x / (1 − rate) where kept, as the model always computed it, so standard runs keep their numbers.
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def one_hot_input_scale(key, rate: float, kind: str, tokens, vocab_size: int, dtype=jnp.float32):
    """Dropout on one-hot inputs as a [T, B, 1] factor on each gathered row: only the hot entry
    of e_k matters. Standard: a fresh draw per position. Locked: a [B, V] mask per sequence,
    read at each position's token, which is what a [1, B, V] mask on the one-hot vectors does."""
    if kind == "standard":
        return dropout(jnp.ones(tokens.shape + (1,), dtype), key, rate, kind)
    per_sequence = keep_scale(key, rate, (tokens.shape[1], vocab_size), dtype)  # [B, V]
    return jnp.take_along_axis(per_sequence.T, tokens, axis=0)[..., None]  # [T, B, 1]


def embedding_mask(key, rate: float, vocab_size: int, dtype=jnp.float32):
    """[V, 1]: multiply the embedding table (or the one-hot projection table) by it."""
    return keep_scale(key, rate, (vocab_size, 1), dtype)


def weight_drop(W_h, key, rate: float):
    """W_h with DropConnect: each entry kept with probability 1 − rate and rescaled."""
    if rate <= 0:
        return W_h
    return W_h * keep_scale(key, rate, W_h.shape, W_h.dtype)


def zoneout_mask(key, rate: float, shape, dtype=jnp.float32):
    """[T, B, H]: 1 with probability rate (the unit keeps its previous value), not rescaled,
    since zoneout mixes two states rather than dropping one."""
    return jax.random.bernoulli(key, rate, shape).astype(dtype)


def activation_penalties(top, position_weights, ar: float, tar: float):
    """(AR, TAR) for `top`, the top layer's outputs before and after dropout ([T, B, H] each),
    with `position_weights` [T, B] (0: a padded row or a position past a sentence's end)."""
    wide = jnp.promote_types(top[0].dtype, jnp.float32)  # bfloat16 widened, float64 kept
    undropped, dropped = (x.astype(wide) for x in top)
    w = position_weights.astype(wide)[..., None]
    units = undropped.shape[-1]
    ar_term = ar * jnp.sum(w * jnp.square(dropped)) / (jnp.maximum(jnp.sum(w), 1.0) * units)
    pairs = w[1:] * w[:-1]  # both neighbours scored
    steps = jnp.diff(undropped, axis=0)
    tar_term = tar * jnp.sum(pairs * jnp.square(steps)) / (jnp.maximum(jnp.sum(pairs), 1.0) * units)
    return ar_term, tar_term
