r"""The LSTM cell and the layer that scans it over time.

For an input x_t and the previous state (h_{t-1}, c_{t-1}):

    i_t = σ(x_t W_xi + h_{t-1} W_hi + b_i)      input gate
    f_t = σ(x_t W_xf + h_{t-1} W_hf + b_f)      forget gate
    g_t = tanh(x_t W_xg + h_{t-1} W_hg + b_g)   candidate cell values (the tutorials' C̃)
    o_t = σ(x_t W_xo + h_{t-1} W_ho + b_o)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

σ is the logistic sigmoid, or, with gate_activation="hard_sigmoid", Keras's piecewise-linear
clip(0.2·z + 0.5, 0, 1): the default `recurrent_activation` of Keras 1 and of Keras 2 before
2.3, so the one the tutorial's models trained with. Its gates reach exactly 0 and 1.

Parameters are stored fused, one matrix for all four gates: W_x is I×4H, W_h is H×4H and b is
4H, with the gates laid out along the last axis in the order of `GATE_ORDER` = (i, f, g, o).
That is Keras's order (i, f, c, o), so a Keras LSTM's kernel, recurrent_kernel and bias copy in
unchanged, and it is also the order of Flax's fused `OptimizedLSTMCell`. Gates are addressed by
name through `gate_params()` / `set_gate_params()`, never by slice offsets elsewhere.

Why fused: one [B, H] × [H, 4H] matmul per step is faster than four [B, H] × [H, H] ones.
Why `matmul_dtype`: on a GPU, bfloat16 operands run the matmuls on tensor cores at several
times the float32 rate. With matmul_dtype="bfloat16" every matmul rounds its two operands to
bfloat16 and accumulates in float32; parameters, the state (h, c), the gate nonlinearities and
the optimizer stay float32, so only the products lose precision (8 bits of mantissa in, 24
out). The default, None, is plain float32 everywhere.

Why the input projection is outside the scan: x_t W_x + b does not depend on h, so for all T
steps it is one large [B·T, I] × [I, 4H] matmul (or, for one-hot and embedded inputs, a row
gather from a V×4H table) instead of T small ones inside the sequential loop; the scan is left
with only h_{t-1} W_h and elementwise work (docs/design.md, "Performance principles", 1).

`cell=NAME` picks one of the variants of lstm/variants.py (peepholes, Greff et al.'s ablations,
layer normalisation); `lstm`, the default, is the cell above. Each variant is its step, written
once; the scan's fast backward is derived from that step (`derived_recurrence` below).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from lstm.variants import (
    FEEDBACK_WEIGHTS,
    GATE_ORDER,
    centre,
    extra_shape,
    fed_back,
    get_variant,
    per_group,
    recurrent_matrix,
    split_gates,
)

MATMUL_DTYPES = (None, "bfloat16")
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


def hard_sigmoid(z):
    """Keras's hard sigmoid (Keras 1 and 2, Theano and TensorFlow backends): slope 0.2 on
    |z| < 2.5, exactly 0 or 1 outside."""
    return jnp.clip(0.2 * z + 0.5, 0.0, 1.0)


def gate_activation_and_derivative(name: str):
    """(σ, σ' written as a function of σ's output): the backward pass keeps only outputs."""
    if name == "sigmoid":
        return jax.nn.sigmoid, lambda y: y * (1 - y)
    if name == "hard_sigmoid":
        # Flat where clipped; the kinks at exactly 0 and 1 get the flat side's zero.
        return hard_sigmoid, lambda y: jnp.where((y > 0) & (y < 1), 0.2, 0.0).astype(y.dtype)
    raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}; got {name!r}")


def matmul(a, b, dtype: str | None = None):
    """a @ b; with dtype="bfloat16", both operands rounded to bfloat16 and the product
    accumulated (and returned) in float32. Rounding an operand that already is bfloat16 is
    free, so callers cast a weight once outside a loop and pass it in."""
    if dtype is None:
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def check_matmul_dtype(dtype):
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}; got {dtype!r}")
    return dtype


class LSTMState(NamedTuple):
    """The recurrent carry. Order (h, c): h is what the next layer sees, c is the memory;
    gates, only for a variant that feeds gates back (fgr), the ones its next step sees."""

    h: jax.Array  # [B, H]
    c: jax.Array  # [B, H]
    gates: jax.Array | None = None  # [B, k·H], the variant's `feedback` gates, in that order


class Gates(NamedTuple):
    """Post-activation gate values of one step (each [B, H]); emitted only when tracing."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array


