"""The one step body of every cell, and the scans built on it: decoding, the training scan with
its derived backward, and gate tracing all run `advance` (the cell's step, then zoneout) after
`recurrent_projection` (r_{t-1} W_r, the loop's one matmul).

A `Recurrence` is the frozen spec the functions take: the cell (its options inside it), the
matmul dtype and the scan's unroll. `params` everywhere is a layer's fused parameters
{"W_x", "W_h", "b", extras...} (lstm/layer.py); the scans read only W_r and the step's own.

The backward is derived from the step. Autodiff of the scan would do three small matmuls per
step (r W_r forward; dz W_rᵀ and the per-step accumulation rᵀ dz backward). The gradient of W_r,
Σ_t r_{t-1}ᵀ dz_t, does not need to be inside the sequential loop: the reverse loop emits dz_t
for every step and W_r's gradient is then one large [R, T·B] × [T·B, G·H] matmul after it, which
runs near the machine's matmul rate; the per-step work left in the loop is one small matmul each
way. The per-step elementwise derivative is `jax.vjp` of `advance`, taken by the forward scan as
it goes (it keeps the vjp's saved arrays for the reverse loop), with respect to (x_proj_t,
h_proj_t, carry_{t-1}, the step's parameters): d h_proj_t is dz_t, feeding dW_r and, through
d r_{t-1} = dz_t W_rᵀ, the previous carry's cotangent beside the vjp's own. `lstm` had a
hand-written loop body here until the derived one matched it (docs/performance.md, "the vjp
redoes cheap arithmetic"): derived/hand-written 1.063, 1.000, 0.934 s/step at bigger, small,
shakespeare (11 interleaved rounds, 2-core AMD EPYC, 2026-12-04).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from lstm.cells.contract import Cell, per_group
from lstm.matmul import cast, check_matmul_dtype, matmul, recurrent_weight_gradient


@dataclasses.dataclass(frozen=True)
class Recurrence:
    cell: Cell
    matmul_dtype: str = "float32"
    unroll: int = 1  # lax.scan's unroll, for the forward and the reverse loop

    def __post_init__(self):
        check_matmul_dtype(self.matmul_dtype)
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1; got {self.unroll}")


def step_view(cell: Cell, step_params: dict, hidden: int) -> dict:
    """The step's parameters as the equations read them: {group: {name: [H]}}."""
    return per_group(step_params, cell.layout(), hidden)


def recurrent_projection(spec: Recurrence, W_r, carry):
    """h_proj = r_{t-1} W_r, [B, G·H]; W_r already `cast` to the matmul dtype."""
    return matmul(spec.cell.recurrent_input(carry), W_r, spec.matmul_dtype)


def advance(cell: Cell, p: dict, carry, x_proj, h_proj, zone=None):
    """The one step body: (new carry, gates). zone {field: keep}, if given, is zoneout's
    (Krueger et al. 2016) share of the previous carry each unit keeps: a 0/1 mask per step and
    unit in training, the rate itself (the expectation) in evaluation."""
    new, gates = cell.step(p, carry, x_proj, h_proj)
    if zone:
        new = new._replace(**{name: keep * getattr(carry, name) + (1 - keep) * getattr(new, name)
                              for name, keep in zone.items()})
    return new, gates


def step(spec: Recurrence, params: dict, carry, x_proj, zone=None):
    """One time step from a pre-computed input projection x_proj [B, G·H]: (carry, gates). Decoding
    runs this; the scans run the same `advance` and `recurrent_projection`."""
    cell = spec.cell
    W_r = cast(cell.recurrent_matrix(params), spec.matmul_dtype)
    p = step_view(cell, cell.step_params(params), carry.h.shape[-1])
    return advance(cell, p, carry, x_proj, recurrent_projection(spec, W_r, carry), zone)


def _per_step(zone):
    """Zoneout's masks as scan inputs ([T, B, H] each), or None where zone is constant."""
    return zone if zone and all(jnp.ndim(keep) == 3 for keep in zone.values()) else None


def _forward(spec: Recurrence, W_r, step_params, x_proj, carry, zone, keep_all: bool):
    """The forward scan: (final carry, hs [T, B, H]), or with keep_all (final, (carries, gates)),
    every field stacked over time."""
    cell = spec.cell
    W_r = cast(W_r, spec.matmul_dtype)  # rounded once, not every step
    p = step_view(cell, step_params, carry.h.shape[-1])

    def body(carry, inputs):
        xp, zone_t = inputs
        new, gates = advance(cell, p, carry, xp, recurrent_projection(spec, W_r, carry),
                             zone if zone_t is None else zone_t)
        return new, ((new, gates) if keep_all else new.h)

    return lax.scan(body, carry, (x_proj, _per_step(zone)), unroll=spec.unroll)


