"""The cell scanned over time and its backward pass: `derived_recurrence` runs every variant,
its backward derived from the variant's step by `jax.vjp` (the forward scan keeps each step's
vjp for the reverse loop) and the recurrent weight's gradient taken out of the sequential loop
as one large matmul (docs/design.md, "Performance principles"); `traced_scan` runs the same
forward scan with every gate kept, for `lstm.trace`."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lstm.step import (
    Gates,
    LSTMState,
    gate_function,
    matmul,
    merges_time_and_batch,
    recurrent_input,
    recurrent_weights,
    transposed_matmul,
    with_feedback,
    zone_inputs,
    zoneout,
)
from lstm.variants import fed_back, get_variant, per_group


def scan_cell(cell, W_h, extras, x_proj, state: LSTMState, unroll=1, matmul_dtype=None,
              gate_activation="sigmoid", zone=None):
    """(final_state, hs [T, B, H]) of variant `cell` over x_proj [T, B, 4H]."""
    return derived_recurrence(W_h, extras, x_proj, state, unroll, matmul_dtype, gate_activation, cell, zone)


def traced_scan(cell, W_h, extras, x_proj, state: LSTMState, unroll=1, matmul_dtype=None,
                gate_activation="sigmoid", zone=None):
    """(final_state, (hs, cs, Gates)), each [T, B, H]: the training path's forward scan with
    every step's gates kept, so traced gates are exactly the ones training used."""
    variant = get_variant(cell)
    final, (hs, cs, gates, *_) = _forward(cell, *recurrent_weights(variant, W_h, extras), x_proj,
                                          with_feedback(variant, state), unroll, matmul_dtype,
                                          gate_activation, zone=zone)
    return final, (hs, cs, gates)


def _forward(cell, W_r, extras, x_proj, state, unroll, matmul_dtype, gate_activation="sigmoid", zone=None):
    """(final_state, (hs, cs, Gates, fed)), arrays [T, B, H] (fed: the fed-back gates, or
    None): the one forward scan, for training and for gate tracing. W_r and extras as
    `recurrent_weights` returns them; state with its fed-back gates (`with_feedback`); zone:
    zoneout's (keep_h, keep_c), masks [T, B, H] or constants."""
    W_r = W_r.astype(matmul_dtype) if matmul_dtype else W_r  # rounded once, not every step
    sigma = gate_function(gate_activation)
    variant = get_variant(cell)
    p = per_group(variant, extras, state.h.shape[-1])

    def body(carry, inputs):
        xp, zone_t = inputs
        # Closing over W_r as a plain array (not the module) keeps the scan body pure.
        h_proj = matmul(recurrent_input(carry), W_r, matmul_dtype)
        h, c, gates = variant.step(p, xp, h_proj, carry.c, sigma)
        new = zoneout(LSTMState(h, c, fed_back(variant, gates)), carry, zone if zone_t is None else zone_t)
        return new, (new.h, new.c, Gates(**gates), new.gates)

    return jax.lax.scan(body, state, (x_proj, zone_inputs(zone)), unroll=unroll)


def recurrent_weight_gradient(h_prev, dzs, merge_time_and_batch=None, matmul_dtype=None):
    """dW_h = Σ_t Σ_b h_{t-1}ᵀ dz_t, one matmul after the loop, for h_prev [T, B, H], dzs [T, B, 4H].

    Where (T, B) may merge into one axis (`merges_time_and_batch`, the default): free in memory,
    and only the narrow h is transposed, into a copy (`transposed_matmul`; the merge measured
    0.404 → 0.369 s/step on the bigger shape, docs/performance.md). Otherwise an einsum over
    both axes lets each device contract its own rows, and the gradient all-reduce does the rest."""
    if merge_time_and_batch is None:
        merge_time_and_batch = merges_time_and_batch()
    if merge_time_and_batch:
        return transposed_matmul(h_prev.reshape(-1, h_prev.shape[-1]), dzs.reshape(-1, dzs.shape[-1]),
                                 matmul_dtype)
    if matmul_dtype is None:
        return jnp.einsum("tbh,tbg->hg", h_prev, dzs)
    return jnp.einsum("tbh,tbg->hg", h_prev.astype(matmul_dtype), dzs.astype(matmul_dtype),
                      preferred_element_type=jnp.float32)