def glorot_uniform(key, shape, dtype=jnp.float32):
    """Keras's default kernel init: U(±sqrt(6 / (fan_in + fan_out))) over the whole fused matrix."""
    fan_in, fan_out = shape
    limit = jnp.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def keras_orthogonal(key, shape, dtype=jnp.float32):
    """Keras's `Orthogonal` init applied to the fused H×4H recurrent kernel, as Keras does it.

    Keras draws one orthogonal matrix of the kernel's full shape, so for H×4H the *rows* are
    orthonormal (W_h W_hᵀ = I_H); each H×H gate block on its own is not orthogonal.
    """
    rows, cols = shape
    flat = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(flat)
    q = q * jnp.sign(jnp.diag(r))  # makes the draw uniform over orthogonal matrices
    if rows < cols:
        q = q.T
    return q.astype(dtype)


def unit_forget_bias(hidden_size, dtype=jnp.float32):
    """Zeros except b_f = 1 (Keras `unit_forget_bias`; Jozefowicz et al., 2015): the cell starts
    out remembering, so gradients flow through c early in training."""
    gates = {name: jnp.zeros((hidden_size,), dtype) for name in GATE_ORDER}
    gates["f"] = jnp.ones((hidden_size,), dtype)
    return jnp.concatenate([gates[name] for name in GATE_ORDER])


def lstm_step(W_h, state: LSTMState, x_proj, matmul_dtype: str | None = None,
              gate_activation: str = "sigmoid"):
    """The equations of the module docstring (`variants.lstm`, one line per gate).
    x_proj = x_t W_x + b, [B, 4H]."""
    return cell_step("lstm", W_h, {}, state, x_proj, matmul_dtype, gate_activation)


def cell_step(cell: str, W_h, extras, state: LSTMState, x_proj, matmul_dtype=None,
              gate_activation="sigmoid", zone=None):
    """One step of variant `cell`; extras {name: fused array} are its extra parameters; zone
    (keep_h, keep_c), if given, is zoneout's share of the previous state that is kept."""
    sigma, _ = gate_activation_and_derivative(gate_activation)
    variant = get_variant(cell)
    W_r, extras = recurrent_weights(variant, W_h, extras)
    state = with_feedback(variant, state)
    h_proj = matmul(recurrent_input(state), W_r, matmul_dtype)
    p = per_group(variant, extras, state.h.shape[-1])
    h, c, gates = variant.step(p, x_proj, h_proj, state.c, sigma)
    return zoneout(LSTMState(h, c, fed_back(variant, gates)), state, zone), Gates(**gates)


def recurrent_weights(variant, W_h, extras: dict):
    """(W_r, the step's extras): W_r is the matrix the scan multiplies the recurrent input by
    (variants.recurrent_matrix): W_h, centred for a variant that normalises its inputs, and
    [W_h; R] for one that feeds gates back, R then leaving the step's extras."""
    step_extras = {name: value for name, value in extras.items() if name != FEEDBACK_WEIGHTS}
    return recurrent_matrix(variant, W_h, extras.get(FEEDBACK_WEIGHTS)), step_extras


def with_feedback(variant, state: LSTMState) -> LSTMState:
    """The state with the gates `variant` feeds back: zeros (nothing fed yet) where it has none."""
    if not variant.feedback or state.gates is not None:
        return state
    batch, hidden = state.h.shape[:-1], state.h.shape[-1]
    return state._replace(gates=jnp.zeros(batch + (len(variant.feedback) * hidden,), state.h.dtype))


def recurrent_input(state: LSTMState):
    """r_{t-1}: h_{t-1}, followed by the fed-back gates where a variant has them."""
    return state.h if state.gates is None else jnp.concatenate([state.h, state.gates], axis=-1)


