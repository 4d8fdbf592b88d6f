"""One recurrent layer: a cell's parameters as an nnx Module, their initialisers and per-gate
views, and its recurrence (lstm/recurrence.py). The cell's equations are its definition in
lstm/cells/ (the LSTM's: `lstm.cells.lstm.LSTM.step`).

Parameters are stored fused, one matrix for all G gates: W_x is I×G·H, W_h is H×G·H and b is
G·H, with the gates laid out along the last axis in the order of the cell's `gates`; a cell's
extra parameters sit in `extras`. Gates are addressed by name through `gate_params()` /
`set_gate_params()`, never by slice offsets elsewhere.

Why the input projection is outside the scan: x_t W_x + b does not depend on h, so for all T
steps it is one large [B·T, I] × [I, G·H] matmul (or, for one-hot and embedded inputs, a row
gather from a V×G·H table) instead of T small ones inside the sequential loop; the scan is left
with only r_{t-1} W_r and elementwise work (docs/design.md, "Performance principles", 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lstm import recurrence
from lstm.cells import get_cell
from lstm.cells.contract import per_group
from lstm.matmul import project


def glorot_uniform(key, shape, dtype=jnp.float32):
    """Keras's default kernel init: U(±sqrt(6 / (fan_in + fan_out))) over the whole fused matrix."""
    fan_in, fan_out = shape
    limit = jnp.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def keras_orthogonal(key, shape, dtype=jnp.float32):
    """Keras's `Orthogonal` init applied to the fused H×G·H recurrent kernel, as Keras does it.

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


class LSTMCell(nnx.Module):
    """One layer of any cell of lstm/cells (`cell`, default the LSTM), with fused parameters
    `W_x` [I, G·H], `W_h` [H, G·H] and `b` [G·H], plus, for cells that have them, `extras`
    {name: fused nnx.Param}. `zoneout` {carry field: rate} is the share of each unit's previous
    value kept (Krueger et al. 2016; evaluation keeps the expected share)."""

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32,
                 matmul_dtype: str = "float32", gate_activation: str = "sigmoid", cell: str = "lstm",
                 zoneout: dict | None = None, unroll: int = 1):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.recurrence = recurrence.Recurrence(get_cell(cell, gate_activation=gate_activation), matmul_dtype,
                                                unroll)
        self.zoneout = tuple((name, float(rate)) for name, rate in (zoneout or {}).items() if rate)  # static
        width = len(self.cell.gates) * hidden_size
        self.W_x = nnx.Param(glorot_uniform(rngs.params(), (input_size, width), param_dtype))
        self.W_h = nnx.Param(keras_orthogonal(rngs.params(), (hidden_size, width), param_dtype))
        self.b = nnx.Param(self.cell.initial_bias(hidden_size).astype(param_dtype))
        if self.cell.extras:  # absent for lstm, so its parameter tree (and checkpoints) stay as they were
            self.extras = nnx.Dict({name: nnx.Param(jnp.full(extra.shape(hidden_size), extra.init, param_dtype))
                                    for name, extra in self.cell.extras.items()})

    @property
    def cell(self):
        return self.recurrence.cell

    @property
    def matmul_dtype(self) -> str:
        return self.recurrence.matmul_dtype

    def params(self) -> dict:
        """The fused parameters as arrays: {"W_x", "W_h", "b", extras...}."""
        extras = {name: param[...] for name, param in getattr(self, "extras", {}).items()}
        return {"W_x": self.W_x[...], "W_h": self.W_h[...], "b": self.b[...], **extras}

    # -- per-gate views, for tests and notebooks -------------------------------------------------
    def gate_params(self) -> dict[str, dict[str, jax.Array]]:
        """{"i": {"W_x": [I, H], "W_h": [H, H], "b": [H], …extras}, "f": …}: every parameter
        split by the groups it fuses (a cell's extras join their gate, or a group of their own,
        like layernorm's cell norm "c")."""
        return per_group(self.params(), self.cell.layout(), self.hidden_size)

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
        variables = {"W_x": self.W_x, "W_h": self.W_h, "b": self.b, **getattr(self, "extras", {})}
        for key, groups in self.cell.layout().items():
            fused = jnp.concatenate([current[g][key] for g in groups], axis=-1)
            variables[key][...] = fused.astype(variables[key][...].dtype)

    # -- the computation ----------------------------------------------------------------------------
    def initial_state(self, batch_size: int, dtype=jnp.float32):
        return self.cell.initial_carry(batch_size, self.hidden_size, dtype)

    def finish_projection(self, x_w):
        """x W_x [..., G·H] → the x_proj the step reads (the cell's `project`: + b for most).
        Row-wise, so a table of projected tokens may go through it once and be gathered from."""
        return self.cell.project(self.params(), x_w)

    def project_inputs(self, x):
        """x [..., I] → x_proj [..., G·H]; called once for every time step at once."""
        return self.finish_projection(project(x, self.W_x[...], self.matmul_dtype))

    def expected_zone(self):
        """Zoneout at evaluation: keep the expected share of the previous carry (None: off)."""
        return dict(self.zoneout) or None

    def step(self, state, x_proj):
        """One time step from a pre-computed input projection x_proj [B, G·H] (`project_inputs`).
        Returns the new state and the gate activations."""
        return recurrence.step(self.recurrence, self.params(), state, x_proj, self.expected_zone())

    def scan(self, x_proj, state, *, trace: bool = False, W_h=None, zone=None):
        """Runs the step over time with `jax.lax.scan`.

        x_proj: [T, B, G·H], time-major (the scan walks the leading axis).
        Returns (final_state, hs [T, B, H]) or, with trace=True, (final_state, (states, gates)),
        every field [T, B, ·]. Both paths run the same step, so traced gates are exactly the
        ones the forward pass used. `W_h`, if given, replaces the layer's recurrent matrix
        (weight drop's masked copy for a batch); `zone`, zoneout's training masks {field:
        [T, B, H]} (default: the layer's expected zoneout, or none).
        """
        params = self.params() if W_h is None else self.params() | {"W_h": W_h}
        zone = self.expected_zone() if zone is None else zone
        run = recurrence.traced_scan if trace else recurrence.scan
        return run(self.recurrence, params, x_proj, state, zone)