def traced_scan(spec: Recurrence, params: dict, x_proj, carry, zone=None):
    """(final carry, (carries, gates)), each field [T, B, ·]: the training path's forward scan
    with every step's carry and gates kept, so traced gates are exactly the ones training used."""
    cell = spec.cell
    return _forward(spec, cell.recurrent_matrix(params), cell.step_params(params), x_proj, carry, zone,
                    keep_all=True)


def scan(spec: Recurrence, params: dict, x_proj, carry, zone=None):
    """(final carry, hs [T, B, H]) for x_proj [T, B, G·H]; zone: zoneout's {field: keep}, masks
    [T, B, H] or constants (no gradient flows to them). W_r is built outside the loop's custom
    backward, so autodiff carries its gradient to W_h (and fgr's R, layernorm's centring)."""
    cell = spec.cell
    return _derived_scan(cell.recurrent_matrix(params), cell.step_params(params), x_proj, carry, zone, spec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _derived_scan(W_r, step_params, x_proj, carry, zone, spec):
    return _forward(spec, W_r, step_params, x_proj, carry, zone, keep_all=False)


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


def step_vjp(cell: Cell, step_params, carry, x_proj, h_proj, zone=None):
    """(new carry, its vjp) with respect to (x_proj_t, h_proj_t, carry_{t-1}, step_params)."""
    hidden = carry.h.shape[-1]
    new_carry = lambda xp, hp, carry, sp: advance(cell, step_view(cell, sp, hidden), carry, xp, hp, zone)[0]
    return jax.vjp(jax.checkpoint(new_carry, policy=_saved_unless_cheap), x_proj, h_proj, carry, step_params)


def _fwd(W_r, step_params, x_proj, carry, zone, spec):
    # Each step is linearised as it goes and the vjp's saved arrays (the gates, tanh c_t, ...
    # whatever the step's derivative needs, RECOMPUTED_IN_BACKWARD aside) are stacked, so the
    # reverse loop only applies them and recomputes no nonlinearity.
    cell = spec.cell
    W_rc = cast(W_r, spec.matmul_dtype)

    def body(previous, inputs):
        xp, zone_t = inputs
        new, vjp = step_vjp(cell, step_params, previous, xp, recurrent_projection(spec, W_rc, previous),
                            zone if zone_t is None else zone_t)
        r = cell.recurrent_input(new)
        # r_t, which dW_r reads after the loop, is h_t itself for most cells: stacked once.
        return new, (new.h, None if r is new.h else r, vjp)

    final, (hs, rs, step_vjps) = lax.scan(body, carry, (x_proj, _per_step(zone)), unroll=spec.unroll)
    return (final, hs), (W_r, step_params, carry, hs, rs, step_vjps, zone)


def _bwd(spec, residuals, cotangents):
    W_r, step_params, initial, hs, rs, step_vjps, zone = residuals
    d_final, d_hs = cotangents
    cell = spec.cell
    rs = hs if rs is None else rs
    r_prev = jnp.concatenate([cell.recurrent_input(initial)[None], rs[:-1]])  # r_{t-1} for every t
    W_r_T = cast(W_r.T, spec.matmul_dtype)
    via_recurrent_input = jax.linear_transpose(cell.recurrent_input, initial)  # d r_{t-1} → d carry_{t-1}

    def body(carry, inputs):
        d_next, d_params = carry
        dh_out, vjp = inputs  # this step's vjp, its saved arrays sliced out of the stack
        d_xp, dz, d_previous, d_step_params = vjp(d_next._replace(h=d_next.h + dh_out))
        d_params = jax.tree.map(jnp.add, d_params, d_step_params)
        (d_through_r,) = via_recurrent_input(matmul(dz, W_r_T, spec.matmul_dtype))
        d_previous = jax.tree.map(jnp.add, d_previous, d_through_r)
        # A step that reads x_proj + h_proj has d_xp == dz: one array stacked, not two.
        return (d_previous, d_params), (dz if cell.sums_projections else (dz, d_xp))

    zero_params = jax.tree.map(jnp.zeros_like, step_params)
    (d_initial, d_params), emitted = lax.scan(body, (d_final, zero_params), (d_hs, step_vjps),
                                              reverse=True, unroll=spec.unroll)
    dzs, d_x_proj = (emitted, emitted) if cell.sums_projections else emitted
    d_W_r = recurrent_weight_gradient(r_prev, dzs, matmul_dtype=spec.matmul_dtype)
    d_zone = jax.tree.map(jnp.zeros_like, zone)  # masks and rates are not trained
    return d_W_r, d_params, d_x_proj, d_initial, d_zone


_derived_scan.defvjp(_fwd, _bwd)
