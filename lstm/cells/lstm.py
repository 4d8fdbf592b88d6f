r"""The LSTM and its classic variants, each one definition of the cell contract (contract.py).

For an input x_t and the previous state (h_{t-1}, c_{t-1}), `LSTM.step` is:

    i_t = σ(x_t W_xi + h_{t-1} W_hi + b_i)      input gate
    f_t = σ(x_t W_xf + h_{t-1} W_hf + b_f)      forget gate
    g_t = tanh(x_t W_xg + h_{t-1} W_hg + b_g)   candidate cell values (the tutorials' C̃)
    o_t = σ(x_t W_xo + h_{t-1} W_ho + b_o)      output gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

σ is the logistic sigmoid, or, with gate_activation="hard_sigmoid", Keras's piecewise-linear
clip(0.2·z + 0.5, 0, 1): the default `recurrent_activation` of Keras 1 and of Keras 2 before
2.3, so the one the tutorial's models trained with. Its gates reach exactly 0 and 1.

The gates lie along the fused axis in the order i, f, g, o: Keras's (i, f, c, o), so a Keras
LSTM's kernel, recurrent_kernel and bias copy in unchanged, and Flax's `OptimizedLSTMCell`'s.
Why fused: one [B, H] × [H, 4H] matmul per step is faster than four [B, H] × [H, H] ones.

The variants (`model.cell`), with z_* = x_t W_x* + h_{t-1} W_h* + b_* the plain pre-activation:

  name       what changes (Greff et al. 2017's names; every ablation is of `peephole`)
  ---------  ------------------------------------------------------------------------------------
  lstm       the equations above                                           (`LSTM`)
  np         no peepholes: the same definition as `lstm`, under Greff et al.'s name (an alias)
  peephole   i = σ(z_i + p_i⊙c_{t-1})  f = σ(z_f + p_f⊙c_{t-1})  o = σ(z_o + p_o⊙c_t)
             (Gers & Schmidhuber 2000; Greff et al.'s "vanilla" LSTM; p_* are H-vectors, init 0)
  nig        peephole with i ≡ 1                (no input gate; p_i dropped)
  nfg        peephole with f ≡ 1                (no forget gate; p_f dropped)
  nog        peephole with o ≡ 1                (no output gate; p_o dropped)
  niaf       peephole with g = z_g              (no input activation)
  noaf       peephole with h = o⊙c              (no output activation)
  cifg       peephole with f = 1 − i            (coupled input and forget gate; p_f dropped)
  fgr        peephole with z_i, z_f, z_o + [i_{t-1}, f_{t-1}, o_{t-1}] R_*    (full gate recurrence:
             nine H×H matrices, gate to gate; R init 0, so fgr starts as `peephole`)
  layernorm  z = LN(h_{t-1} W_h; α_h, β_h) + LN(x_t W_x; α_x, β_x) + b, then the `lstm` gates,
             h = o⊙tanh(LN(c; α_c, β_c))        (Ba, Kiros & Hinton 2016, eqs. 20-22)
             LN(a; α, β) = α⊙(a − mean(a))/sqrt(var(a) + 1e-5) + β over a's features (all 4H
             at once for the projections, as in the paper); α init 1, β init 0.

A removed gate keeps its (unused, zero-gradient) blocks of the fused matrices, so every variant
keeps the one layout, Keras's weight copy and `gate_params()`; traces show it as its constant.
Extra parameters are named per gate: `gate_params()["i"]["p"]`; layernorm's α_c, β_c sit under
a fifth group "c".
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lstm.cells.contract import Cell, Extra

GATE_ORDER = ("i", "f", "g", "o")  # the LSTM's gates along the fused axis (module docstring)
LAYER_NORM_EPS = 1e-5  # Ba et al. write no epsilon; this keeps a constant row finite


class LSTMState(NamedTuple):
    """The LSTM's carry. Order (h, c): h is what the next layer sees, c is the memory."""

    h: jax.Array  # [B, H]
    c: jax.Array  # [B, H]