# -- the backward pass, derived from the step --------------------------------------------------
#
# Autodiff of the scan would do three small matmuls per step (h W_h forward; dz W_hᵀ and the
# per-step accumulation hᵀ dz backward). The gradient of W_h, Σ_t h_{t-1}ᵀ dz_t, does not
# need to be inside the sequential loop: the reverse loop below emits dz_t for every step and
# W_h's gradient is then one large [H, T·B] × [T·B, 4H] matmul after it, which runs near the
# machine's matmul rate; the per-step work left in the loop is one small matmul each way. The
# per-step elementwise derivative is `jax.vjp` of the variant's own step, so a new variant
# brings no backward code. The vjp is taken with respect to (x_proj_t, h_proj_t, c_{t-1},
# extras): d h_proj_t is dz_t, feeding dW_h and dh_{t-1} = dz_t W_hᵀ; extras' gradients
# (H-vectors) are summed in the carry. A variant that feeds gates back (fgr) differentiates them
# the same way: they are part of r_{t-1}, so d r_{t-1} = dz_t W_rᵀ hands their share to the
# previous step's vjp beside dh_{t-1}.
#
# `lstm` had a hand-written loop body here until the derived one matched it (docs/performance.md,
# "the vjp redoes cheap arithmetic"): derived/hand-written 1.063, 1.000, 0.934 s/step at bigger,
# small, shakespeare (11 interleaved rounds, 2-core AMD EPYC, 2026-12-04; ~1.09 at bigger before).


def derived_recurrence(W_h, extras, x_proj, state: LSTMState, unroll: int = 1,
                       matmul_dtype: str | None = None, gate_activation: str = "sigmoid",
                       cell: str = "lstm", zone=None):
    """Variant `cell` scanned: (final_state, hs [T, B, H]) for x_proj [T, B, 4H]; zone:
    zoneout's (keep_h, keep_c), masks [T, B, H] or constants (no gradient flows to them).
    W_h and R (fed-back gates) reach the scan as one W_r; autodiff splits its gradient."""
    variant = get_variant(cell)
    W_r, step_extras = recurrent_weights(variant, W_h, extras)
    return _derived_scan(W_r, step_extras, x_proj, with_feedback(variant, state), unroll, matmul_dtype,
                         gate_activation, cell, zone)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _derived_scan(W_r, extras, x_proj, state: LSTMState, unroll, matmul_dtype, gate_activation, cell, zone):
    final_state, (hs, *_) = _forward(cell, W_r, extras, x_proj, state, unroll, matmul_dtype,
                                     gate_activation, zone=zone)
    return final_state, hs


def _state_map(cell, gate_activation, hidden):
    """The step as the backward differentiates it: (x_proj_t, h_proj_t, c_{t-1}, h_{t-1}, extras,
    zone_t) → the new state (h_{t-1} enters elementwise only through zoneout)."""
    sigma = gate_function(gate_activation)
    variant = get_variant(cell)

    def new_state(xp, hp, c_before, h_before, extras, zone_t):
        h, c, gates = variant.step(per_group(variant, extras, hidden), xp, hp, c_before, sigma)
        return zoneout(LSTMState(h, c, fed_back(variant, gates)), LSTMState(h_before, c_before), zone_t)

    return new_state


# What the step's vjp redoes instead of saving: arithmetic as cheap as reading its result back.
# Everything else a step computes (its nonlinearities, reductions, slices) the vjp saves when
# its derivative needs it. Without this rule the vjp also keeps every product on the way (the
# gates' derivatives, c's terms, layer norm's normalised values): `np` 11 [B, H] arrays a step
# instead of 6, `layernorm` 38 instead of 14; writing those costs more than redoing them in the
# reverse loop, whose work is fused with the gradient's own (docs/performance.md: 3-15% off each
# derived variant's step at every shape).
RECOMPUTED_IN_BACKWARD = frozenset({
    lax.add_p, lax.sub_p, lax.mul_p, lax.neg_p, lax.square_p, lax.integer_pow_p,
    lax.broadcast_in_dim_p, lax.convert_element_type_p, lax.reshape_p, lax.squeeze_p})