def zoneout(new: LSTMState, previous: LSTMState, zone) -> LSTMState:
    """Zoneout (Krueger et al. 2016): each unit keeps its previous value where keep = 1.
    In training keep is a 0/1 mask drawn per step and unit; in evaluation it is the rate
    itself, the expectation. zone = None (no zoneout) or (keep_h, keep_c). Fed-back gates
    are not state units: they pass as computed."""
    if zone is None:
        return new
    keep_h, keep_c = zone
    return new._replace(h=keep_h * previous.h + (1 - keep_h) * new.h, c=keep_c * previous.c + (1 - keep_c) * new.c)


def _per_step(zone):
    """Zoneout's masks as scan inputs ([T, B, H] each), or None where zone is constant."""
    return zone if zone is not None and jnp.ndim(zone[0]) == 3 else None


class LSTMCell(nnx.Module):
    """One LSTM cell with fused parameters `W_x` [I, 4H], `W_h` [H, 4H] and `b` [4H], plus, for
    `cell` variants that have them, `extras` {name: fused nnx.Param} (lstm/variants.py)."""

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs,
                 param_dtype=jnp.float32, matmul_dtype: str | None = None,
                 gate_activation: str = "sigmoid", cell: str = "lstm", zoneout: tuple = (0.0, 0.0)):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)
        gate_activation_and_derivative(gate_activation)  # rejects unknown names here, not at trace time
        self.gate_activation = gate_activation
        self.cell = cell
        self.zoneout = tuple(float(rate) for rate in zoneout)  # (h, c): kept with this probability
        variant = get_variant(cell)
        self.W_x = nnx.Param(glorot_uniform(rngs.params(), (input_size, 4 * hidden_size), param_dtype))
        self.W_h = nnx.Param(keras_orthogonal(rngs.params(), (hidden_size, 4 * hidden_size), param_dtype))
        self.b = nnx.Param(unit_forget_bias(hidden_size, param_dtype))
        if variant.extras:  # absent for lstm, so its parameter tree (and checkpoints) stay as they were
            self.extras = nnx.Dict({
                name: nnx.Param(jnp.full(extra_shape(variant, name, hidden_size), value, param_dtype))
                for name, (_, value) in variant.extras.items()})

    def _extras(self) -> dict:
        extras = {name: param[...] for name, param in getattr(self, "extras", {}).items()}
        if get_variant(self.cell).normalises_inputs:
            extras["b"] = self.b[...]
        return extras

    # -- per-gate views, for tests and notebooks -------------------------------------------------
    def gate_params(self) -> dict[str, dict[str, jax.Array]]:
        """{"i": {"W_x": [I, H], "W_h": [H, H], "b": [H], …extras}, "f": …, "g": …, "o": …}; a
        variant's extra parameters join their gate (layernorm's cell norm: group "c")."""
        W_x, W_h, b = (split_gates(p[...]) for p in (self.W_x, self.W_h, self.b))
        gates = {name: {"W_x": W_x[name], "W_h": W_h[name], "b": b[name]} for name in GATE_ORDER}
        extras = {k: v for k, v in self._extras().items() if k != "b"}
        for group, pieces in per_group(get_variant(self.cell)._replace(normalises_inputs=False),
                                       extras, self.hidden_size).items():
            gates.setdefault(group, {}).update(pieces)
        return gates

    def set_gate_params(self, gates: dict[str, dict[str, jax.Array]]) -> None:
        """Inverse of `gate_params()`: writes per-gate pieces back into the fused parameters.
        Gates or pieces left out keep their current values."""
        current = self.gate_params()
        for name, pieces in gates.items():
            if name not in current:
                raise KeyError(f"unknown gate {name!r}; gates are {tuple(current)}")
            for key, value in pieces.items():
                if key not in current[name]:
                    raise KeyError(f"gate {name} has no parameter {key!r}; it has {tuple(current[name])}")
                expected = current[name][key].shape
                if jnp.shape(value) != expected:
                    raise ValueError(f"gate {name} {key}: got shape {jnp.shape(value)}, expected {expected}")
                current[name][key] = jnp.asarray(value)
        params = {"W_x": self.W_x, "W_h": self.W_h, "b": self.b, **getattr(self, "extras", {})}
        layout = {key: GATE_ORDER for key in ("W_x", "W_h", "b")}
        layout |= {name: groups for name, (groups, _) in get_variant(self.cell).extras.items()}
        for key, groups in layout.items():
            fused = jnp.concatenate([current[g][key] for g in groups], axis=-1)
            params[key][...] = fused.astype(params[key][...].dtype)

    # -- the computation ----------------------------------------------------------------------------
    def initial_state(self, batch_size: int, dtype=jnp.float32) -> LSTMState:
        zeros = jnp.zeros((batch_size, self.hidden_size), dtype)
        return with_feedback(get_variant(self.cell), LSTMState(h=zeros, c=zeros))

    def finish_projection(self, x_w):
        """x W_x [..., 4H] → the x_proj the step reads: + b, unless the variant normalises its
        inputs (layernorm: centred, b added in its step after normalising). Row-wise, so a
        table of projected tokens may go through it once and be gathered from afterwards."""
        return centre(x_w) if get_variant(self.cell).normalises_inputs else x_w + self.b[...]

    def project_inputs(self, x):
        """x [..., I] → x_proj [..., 4H]; called once for every time step at once."""
        return self.finish_projection(matmul(x, self.W_x[...], self.matmul_dtype))

    def step(self, state: LSTMState, x_proj):
        """One time step from a pre-computed input projection x_proj [B, 4H] (`project_inputs`).
        Returns the new state and the gate activations."""
        return cell_step(self.cell, self.W_h[...], self._extras(), state, x_proj,
                         self.matmul_dtype, self.gate_activation, self.expected_zone())

    def expected_zone(self):
        """Zoneout at evaluation: keep the expected share of the previous state (None: off)."""
        return self.zoneout if any(self.zoneout) else None

    def scan(self, x_proj, state: LSTMState, *, unroll: int = 1, trace: bool = False, W_h=None,
             zone=None):
        """Runs `step` over time with `jax.lax.scan`.

        x_proj: [T, B, 4H], time-major (the scan walks the leading axis).
        Returns (final_state, hs [T, B, H]) or, with trace=True,
        (final_state, (hs, cs, Gates)) where every array is [T, B, H]. Both paths run the
        same `step`, so traced gates are exactly the ones the forward pass used. `W_h`, if
        given, replaces the layer's recurrent matrix (weight drop's masked copy for a batch);
        `zone`, zoneout's training masks (keep_h, keep_c), each [T, B, H] (default: the
        layer's expected zoneout, or none).
        """
        W_h = self.W_h[...] if W_h is None else W_h
        dtype, activation, extras = self.matmul_dtype, self.gate_activation, self._extras()
        zone = self.expected_zone() if zone is None else zone
        if trace:
            variant = get_variant(self.cell)
            final, (hs, cs, gates, *_) = _forward(self.cell, *recurrent_weights(variant, W_h, extras), x_proj,
                                                  with_feedback(variant, state), unroll, dtype, activation, zone=zone)
            return final, (hs, cs, gates)
        if self.cell == "lstm" and HAND_WRITTEN_LSTM_BACKWARD and zone is None:
            return recurrence(W_h, x_proj, state, unroll, dtype, activation)
        return derived_recurrence(W_h, extras, x_proj, state, unroll, dtype, activation, self.cell, zone)


