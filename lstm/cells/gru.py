r"""The gated recurrent unit (Cho et al. 2014), in the form cuDNN and PyTorch's `nn.GRU` use:

    r_t = σ(x_t W_xr + h_{t-1} W_hr + b_r)                  reset gate
    z_t = σ(x_t W_xz + h_{t-1} W_hz + b_z)                  update gate
    n_t = tanh(x_t W_xn + b_n + r_t ⊙ (h_{t-1} W_hn + b_hn))  candidate
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

The reset gate multiplies h_{t-1} W_hn after the product (Cho et al.'s paper resets h_{t-1}
before it), so h_{t-1} W_h is still one [B, H] × [H, 3H] matmul per step and W_h's gradient one
matmul after the loop. b (3H, in the order r, z, n) holds the input-side biases; PyTorch's
recurrent-side b_hr, b_hz only add to them, while b_hn sits inside the reset and is its own
parameter, `gate_params()["n"]["b_h"]`. The carry is h alone.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lstm.cells.contract import Cell, Extra


class GRUState(NamedTuple):
    h: jax.Array  # [B, H]


class GRUGates(NamedTuple):
    r: jax.Array
    z: jax.Array
    n: jax.Array


@dataclasses.dataclass(frozen=True)
class GRU(Cell):
    gates: ClassVar = ("r", "z", "n")
    extras: ClassVar = {"b_h": Extra(("n",), 0.0)}
    Carry: ClassVar = GRUState

    def step(self, p, carry, x_proj, h_proj):
        x_r, x_z, x_n = self.split(x_proj)
        h_r, h_z, h_n = self.split(h_proj)
        r = self.sigma(x_r + h_r)
        z = self.sigma(x_z + h_z)
        n = jnp.tanh(x_n + r * (h_n + p["n"]["b_h"]))
        h = (1 - z) * n + z * carry.h
        return GRUState(h), GRUGates(r, z, n)