def _saved_unless_cheap(primitive, *_, **__):
    return primitive not in RECOMPUTED_IN_BACKWARD


def _step_vjp(new_state, xp, hp, carry, extras, zone_t):
    """(new state, its vjp) with respect to (x_proj_t, h_proj_t, c_{t-1}, h_{t-1}, extras)."""
    step = jax.checkpoint(lambda *args: new_state(*args, zone_t), policy=_saved_unless_cheap)
    return jax.vjp(step, xp, hp, carry.c, carry.h, extras)


def _derived_fwd(W_r, extras, x_proj, state, unroll, matmul_dtype, gate_activation, cell, zone):
    # The forward scan linearises each step as it goes and keeps the vjp's saved arrays (the
    # gates, tanh c_t, ... whatever the step's derivative needs, RECOMPUTED_IN_BACKWARD aside),
    # so the reverse loop only applies them and recomputes no nonlinearity.
    new_state = _state_map(cell, gate_activation, state.h.shape[-1])
    W_rc = W_r.astype(matmul_dtype) if matmul_dtype else W_r  # rounded once, not every step

    def body(carry, inputs):
        xp, zone_t = inputs
        h_proj = matmul(recurrent_input(carry), W_rc, matmul_dtype)
        new, vjp = _step_vjp(new_state, xp, h_proj, carry, extras, zone if zone_t is None else zone_t)
        return new, (new.h, new.gates, vjp)  # a pytree: its saved arrays are stacked over time

    final_state, (hs, fed, step_vjps) = jax.lax.scan(body, state, (x_proj, zone_inputs(zone)), unroll=unroll)
    return (final_state, hs), (W_r, extras, state, hs, fed, step_vjps, zone)


def _derived_bwd(unroll, matmul_dtype, gate_activation, cell, residuals, cotangents):
    W_r, extras, state, hs, fed, step_vjps, zone = residuals
    d_final, d_hs = cotangents
    before = lambda first, stacked: jnp.concatenate([first[None], stacked[:-1]])  # x_{t-1} for every t
    h_prev = before(state.h, hs)
    r_prev = h_prev if fed is None else jnp.concatenate([h_prev, before(state.gates, fed)], axis=-1)
    W_r_T = W_r.T.astype(matmul_dtype) if matmul_dtype else W_r.T
    variant = get_variant(cell)
    hidden = state.h.shape[-1]

    def body(carry, inputs):
        d_next, d_extras = carry
        dh_out, vjp = inputs  # this step's vjp, its saved arrays sliced out of the stack
        d_xp, dz, dc_before, dh_before, d_step_extras = vjp(d_next._replace(h=dh_out + d_next.h))
        d_extras = jax.tree.map(jnp.add, d_extras, d_step_extras)
        # A step that sees only x_proj + h_proj has d_xp == dz: emit one array, not two.
        emitted = (dz, d_xp) if variant.normalises_inputs else dz
        d_r_prev = matmul(dz, W_r_T, matmul_dtype)  # [dh_{t-1}, d fed-back gates_{t-1}]
        dh_prev = d_r_prev[..., :hidden] if fed is not None else d_r_prev
        if zone is not None:  # zoneout also hands h_{t-1} to h_t directly, elementwise
            dh_prev = dh_prev + dh_before
        d_fed_prev = d_r_prev[..., hidden:] if fed is not None else None
        return (LSTMState(dh_prev, dc_before, d_fed_prev), d_extras), emitted

    zero_extras = jax.tree.map(jnp.zeros_like, extras)
    (d_initial, d_extras), emitted = jax.lax.scan(body, (d_final, zero_extras), (d_hs, step_vjps),
                                                  reverse=True, unroll=unroll)
    dzs, d_x_proj = emitted if variant.normalises_inputs else (emitted, emitted)
    d_W_r = recurrent_weight_gradient(r_prev, dzs, matmul_dtype=matmul_dtype)
    d_zone = jax.tree.map(jnp.zeros_like, zone)  # masks and rates are not trained
    return d_W_r, d_extras, d_x_proj, d_initial, d_zone


_derived_scan.defvjp(_derived_fwd, _derived_bwd)