# -- the backward pass, written out ------------------------------------------------------------
#
# Autodiff of the scan would do three small matmuls per step (h W_h forward; dz W_hᵀ and the
# per-step accumulation hᵀ dz backward). The gradient of W_h, Σ_t h_{t-1}ᵀ dz_t, does not
# need to be inside the sequential loop: the loop below emits dz_t for every step and W_h's
# gradient is then one large [H, T·B] × [T·B, 4H] matmul, which runs near the machine's matmul
# rate. The per-step work left in the loop is one small matmul each way.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def recurrence(W_h, x_proj, state: LSTMState, unroll: int = 1, matmul_dtype: str | None = None,
               gate_activation: str = "sigmoid"):
    """The scanned cell: (final_state, hs [T, B, H]) for x_proj [T, B, 4H]."""
    final_state, (hs, *_) = _forward("lstm", W_h, {}, x_proj, state, unroll, matmul_dtype,
                                     gate_activation)
    return final_state, hs


def _forward(cell, W_r, extras, x_proj, state, unroll, matmul_dtype, gate_activation="sigmoid",
             keep_h_proj=False, zone=None):
    """(final_state, (hs, cs, Gates, h_projs, fed)), arrays [T, B, H] (h_projs [T, B, 4H], or
    None unless keep_h_proj; fed: the fed-back gates, or None): the one scan the training path
    and gate tracing run. W_r and extras as `recurrent_weights` returns them; state with its
    fed-back gates (`with_feedback`); zone: zoneout's (keep_h, keep_c), masks [T, B, H] or
    constants."""
    W_r = W_r.astype(matmul_dtype) if matmul_dtype else W_r  # rounded once, not every step
    sigma, _ = gate_activation_and_derivative(gate_activation)
    variant = get_variant(cell)
    p = per_group(variant, extras, state.h.shape[-1])

    def body(carry, inputs):
        xp, zone_t = inputs
        # Closing over W_r as a plain array (not the module) keeps the scan body pure.
        h_proj = matmul(recurrent_input(carry), W_r, matmul_dtype)
        h, c, gates = variant.step(p, xp, h_proj, carry.c, sigma)
        new = zoneout(LSTMState(h, c, fed_back(variant, gates)), carry, zone if zone_t is None else zone_t)
        return new, (new.h, new.c, Gates(**gates), h_proj if keep_h_proj else None, new.gates)

    return jax.lax.scan(body, state, (x_proj, _per_step(zone)), unroll=unroll)


