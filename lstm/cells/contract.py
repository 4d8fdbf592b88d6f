r"""The cell contract: what a recurrent cell defines, and nothing the scan has to know besides.

A cell is a frozen dataclass (hashable, so jit and custom_vjp take it as a static argument)
whose fields are its options (the gate activation, for every cell here). It defines:

  gates             the names of its gates, in the order they lie along the fused axis: the
                    parameters are W_x [I, G·H], W_h [H, G·H] and b [G·H] for G = len(gates),
                    each gate's block addressable by name (`LSTMCell.gate_params()`).
  extras            its other parameters, {name: Extra(groups, init, rows)}: one [H] piece per
                    group, fused in the groups' order (a matrix of rows·H rows where rows > 0).
  Carry             the NamedTuple of its state, every field [B, ·]; the output h is `.h`.
  initial_bias(H)   b's initial value (the LSTM's forget bias 1).
  project(p, xw)    x_t W_x → the x_proj its step reads (+ b, for most); row-wise, so it runs
                    once for all T steps before the loop, or on a table of token rows.
  recurrent_input(carry), recurrent_matrix(p)
                    r_{t-1} and W_r: the loop's one matmul per step is h_proj = r_{t-1} W_r
                    (h_{t-1} W_h for most cells); W_r's gradient is one matmul after the loop.
  step_params(p)    the parameters its step reads (default: the extras).
  step(p, carry, x_proj, h_proj) → (carry, gates)
                    one time step, written as the cell's equations; p is the per-gate view of
                    `step_params` ({group: {name: [H]}}), gates a NamedTuple of [B, H] arrays
                    (what `lstm.trace` shows).
  sums_projections  True when the step reads x_proj and h_proj only through their sum: the
                    backward then stores one cotangent for both (tests check it against the
                    vjp, so a wrong True fails them).

The recurrence (lstm/recurrence.py) runs `step` for decoding, the training scan, gate tracing
and the backward (the vjp of `step` inside the reverse loop), and applies zoneout to any carry
field it names. Adding a cell is one class and one entry in lstm/cells/__init__.py's CELLS:

    @dataclasses.dataclass(frozen=True)
    class Leaky(LSTM):                    # an LSTM with a learned per-unit leak on c
        extras: ClassVar = {"leak": Extra(("f",), 1.0)}

        def step(self, p, carry, x_proj, h_proj):
            i, f, g, o = self.split(x_proj + h_proj)
            i, f, g, o = self.sigma(i), self.sigma(f), jnp.tanh(g), self.sigma(o)
            c = p["f"]["leak"] * f * carry.c + i * g
            return LSTMState(h=o * jnp.tanh(c), c=c), Gates(i, f, g, o)

Its backward comes from `jax.vjp` of that step; its tests take a float64 NumPy reference of its
equations (tests/numpy_reference.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


def hard_sigmoid(z):
    """Keras's hard sigmoid (Keras 1 and 2, Theano and TensorFlow backends): slope 0.2 on
    |z| < 2.5, exactly 0 or 1 outside."""
    return jnp.clip(0.2 * z + 0.5, 0.0, 1.0)


def gate_function(name: str):
    """σ, the gates' activation, by its config name."""
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "hard_sigmoid":
        return hard_sigmoid
    raise ValueError(f"gate_activation must be one of {', '.join(GATE_ACTIVATIONS)}; got {name!r}")


class Extra(NamedTuple):
    """A parameter beside W_x, W_h and b: one [H] piece per group (usually a gate), fused in
    the groups' order, all starting at `init`; rows > 0 makes it a [rows·H, len(groups)·H] matrix."""

    groups: tuple
    init: float
    rows: int = 0

    def shape(self, hidden: int) -> tuple:
        return ((self.rows * hidden,) if self.rows else ()) + (len(self.groups) * hidden,)


def per_group(pieces: dict, layout: dict, hidden: int) -> dict:
    """{name: fused [..., len(groups)·H]} → {group: {name: [..., H]}}, for `layout` {name: groups}."""
    view = {}
    for name, value in pieces.items():
        for index, group in enumerate(layout[name]):
            view.setdefault(group, {})[name] = value[..., index * hidden:(index + 1) * hidden]
    return view


@dataclasses.dataclass(frozen=True)
class Cell:
    """The contract (module docstring). Subclasses set `gates`, `Carry` and `step`."""

    gate_activation: str = "sigmoid"

    gates: ClassVar[tuple] = ()
    extras: ClassVar[dict] = {}
    Carry: ClassVar[type] = NamedTuple
    sums_projections: ClassVar[bool] = False

    def __post_init__(self):
        gate_function(self.gate_activation)  # an unknown name fails here, not at trace time

    def sigma(self, z):
        return gate_function(self.gate_activation)(z)

    def split(self, z) -> tuple:
        """A fused [..., G·H] pre-activation as its gates' pieces, in `gates` order (the one
        place the fused offsets are read)."""
        return tuple(jnp.split(z, len(self.gates), axis=-1))

    def layout(self) -> dict:
        """{parameter: the groups its fused last axis holds, in order}."""
        return {"W_x": self.gates, "W_h": self.gates, "b": self.gates} | {
            name: extra.groups for name, extra in self.extras.items()}

    def initial_bias(self, hidden: int):
        return jnp.zeros((len(self.gates) * hidden,))

    def initial_carry(self, batch: int, hidden: int, dtype=jnp.float32):
        zeros = jnp.zeros((batch, hidden), dtype)
        return self.Carry(*(zeros for _ in self.Carry._fields))

    def project(self, params: dict, x_w):
        return x_w + params["b"]

    def recurrent_input(self, carry):
        return carry.h

    def recurrent_matrix(self, params: dict):
        return params["W_h"]

    def step_params(self, params: dict) -> dict:
        return {name: params[name] for name in self.extras}

    def step(self, p: dict, carry: Any, x_proj, h_proj):
        raise NotImplementedError