class Gates(NamedTuple):
    """Post-activation gate values of one step (each [B, H]); emitted only when tracing."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array


@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
    """Hochreiter & Schmidhuber 1997, with Gers et al. 2000's forget gate (module docstring)."""

    gates: ClassVar = GATE_ORDER
    Carry: ClassVar = LSTMState
    sums_projections: ClassVar = True

    def initial_bias(self, hidden):
        """Zeros except b_f = 1 (Keras `unit_forget_bias`; Jozefowicz et al., 2015): the cell starts
        out remembering, so gradients flow through c early in training."""
        return jnp.concatenate([jnp.full((hidden,), 1.0 if gate == "f" else 0.0) for gate in self.gates])

    def step(self, p, carry, x_proj, h_proj):
        z_i, z_f, z_g, z_o = self.split(x_proj + h_proj)
        i = self.sigma(z_i)
        f = self.sigma(z_f)
        g = jnp.tanh(z_g)
        o = self.sigma(z_o)
        c = f * carry.c + i * g
        h = o * jnp.tanh(c)
        return LSTMState(h, c), Gates(i, f, g, o)


@dataclasses.dataclass(frozen=True)
class Peephole(LSTM):
    """Greff et al.'s vanilla LSTM; each field is one of their ablations (module docstring)."""

    removed: str = ""  # the gate fixed at 1: "i" (nig), "f" (nfg) or "o" (nog)
    input_activation: bool = True  # False: g = z_g (niaf)
    output_activation: bool = True  # False: h = o⊙c (noaf)
    coupled: bool = False  # f = 1 − i (cifg)

    @property
    def extras(self):
        dropped = {self.removed} | ({"f"} if self.coupled else set())
        return {"p": Extra(tuple(g for g in ("i", "f", "o") if g not in dropped), 0.0)}

    def equations(self, p, c_prev, z):
        """(h, c, Gates) from the pre-activations z = (z_i, z_f, z_g, z_o), with z_i, z_f, z_o
        before their peepholes."""
        z_i, z_f, z_g, z_o = z
        one = jnp.ones_like(c_prev)
        i = one if self.removed == "i" else self.sigma(z_i + p["i"]["p"] * c_prev)
        if self.coupled:
            f = 1 - i
        else:
            f = one if self.removed == "f" else self.sigma(z_f + p["f"]["p"] * c_prev)
        g = jnp.tanh(z_g) if self.input_activation else z_g
        c = f * c_prev + i * g
        o = one if self.removed == "o" else self.sigma(z_o + p["o"]["p"] * c)
        h = o * (jnp.tanh(c) if self.output_activation else c)
        return h, c, Gates(i, f, g, o)

    def step(self, p, carry, x_proj, h_proj):
        h, c, gates = self.equations(p, carry.c, self.split(x_proj + h_proj))
        return LSTMState(h, c), gates


class FeedbackState(NamedTuple):
    """fgr's carry: the LSTM's (h, c) and the gates its next step sees, [B, 3H] = [i, f, o]."""

    h: jax.Array
    c: jax.Array
    gates: jax.Array