def _recurrence_fwd(W_h, x_proj, state, unroll, matmul_dtype, gate_activation):
    final_state, (hs, cs, gates, *_) = _forward("lstm", W_h, {}, x_proj, state, unroll, matmul_dtype,
                                                gate_activation)
    return (final_state, hs), (W_h, state, hs, cs, gates)


def _recurrence_bwd(unroll, matmul_dtype, gate_activation, residuals, cotangents):
    W_h, state, hs, cs, gates = residuals
    (d_final, d_hs) = cotangents
    h_prev = jnp.concatenate([state.h[None], hs[:-1]])  # h_{t-1} for every t
    c_prev = jnp.concatenate([state.c[None], cs[:-1]])
    W_h_T = W_h.T.astype(matmul_dtype) if matmul_dtype else W_h.T
    _, d_sigma = gate_activation_and_derivative(gate_activation)

    def body(carry, step):
        dh_next, dc_next = carry
        dh_out, c, c_before, i, f, g, o = step
        dh = dh_out + dh_next  # h_t feeds the output and the next step
        tanh_c = jnp.tanh(c)
        dc = dc_next + dh * o * (1 - tanh_c ** 2)  # h = o ⊙ tanh(c)
        dz = {  # through each gate's nonlinearity: σ' = σ(1-σ) (or 0.2 / 0), tanh' = 1-tanh²
            "i": dc * g * d_sigma(i),  # c = f ⊙ c_prev + i ⊙ g
            "f": dc * c_before * d_sigma(f),
            "g": dc * i * (1 - g ** 2),
            "o": dh * tanh_c * d_sigma(o),
        }
        dz = jnp.concatenate([dz[name] for name in GATE_ORDER], axis=-1)
        return (matmul(dz, W_h_T, matmul_dtype), dc * f), dz

    steps = (d_hs, cs, c_prev, gates.i, gates.f, gates.g, gates.o)
    (dh0, dc0), dzs = jax.lax.scan(body, (d_final.h, d_final.c), steps, reverse=True, unroll=unroll)
    d_W_h = recurrent_weight_gradient(h_prev, dzs, matmul_dtype=matmul_dtype)
    return d_W_h, dzs, LSTMState(h=dh0, c=dc0)


