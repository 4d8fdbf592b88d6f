"""How often the sigmoid gates (i, f, o) sit at their ends, after Karpathy, Johnson & Fei-Fei
(2015): the fraction of values near 0 (< 0.1, "left-saturated") and near 1 (> 0.9,
"right-saturated"), per layer, over a traced passage (`saturation_fractions`, drawn by
`gate_saturation`) or over windows of a run's text (`saturation_counts`, the numbers behind
scripts/research/gate_saturation.py).

`saturation_counts` also counts values at exactly 0 and exactly 1. Under Keras's hard sigmoid
(model.gate_activation=hard_sigmoid) such a gate is clipped and passes no gradient: those are
the values that stop learning, and a unit whose gate holds one of them at every position is
pinned (with o pinned at 0 it outputs nothing).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from lstm import schedules

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SATURATION_LOW = 0.1  # Karpathy et al. 2015: a gate below 0.1 is left-saturated ...
SATURATION_HIGH = 0.9  # ... and above 0.9 right-saturated
SATURATION_GATES = ("i", "f", "o")  # the sigmoid gates; g is a tanh and has no "near 0/1"


def _unit_counts(values, low: float, high: float) -> dict[str, np.ndarray]:
    """Per unit (the last axis), how many values lie below `low`, above `high`, at exactly 0
    and at exactly 1."""
    values = np.asarray(values)
    values = values.reshape(-1, values.shape[-1])
    return {"near_zero": np.sum(values < low, axis=0), "near_one": np.sum(values > high, axis=0),
            "exactly_zero": np.sum(values == 0, axis=0), "exactly_one": np.sum(values == 1, axis=0)}


def saturation_fractions(traces, gates: Sequence[str] = SATURATION_GATES,
                         low: float = SATURATION_LOW, high: float = SATURATION_HIGH,
                         per_unit: bool = False) -> list[dict[str, tuple]]:
    """Per layer, {gate: (fraction < low, fraction > high)} over every position of the trace.

    traces: `lstm.trace(...)` or `trace_text(...)` output (arrays [..., H]). With per_unit=True
    each fraction is an [H] array, one value per unit (over batch and time)."""
    result = []
    for layer_trace in traces:
        fractions = {}
        for gate in gates:
            values = np.asarray(layer_trace[gate])
            counts = _unit_counts(values, low, high)
            positions = values.size // values.shape[-1]
            near_zero, near_one = counts["near_zero"] / positions, counts["near_one"] / positions
            fractions[gate] = ((near_zero, near_one) if per_unit
                               else (float(near_zero.mean()), float(near_one.mean())))
        result.append(fractions)
    return result


def gate_saturation(traces, gates: Sequence[str] = SATURATION_GATES, low: float = SATURATION_LOW,
                    high: float = SATURATION_HIGH, per_unit: bool = False,
                    title: str | None = None) -> Figure:
    """One panel per layer. Default: for each gate, a bar for the fraction of its values near 0
    (< low) and one for the fraction near 1 (> high). per_unit=True draws Karpathy et al.'s
    scatter instead: one point per unit, x = fraction of time near 0, y = fraction near 1."""
    from matplotlib.figure import Figure  # imported here: saturation_counts's script draws nothing

    fractions = saturation_fractions(traces, gates, low, high, per_unit=per_unit)
    if not fractions:
        raise ValueError("no layers to plot")
    fig = Figure(figsize=(3.2 * len(fractions) + 0.4, 3.2), layout="constrained")
    axes = fig.subplots(1, len(fractions), squeeze=False, sharey=True)[0]
    for layer, (ax, layer_fractions) in enumerate(zip(axes, fractions), start=1):
        if per_unit:
            for gate in gates:
                near_zero, near_one = layer_fractions[gate]
                ax.scatter(near_zero, near_one, s=10, alpha=0.7, label=gate)
            ax.plot([0, 1], [1, 0], color="grey", lw=0.5)  # the points cannot lie above it
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"fraction of time < {low}")
            if layer == 1:
                ax.set_ylabel(f"fraction of time > {high}")
        else:
            positions = np.arange(len(gates))
            ax.bar(positions - 0.2, [layer_fractions[g][0] for g in gates], 0.4, label=f"< {low}")
            ax.bar(positions + 0.2, [layer_fractions[g][1] for g in gates], 0.4, label=f"> {high}")
            ax.set_xticks(positions, list(gates))
            ax.set_xlabel("gate")
            if layer == 1:
                ax.set_ylabel("fraction of gate values")
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {layer}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def saturation_counts(model, ids, seq_len: int, max_windows: int = 500, batch_size: int = 256,
                      low: float = SATURATION_LOW, high: float = SATURATION_HIGH) -> list[dict]:
    """The gates of `model` over up to `max_windows` evenly spaced windows of `ids`
    (`schedules.tutorial_eval_starts`), each from the zero state as a training step starts it,
    every position of every window counted. One row per layer and gate: {"layer" (from 1),
    "gate", "windows", "units", "near_zero", "near_one", "exactly_zero", "exactly_one" (each a
    fraction of all the gate's values), "stuck_at_zero", "stuck_at_one" (how many units held
    exactly 0, or 1, at every position)}."""
    import jax
    from flax import nnx

    from lstm.model import trace

    starts = schedules.tutorial_eval_starts(len(ids), seq_len, max_windows)
    ids = np.asarray(ids)
    graphdef, params = nnx.split(model)
    traced = jax.jit(lambda p, tokens: [{g: layer[g] for g in SATURATION_GATES}
                                        for layer in trace(nnx.merge(graphdef, p), tokens)])
    totals = [{gate: {} for gate in SATURATION_GATES} for _ in model.layers]
    for chunk, weights in schedules.padded_batches(starts, batch_size):
        windows = ids[chunk[:, None] + np.arange(seq_len)]
        for layer_totals, layer in zip(totals, traced(params, windows)):
            for gate, values in layer.items():
                counts = _unit_counts(np.asarray(values)[weights > 0], low, high)
                for key, count in counts.items():
                    layer_totals[gate][key] = layer_totals[gate].get(key, 0) + count
    positions = len(starts) * seq_len
    rows = []
    for layer, layer_totals in enumerate(totals, start=1):
        for gate, counts in layer_totals.items():
            units = len(counts["near_zero"])
            rows.append({"layer": layer, "gate": gate, "windows": len(starts), "units": units,
                         **{key: float(count.sum() / (positions * units)) for key, count in counts.items()},
                         "stuck_at_zero": int(np.sum(counts["exactly_zero"] == positions)),
                         "stuck_at_one": int(np.sum(counts["exactly_one"] == positions))})
    return rows
