r"""Cell variants: each one its forward step, written once; the fast backward is derived from it.

Every variant shares the fused layout of `lstm.cell` (W_x [I, 4H], W_h [H, 4H], b [4H], gates
i, f, g, o) and the recurrent projection h_{t-1} W_h, computed by the scan. What a variant
defines is the elementwise map from the two projections and c_{t-1} to (h_t, c_t) and the gates,
plus its extra parameters. Below, z_* = x_t W_x* + h_{t-1} W_h* + b_* (the plain pre-activation)
and σ is the gate activation (sigmoid or hard_sigmoid):

  name       what changes (Greff et al. 2017's names; every ablation is of `peephole`)
  ---------  ------------------------------------------------------------------------------------
  lstm       i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)  c = f⊙c_{t-1} + i⊙g  h = o⊙tanh(c)
  np         no peepholes: exactly `lstm`
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
a fifth group "c". Layernorm adds b after normalising, in its step, so its x_proj is x_t W_x.
Its two projections reach the step already centred over their 4H features: centring commutes
with the matmul (a − mean(a) = h (W_h − W_h's row means) for a = h W_h), so the scan multiplies
by a centred W_h, computed once per call, and x_t W_x is centred with the other input work
before the loop. The step then only scales (`centred_layer_norm`): one reduction instead of
two per normalisation, in the loop and in its derived backward (docs/performance.md: ~8%).

Gates fed back (fgr): a variant lists in `feedback` the gates its next step sees. The state
then carries them (LSTMState.gates, [B, k·H]) and they join h_{t-1} as the recurrent input,
r_{t-1} = [h_{t-1}, i_{t-1}, f_{t-1}, o_{t-1}], multiplied by W_r = [W_h; R] (R's blocks zero
in the columns of gates it does not reach, g for fgr): one matmul per step as before, and the
gradient of W_h and R together one matmul after the loop. So fgr's step is `peephole`'s: its
definition is the entry below, R [k·H, 3H] (`gate_params()["i"]["R"]` is [3H, H]: the previous
i, f, o rows into gate i) and the `feedback` list.

Left out, and why:
  GRU has three gates (r, z, n), not four, a single state vector, and h_{t-1} entering its
      update elementwise as well as through W_h: it would need a second layout, a second
      carry and its own gate vocabulary in traces and analyses, i.e. a second cell.

Adding a variant is one entry; its backward comes from `jax.vjp` of the step (lstm/scans.py), and
tests/test_variants.py's float64 checks take it once its NumPy equations join numpy_reference.py.

    +def leaky(p, x_proj, h_proj, c_prev, sigma):  # e.g. a learned per-unit leak on c
    +    z = split_gates(x_proj + h_proj)
    +    i, f, g, o = sigma(z["i"]), sigma(z["f"]), jnp.tanh(z["g"]), sigma(z["o"])
    +    c = p["f"]["leak"] * f * c_prev + i * g
    +    h = o * jnp.tanh(c)
    +    return h, c, {"i": i, "f": f, "g": g, "o": o}
    +
     VARIANTS = {
         ...
    +    "leaky": Variant(leaky, extras={"leak": (("f",), 1.0)}),
     }
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

GATE_ORDER = ("i", "f", "g", "o")
LAYER_NORM_EPS = 1e-5  # Ba et al. write no epsilon; this keeps a constant row finite
FEEDBACK_WEIGHTS = "R"  # the extra that carries fed-back gates into the next step (fgr)


def split_gates(z):
    """Splits a [..., 4H] pre-activation into its named gate pieces (the one place offsets live)."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    return {"i": i, "f": f, "g": g, "o": o}


class Variant(NamedTuple):
    """step(p, x_proj, h_proj, c_prev, σ) → (h, c, {i, f, g, o}): h_proj = h_{t-1} W_h, p =
    {group: {name: [H]}} the extra parameters, x_proj = x_t W_x + b (x_t W_x alone for a variant
    that normalises its inputs). extras: {name: (groups, initial value)}.
    normalises_inputs: the step sees the two projections apart (layernorm), so their gradients
    differ, each centred over its features (module docstring), and b is its parameter, added
    in the step after normalising.
    feedback: the gates the next step sees through the extra `R` (module docstring)."""

    step: Callable
    extras: dict = {}
    normalises_inputs: bool = False
    feedback: tuple = ()


def lstm(p, x_proj, h_proj, c_prev, sigma):
    z = split_gates(x_proj + h_proj)
    i = sigma(z["i"])
    f = sigma(z["f"])
    g = jnp.tanh(z["g"])
    o = sigma(z["o"])
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return h, c, {"i": i, "f": f, "g": g, "o": o}


def peephole(p, x_proj, h_proj, c_prev, sigma, *, no_input_gate=False, no_forget_gate=False,
             no_output_gate=False, no_input_activation=False, no_output_activation=False,
             coupled=False):
    """Greff et al.'s vanilla LSTM; each keyword is one of their ablations."""
    z = split_gates(x_proj + h_proj)
    one = jnp.ones_like(c_prev)
    i = one if no_input_gate else sigma(z["i"] + p["i"]["p"] * c_prev)
    if coupled:
        f = 1 - i
    else:
        f = one if no_forget_gate else sigma(z["f"] + p["f"]["p"] * c_prev)
    g = z["g"] if no_input_activation else jnp.tanh(z["g"])
    c = f * c_prev + i * g
    o = one if no_output_gate else sigma(z["o"] + p["o"]["p"] * c)
    h = o * (c if no_output_activation else jnp.tanh(c))
    return h, c, {"i": i, "f": f, "g": g, "o": o}