def recurrent_weight_gradient(h_prev, dzs, merge_time_and_batch=None, matmul_dtype=None):
    """dW_h = Σ_t Σ_b h_{t-1}ᵀ dz_t, one matmul after the loop, for h_prev [T, B, H], dzs [T, B, 4H].

    On one device, (T, B) merge into one axis: free in memory, and XLA's dot then transposes
    only the narrow h (measured 0.404 → 0.369 s/step on the bigger shape, docs/performance.md).
    With several devices the batch axis is sharded, and merging it with time would make XLA
    all-gather every device's activations; an einsum over both axes lets each device contract
    its own rows, and the gradient all-reduce does the rest."""
    if merge_time_and_batch is None:
        merge_time_and_batch = jax.device_count() == 1
    if merge_time_and_batch:
        return matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, dzs.reshape(-1, dzs.shape[-1]),
                      matmul_dtype)
    if matmul_dtype is None:
        return jnp.einsum("tbh,tbg->hg", h_prev, dzs)
    return jnp.einsum("tbh,tbg->hg", h_prev.astype(matmul_dtype), dzs.astype(matmul_dtype),
                      preferred_element_type=jnp.float32)


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# -- the backward pass, derived from the step --------------------------------------------------
#
# The same shape as above with the per-step elementwise derivative taken by `jax.vjp` of the
# variant's own step, so a new variant brings no backward code. The vjp is taken with respect
# to (x_proj_t, h_proj_t, c_{t-1}, extras): d h_proj_t is dz_t, feeding dW_h (one matmul after the
# loop) and dh_{t-1} = dz_t W_hᵀ; extras' gradients (H-vectors) are summed in the carry. A variant
# that feeds gates back (fgr) differentiates them the same way: they are part of r_{t-1}, so
# d r_{t-1} = dz_t W_rᵀ hands their share to the previous step's vjp beside dh_{t-1}.

# `lstm` keeps the hand-written backward above: it reuses the saved gates where the derived one
# recomputes the step's nonlinearities, and it measured ~8% faster on the bigger shape, in
# every one of 8 interleaved rounds (median 0.514 vs 0.554 s/step, 2 shared AMD EPYC cores,
# `scripts/research/backward_ab.py --rounds=8 --steps=6`). tests/test_variants.py binds the two.
HAND_WRITTEN_LSTM_BACKWARD = True


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


def _derived_fwd(W_r, extras, x_proj, state, unroll, matmul_dtype, gate_activation, cell, zone):
    final_state, (hs, cs, _, h_projs, fed) = _forward(cell, W_r, extras, x_proj, state, unroll,
                                                      matmul_dtype, gate_activation, keep_h_proj=True, zone=zone)
    return (final_state, hs), (W_r, extras, x_proj, state, hs, cs, h_projs, fed, zone)


def _derived_bwd(unroll, matmul_dtype, gate_activation, cell, residuals, cotangents):
    W_r, extras, x_proj, state, hs, cs, h_projs, fed, zone = residuals
    d_final, d_hs = cotangents
    before = lambda first, stacked: jnp.concatenate([first[None], stacked[:-1]])  # x_{t-1} for every t
    h_prev, c_prev = before(state.h, hs), before(state.c, cs)
    r_prev = h_prev if fed is None else jnp.concatenate([h_prev, before(state.gates, fed)], axis=-1)
    W_r_T = W_r.T.astype(matmul_dtype) if matmul_dtype else W_r.T
    sigma, _ = gate_activation_and_derivative(gate_activation)
    variant = get_variant(cell)
    hidden = state.h.shape[-1]

    def new_state(xp, hp, c_before, h_before, extras, zone_t):
        h, c, gates = variant.step(per_group(variant, extras, hidden), xp, hp, c_before, sigma)
        return zoneout(LSTMState(h, c, fed_back(variant, gates)), LSTMState(h_before, c_before), zone_t)

    def body(carry, step):
        d_next, d_extras = carry
        dh_out, xp, hp, c_before, h_before, zone_t = step
        zone_t = zone if zone_t is None else zone_t
        _, vjp = jax.vjp(lambda *args: new_state(*args, zone_t), xp, hp, c_before, h_before, extras)
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
    # h_{t-1} enters a step elementwise only through zoneout; without it XLA drops the input.
    steps = (d_hs, x_proj, h_projs, c_prev, h_prev if zone is not None else None, _per_step(zone))
    (d_initial, d_extras), emitted = jax.lax.scan(body, (d_final, zero_extras), steps, reverse=True,
                                                  unroll=unroll)
    dzs, d_x_proj = emitted if variant.normalises_inputs else (emitted, emitted)
    d_W_r = recurrent_weight_gradient(r_prev, dzs, matmul_dtype=matmul_dtype)
    d_zone = jax.tree.map(jnp.zeros_like, zone)  # masks and rates are not trained
    return d_W_r, d_extras, d_x_proj, d_initial, d_zone


_derived_scan.defvjp(_derived_fwd, _derived_bwd)
