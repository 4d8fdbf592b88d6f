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
once (lstm/step.py runs it); the scan's fast backward is derived from that step (lstm/scans.py).

This module holds the parameters: LSTMCell, its initialisers and its per-gate views. The step's
names (LSTMState, Gates, matmul, lstm_step, cell_step, …) and the scans' (derived_recurrence,
recurrent_weight_gradient) are re-exported here, where they were first defined.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lstm import scans
from lstm.scans import derived_recurrence, recurrent_weight_gradient  # noqa: F401  (re-exported)
from lstm.step import (  # noqa: F401  (re-exported: the cell's public names before the split)
    GATE_ACTIVATIONS,
    MATMUL_DTYPES,
    Gates,
    LSTMState,
    cell_step,
    check_matmul_dtype,
    gate_function,
    hard_sigmoid,
    lstm_step,
    matmul,
    project,
    with_feedback,
)
from lstm.variants import GATE_ORDER, centre, extra_shape, get_variant, per_group, split_gates


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



class LSTMCell(nnx.Module):
    """One LSTM cell with fused parameters `W_x` [I, 4H], `W_h` [H, 4H] and `b` [4H], plus, for
    `cell` variants that have them, `extras` {name: fused nnx.Param} (lstm/variants.py)."""

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs,
                 param_dtype=jnp.float32, matmul_dtype: str | None = None,
                 gate_activation: str = "sigmoid", cell: str = "lstm", zoneout: tuple = (0.0, 0.0)):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)
        gate_function(gate_activation)  # rejects unknown names here, not at trace time
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
        return self.finish_projection(project(x, self.W_x[...], self.matmul_dtype))

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
        zone = self.expected_zone() if zone is None else zone
        run = scans.traced_scan if trace else scans.scan_cell
        return run(self.cell, W_h, self._extras(), x_proj, state, unroll, self.matmul_dtype,
                   self.gate_activation, zone)