def layer_norm(a, gain, bias):
    return centred_layer_norm(centre(a), gain, bias)


def centre(a):
    """a minus its mean over the features (the last axis)."""
    return a - a.mean(-1, keepdims=True)


def centred_layer_norm(a, gain, bias):
    """LN(a) for an a whose features already have mean 0: its variance is mean(a²)."""
    var = jnp.square(a).mean(-1, keepdims=True)
    return gain * a * jnp.reciprocal(jnp.sqrt(var + LAYER_NORM_EPS)) + bias


def fused(p, name):
    """A per-gate parameter as one [4H] vector, in gate order."""
    return jnp.concatenate([p[gate][name] for gate in GATE_ORDER], axis=-1)


def layernorm(p, x_proj, h_proj, c_prev, sigma):
    # Both projections arrive centred (module docstring), so LN is only its scaling here. LN(x_t W_x)
    # does not depend on h_{t-1}, yet its scaling stays in the step: hoisted before the scan it
    # measured slower (it materialises [T, B, 4H] arrays the loop computes on the fly;
    # docs/performance.md, log).
    z = split_gates(centred_layer_norm(h_proj, fused(p, "gain_h"), fused(p, "bias_h"))
                    + centred_layer_norm(x_proj, fused(p, "gain_x"), fused(p, "bias_x")) + fused(p, "b"))
    i = sigma(z["i"])
    f = sigma(z["f"])
    g = jnp.tanh(z["g"])
    o = sigma(z["o"])
    c = f * c_prev + i * g
    h = o * jnp.tanh(layer_norm(c, p["c"]["gain"], p["c"]["bias"]))
    return h, c, {"i": i, "f": f, "g": g, "o": o}


def _ablation(removed_peepholes=(), feedback=(), **change):
    gates = tuple(g for g in ("i", "f", "o") if g not in removed_peepholes)
    step = lambda p, x_proj, h_proj, c_prev, sigma: peephole(p, x_proj, h_proj, c_prev, sigma, **change)
    fed = {FEEDBACK_WEIGHTS: (feedback, 0.0)} if feedback else {}  # fgr's R reaches the gates it feeds back
    return Variant(step, extras={"p": (gates, 0.0)} | fed, feedback=feedback)


VARIANTS = {
    "lstm": Variant(lstm),
    "np": Variant(lstm),
    "peephole": _ablation(),
    "nig": _ablation(("i",), no_input_gate=True),
    "nfg": _ablation(("f",), no_forget_gate=True),
    "nog": _ablation(("o",), no_output_gate=True),
    "niaf": _ablation(no_input_activation=True),
    "noaf": _ablation(no_output_activation=True),
    "cifg": _ablation(("f",), coupled=True),
    "fgr": _ablation(feedback=("i", "f", "o")),
    "layernorm": Variant(layernorm, normalises_inputs=True, extras={
        "gain_x": (GATE_ORDER, 1.0), "bias_x": (GATE_ORDER, 0.0),
        "gain_h": (GATE_ORDER, 1.0), "bias_h": (GATE_ORDER, 0.0),
        "gain": (("c",), 1.0), "bias": (("c",), 0.0)}),
}
CELLS = tuple(VARIANTS)


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {name!r}")
    return VARIANTS[name]


def extra_shape(variant: Variant, name: str, hidden_size: int) -> tuple:
    """An extra's fused shape: [len(groups)·H], or for R [len(feedback)·H, len(groups)·H]."""
    groups, _ = variant.extras[name]
    rows = (len(variant.feedback) * hidden_size,) if name == FEEDBACK_WEIGHTS else ()
    return rows + (len(groups) * hidden_size,)


def recurrent_matrix(variant: Variant, W_h, R=None):
    """W_r, the matrix of the recurrent input [h_{t-1}, fed-back gates]: W_h [H, 4H] itself
    for a variant that feeds nothing back (centred for one that normalises its inputs), else
    [W_h; R] with R's groups in their gates' columns and zeros in the others'. Built by
    differentiable ops, so W_h and R get their gradients from W_r's by autodiff."""
    if variant.normalises_inputs:  # the step reads h W_h centred: h (W_h − its row means)
        W_h = centre(W_h)
    if not variant.feedback:
        return W_h
    hidden = W_h.shape[0]
    groups, _ = variant.extras[FEEDBACK_WEIGHTS]
    rows = jnp.zeros((R.shape[0], hidden), R.dtype)
    blocks = [R[:, groups.index(g) * hidden:(groups.index(g) + 1) * hidden] if g in groups else rows
              for g in GATE_ORDER]
    return jnp.concatenate([W_h, jnp.concatenate(blocks, axis=-1).astype(W_h.dtype)], axis=0)


def fed_back(variant: Variant, gates: dict):
    """The gates a step hands to the next one, [B, k·H], or None."""
    return jnp.concatenate([gates[g] for g in variant.feedback], axis=-1) if variant.feedback else None


def per_group(variant: Variant, extras: dict, hidden_size: int) -> dict:
    """{name: fused [len(groups)·H]} → {group: {name: [H]}}, the view steps read. A variant that
    normalises its inputs also gets its b here, since it adds b after normalising."""
    layout = dict(variant.extras)
    if variant.normalises_inputs:
        layout["b"] = (GATE_ORDER, None)
    view = {}
    for name, (groups, _) in layout.items():
        if name == FEEDBACK_WEIGHTS and name not in extras:  # the step gets R inside W_r, not here
            continue
        for index, group in enumerate(groups):
            view.setdefault(group, {})[name] = extras[name][..., index * hidden_size:(index + 1) * hidden_size]
    return view