@dataclasses.dataclass(frozen=True)
class FullGateRecurrence(Peephole):
    """fgr: the previous step's i, f, o join h_{t-1} as the recurrent input,
    r_{t-1} = [h_{t-1}, i_{t-1}, f_{t-1}, o_{t-1}], multiplied by W_r = [W_h; R] (R's blocks
    zero in g's columns): one matmul per step as for the LSTM, and W_h's and R's gradients
    together one matmul after the loop. `gate_params()["i"]["R"]` is [3H, H]: the previous
    i, f, o rows into gate i."""

    Carry: ClassVar = FeedbackState
    fed_back: ClassVar = ("i", "f", "o")

    @property
    def extras(self):
        return super().extras | {"R": Extra(self.fed_back, 0.0, rows=len(self.fed_back))}

    def initial_carry(self, batch, hidden, dtype=jnp.float32):
        zeros = jnp.zeros((batch, hidden), dtype)
        return FeedbackState(zeros, zeros, jnp.zeros((batch, len(self.fed_back) * hidden), dtype))

    def recurrent_input(self, carry):
        return jnp.concatenate([carry.h, carry.gates], axis=-1)

    def recurrent_matrix(self, params):
        """[W_h; R], R's groups in their gates' columns and zeros in g's. Built by
        differentiable ops, so W_h and R get their gradients from W_r's by autodiff."""
        W_h, R = params["W_h"], params["R"]
        hidden = W_h.shape[0]
        blocks = dict(zip(self.fed_back, jnp.split(R, len(self.fed_back), axis=-1)))
        zeros = jnp.zeros((R.shape[0], hidden), R.dtype)
        return jnp.concatenate([W_h, jnp.concatenate([blocks.get(g, zeros) for g in self.gates], axis=-1)
                                .astype(W_h.dtype)], axis=0)

    def step_params(self, params):
        return {"p": params["p"]}  # R reaches the step inside W_r

    def step(self, p, carry, x_proj, h_proj):
        h, c, gates = self.equations(p, carry.c, self.split(x_proj + h_proj))
        fed = jnp.concatenate([getattr(gates, g) for g in self.fed_back], axis=-1)
        return FeedbackState(h, c, fed), gates


def centre(a):
    """a minus its mean over the features (the last axis)."""
    return a - a.mean(-1, keepdims=True)


def centred_layer_norm(a, gain, bias):
    """LN(a) for an a whose features already have mean 0: its variance is mean(a²)."""
    var = jnp.square(a).mean(-1, keepdims=True)
    return gain * a * jnp.reciprocal(jnp.sqrt(var + LAYER_NORM_EPS)) + bias


def layer_norm(a, gain, bias):
    return centred_layer_norm(centre(a), gain, bias)


@dataclasses.dataclass(frozen=True)
class LayerNorm(LSTM):
    """Ba, Kiros & Hinton 2016's layer-normalised LSTM (module docstring). Its b is added after
    normalising, in the step, so its x_proj is x_t W_x. Both projections reach the step already
    centred over their 4H features: centring commutes with the matmul (a − mean(a) =
    h (W_h − W_h's row means) for a = h W_h), so the loop multiplies by a centred W_h, computed
    once per call, and x_t W_x is centred with the other input work before the loop. The step
    then only scales (`centred_layer_norm`): one reduction instead of two per normalisation, in
    the loop and in its derived backward (docs/performance.md: ~8%)."""

    extras: ClassVar = {"gain_x": Extra(GATE_ORDER, 1.0), "bias_x": Extra(GATE_ORDER, 0.0),
                        "gain_h": Extra(GATE_ORDER, 1.0), "bias_h": Extra(GATE_ORDER, 0.0),
                        "gain": Extra(("c",), 1.0), "bias": Extra(("c",), 0.0)}
    sums_projections: ClassVar = False

    def project(self, params, x_w):
        return centre(x_w)

    def recurrent_matrix(self, params):
        return centre(params["W_h"])

    def step_params(self, params):
        return {name: params[name] for name in (*self.extras, "b")}

    def step(self, p, carry, x_proj, h_proj):
        # LN(x_t W_x) does not depend on h_{t-1}, yet its scaling stays in the step: hoisted before
        # the loop it measured slower (it materialises [T, B, 4H] arrays the loop computes on the fly).
        fused = lambda name: jnp.concatenate([p[gate][name] for gate in self.gates], axis=-1)
        z = (centred_layer_norm(h_proj, fused("gain_h"), fused("bias_h"))
             + centred_layer_norm(x_proj, fused("gain_x"), fused("bias_x")) + fused("b"))
        z_i, z_f, z_g, z_o = self.split(z)
        i = self.sigma(z_i)
        f = self.sigma(z_f)
        g = jnp.tanh(z_g)
        o = self.sigma(z_o)
        c = f * carry.c + i * g
        h = o * jnp.tanh(layer_norm(c, p["c"]["gain"], p["c"]["bias"]))
        return LSTMState(h, c), Gates(i, f, g, o)
