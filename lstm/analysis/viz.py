"""What the cells do, as figures and tables for notebooks (and the README's image).

Every plotting function returns a `matplotlib.figure.Figure` built without pyplot: no backend
is switched, no global figure list grows, nothing is shown. A notebook displays the returned
figure (the last expression of a cell); a script calls `fig.savefig(path)`.

The analyses follow Karpathy, Johnson & Fei-Fei (2015), "Visualizing and understanding
recurrent networks" (arXiv:1506.02078):

- `activation_heatmap`, `gate_heatmaps`, `text_heatmap`: chosen hidden units (or gates) over a
  passage, with the passage's characters as the axis;
- `find_units` (with `unit_table` and `best_unit`) and the per-character features
  `inside_quotes`, `line_position` and `word_boundary`: which units track a property of the
  text, ranked by correlation;
- `saturation_fractions` / `gate_saturation`: how often the i, f and o gates sit near 0
  (< 0.1, "left-saturated") or near 1 (> 0.9, "right-saturated"), per layer;
- `loss_curves` (from metrics.jsonl records), `sample_table`, `markdown_table`.

Alignment: `trace_text(model, vocab, text)[layer]["h"][t]` is the state after the model has
read text[t], so a feature of text[t] lines up with row t.

About 470 lines, past the usual ~400: notebooks import one module for the whole analysis, and
the heat maps, unit rankings and saturation plots share the passage checks and colour scales.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from lstm import data
from lstm.model import trace

SATURATION_LOW = 0.1  # Karpathy et al. 2015: a gate below 0.1 is left-saturated ...
SATURATION_HIGH = 0.9  # ... and above 0.9 right-saturated
SATURATION_GATES = ("i", "f", "o")  # the sigmoid gates; g is a tanh and has no "near 0/1"
QUOTES = "\"'“”‘’"
OPENING_QUOTES = "“‘"
CLOSING_QUOTES = "”’"
# Value ranges for colour scales: the sigmoid gates live in (0, 1); h and g in (-1, 1).
_UNIT_RANGE = {"i": (0.0, 1.0), "f": (0.0, 1.0), "o": (0.0, 1.0), "g": (-1.0, 1.0), "h": (-1.0, 1.0)}
_VISIBLE = {"\n": "↵", " ": "␣", "\t": "⇥"}


# ----------------------------------------------------------------------------- tracing text
def trace_text(model, vocab, text: str) -> list[dict[str, np.ndarray]]:
    """`lstm.trace` over one passage: per layer a dict i, f, g, o, c, h of [len(text), H]
    NumPy arrays, starting from the zero state. Characters outside `vocab` raise DataError."""
    if not text:
        raise ValueError("trace_text needs a non-empty passage")
    tokens = np.asarray(vocab.encode(text), np.int32)[None]
    return [{name: np.asarray(value[0]) for name, value in layer.items()}
            for layer in trace(model, tokens)]


def held_out_text(config, length: int, offset: int = 0) -> str:
    """`length` characters of the text the model did not train on: the corpus's held-out tail
    (data.val_fraction > 0), otherwise the last characters of the training text."""
    corpus = data.load_corpus(config.data)
    if corpus.val is not None:
        ids = corpus.val[offset:offset + length]
    else:
        end = len(corpus.train) - offset
        ids = corpus.train[max(end - length, 0):end]
    return corpus.vocab.decode(ids)


# ------------------------------------------------------------------------ per-character features
def _is_apostrophe(text: str, t: int) -> bool:
    """A ' or ’ between two letters (don't, alice's) is an apostrophe, not a quote mark."""
    return (0 < t < len(text) - 1 and text[t] in "'’"
            and text[t - 1].isalpha() and text[t + 1].isalpha())


def inside_quotes(text: str, quotes: str = QUOTES) -> np.ndarray:
    """1.0 for characters inside a quotation, quote marks included, else 0.0.

    Double and single quotes are followed separately, so one may nest in the other; straight
    marks (" and ') toggle, curly ones open (“ ‘) or close (” ’). A ' or ’ between two letters
    is an apostrophe and changes nothing: the Gutenberg Alice quotes speech with '...', so
    apostrophes must be told apart."""
    feature = np.zeros(len(text))
    inside = {"double": False, "single": False}
    for t, ch in enumerate(text):
        was_inside = any(inside.values())
        if ch in quotes and not _is_apostrophe(text, t):
            kind = "double" if ch in "\"“”" else "single"
            if ch in OPENING_QUOTES:
                inside[kind] = True
            elif ch in CLOSING_QUOTES:
                inside[kind] = False
            else:
                inside[kind] = not inside[kind]
        feature[t] = was_inside or any(inside.values())
    return feature


def line_position(text: str) -> np.ndarray:
    """Characters since the start of the line: 0 for a line's first character; a newline gets
    the length of the line it ends."""
    feature = np.zeros(len(text))
    column = 0
    for t, ch in enumerate(text):
        feature[t] = column
        column = 0 if ch == "\n" else column + 1
    return feature


def word_boundary(text: str) -> np.ndarray:
    """1.0 for characters between words (whitespace and punctuation; an apostrophe inside a
    word such as don't counts as part of it), 0.0 inside words."""
    return np.array([0.0 if ch.isalnum() or _is_apostrophe(text, t) else 1.0
                     for t, ch in enumerate(text)])


def text_features(text: str) -> dict[str, np.ndarray]:
    """The three classic features of `text`, by name."""
    return {"inside quotes": inside_quotes(text), "line position": line_position(text),
            "word boundary": word_boundary(text)}


# ----------------------------------------------------------------------------- finding units
class UnitRanking(NamedTuple):
    """Units sorted by |correlation| with a feature, strongest first."""

    units: np.ndarray  # int unit indices
    correlations: np.ndarray  # the Pearson r of each listed unit (signed)


def correlations(activations, feature) -> np.ndarray:
    """Pearson r between each unit of `activations` [..., H] and `feature` [...]: [H]. A unit
    that never changes has r = 0."""
    acts = np.asarray(activations, np.float64)
    if acts.ndim < 1:
        raise ValueError("activations must be [..., units]")
    feature = np.asarray(feature, np.float64)
    if feature.shape != acts.shape[:-1]:
        raise ValueError(f"feature has shape {feature.shape}; the activations {acts.shape} "
                         f"need {acts.shape[:-1]} (one value per character)")
    acts = acts.reshape(-1, acts.shape[-1])
    centred_feature = feature.reshape(-1) - feature.mean()
    if not np.any(centred_feature):
        raise ValueError("the feature is constant over the passage: nothing to correlate with")
    centred = acts - acts.mean(axis=0)
    numerator = centred_feature @ centred
    denominator = np.sqrt(np.sum(centred_feature ** 2) * np.sum(centred ** 2, axis=0))
    return np.divide(numerator, denominator, out=np.zeros(acts.shape[1]), where=denominator > 0)


def find_units(trace_h, feature, top: int | None = None) -> UnitRanking:
    """Ranks units by |Pearson r| between their activation and a per-character feature.

    trace_h: [T, H] (or [B, T, H]) activations, e.g. `trace_text(...)[layer]["h"]`;
    feature: [T] (or [B, T]), e.g. `line_position(text)`. Returns the `top` units (all if None).
    """
    r = correlations(trace_h, feature)
    order = np.argsort(-np.abs(r), kind="stable")[:top]
    return UnitRanking(units=order, correlations=r[order])


def unit_table(traces, features: Mapping[str, np.ndarray], key: str = "h", top: int = 3,
               skip: int = 0) -> list[dict]:
    """For every feature and layer, the `top` units of `traces[layer][key]` by |r|: rows
    {"feature", "layer", "unit", "r"} (layers counted from 1). `skip` drops the first
    characters, where the state is still warming up from zero."""
    rows = []
    for name, feature in features.items():
        for layer, layer_trace in enumerate(traces, start=1):
            ranking = find_units(np.asarray(layer_trace[key])[skip:], np.asarray(feature)[skip:], top)
            rows += [{"feature": name, "layer": layer, "unit": int(u), "r": round(float(r), 3)}
                     for u, r in zip(ranking.units, ranking.correlations)]
    return rows


def best_unit(traces, feature, key: str = "h", skip: int = 0) -> dict:
    """The unit of any layer whose `key` activation has the largest |r| with `feature`:
    {"layer", "unit", "r"}, with layers counted from 1 as in `unit_table` (so the trace is
    traces[layer - 1])."""
    rows = unit_table(traces, {"": feature}, key=key, top=1, skip=skip)
    best = max(rows, key=lambda row: abs(row["r"]))
    return {name: best[name] for name in ("layer", "unit", "r")}


# ---------------------------------------------------------------------------- heat maps
def _visible(ch: str) -> str:
    return _VISIBLE.get(ch, ch)


def _value_range(values, key=None):
    if key in _UNIT_RANGE:
        return _UNIT_RANGE[key]
    values = np.asarray(values)
    if values.size and values.min() >= 0 and values.max() <= 1:
        return 0.0, 1.0
    if values.size and np.abs(values).max() <= 1:
        return -1.0, 1.0
    bound = float(np.max(np.abs(values))) if values.size else 1.0
    return -max(bound, 1e-6), max(bound, 1e-6)


def _colormap(vmin):
    return "viridis" if vmin >= 0 else "RdBu_r"


def _check_passage(text: str, values, span=None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[0] == 1:  # a [1, T, H] trace straight from lstm.trace
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"values must be [characters, units], got shape {values.shape}")
    if values.shape[0] != len(text):
        raise ValueError(f"{len(text)} characters of text but {values.shape[0]} rows of values")
    return values if span is None else values[slice(*span)]


def _cut(text: str, span) -> str:
    if span is None:
        return text
    cut = text[slice(*span)]
    if not cut:
        raise ValueError(f"span {span} selects no characters of a {len(text)}-character passage")
    return cut


def _units(values, units) -> list[int]:
    units = list(range(values.shape[1])) if units is None else [int(u) for u in units]
    if not units:
        raise ValueError("units must name at least one unit")
    bad = [u for u in units if not 0 <= u < values.shape[1]]
    if bad:
        raise ValueError(f"units {bad} out of range for {values.shape[1]} units")
    return units


def _draw_heatmap(fig, ax, text, values, units, key, label_chars, vmin=None, vmax=None):
    low, high = _value_range(values[:, units], key)
    low, high = (low if vmin is None else vmin), (high if vmax is None else vmax)
    image = ax.imshow(values[:, units].T, aspect="auto", interpolation="nearest",
                      cmap=_colormap(low), vmin=low, vmax=high)
    ax.set_yticks(range(len(units)), [str(u) for u in units], fontsize=7)
    ax.set_ylabel("unit" if key is None else f"{key}: unit")
    every = max(1, len(text) // 200)  # past 200 characters, label every k-th
    ax.set_xticks(range(0, len(text), every))
    if label_chars:  # shared x axes (gate_heatmaps) show labels on the bottom panel only
        ax.set_xticklabels([_visible(ch) for ch in text[::every]], fontsize=7, family="monospace")
    ax.tick_params(axis="x", length=0)
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
    return image


def _passage_width(length: int) -> float:
    return min(2.0 + 0.11 * length, 40.0)


def activation_heatmap(text: str, values, units: Iterable[int] | None = None,
                       title: str | None = None, key: str | None = None,
                       span: tuple[int, int] | None = None,
                       vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Chosen units over a passage: one row per unit, one column per character, the
    characters (↵ newline, ␣ space) as the x axis.

    values: [len(text), H], e.g. `trace_text(model, vocab, text)[0]["h"]` or a gate's values.
    span=(start, stop) shows only text[start:stop] (traced in context, drawn in close-up).
    key ("h", "c", "i", "f", "g", "o") fixes the colour scale: [0, 1] for the sigmoid gates,
    [-1, 1] for h and g; otherwise it is [0, 1] or [-1, 1] when the values lie inside it, else
    symmetric about 0 (c is unbounded).
    """
    values = _check_passage(text, values, span)
    text = _cut(text, span)
    units = _units(values, units)
    fig = Figure(figsize=(_passage_width(len(text)), 1.2 + 0.22 * len(units)), layout="constrained")
    ax = fig.add_subplot()
    _draw_heatmap(fig, ax, text, values, units, key, True, vmin, vmax)
    ax.set_xlabel("character")
    if title:
        ax.set_title(title)
    return fig


def gate_heatmaps(text: str, layer_trace: Mapping[str, np.ndarray], units: Iterable[int],
                  keys: Sequence[str] = ("h", "i", "f", "o"), title: str | None = None,
                  span: tuple[int, int] | None = None) -> Figure:
    """The same units in several arrays of one layer (by default h and the three sigmoid
    gates), one panel per array, stacked over the passage; characters label the bottom panel.
    layer_trace: one layer of `trace_text(...)`; span as in `activation_heatmap`."""
    if not keys:
        raise ValueError("keys must name at least one array of the layer")
    arrays = {key: _check_passage(text, layer_trace[key], span) for key in keys}
    text = _cut(text, span)
    units = _units(next(iter(arrays.values())), units)
    fig = Figure(figsize=(_passage_width(len(text)), len(keys) * (0.6 + 0.22 * len(units)) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for index, (key, ax) in enumerate(zip(keys, axes)):
        _draw_heatmap(fig, ax, text, arrays[key], units, key, index == len(keys) - 1)
    axes[-1].set_xlabel("character")
    if title:
        fig.suptitle(title)
    return fig


def text_heatmap(text: str, activation, title: str | None = None, width: int = 80,
                 span: tuple[int, int] | None = None,
                 vmin: float | None = None, vmax: float | None = None) -> Figure:
    """One unit as Karpathy et al. show it: the passage as text, each character's background
    coloured by the unit's activation after reading it. Lines break at newlines (drawn as ↵)
    and at `width` characters. activation: [len(text)]; span as in `activation_heatmap`."""
    activation = np.asarray(activation, np.float64).reshape(-1)
    if activation.shape[0] != len(text):
        raise ValueError(f"{len(text)} characters of text but {activation.shape[0]} activations")
    if span is not None:
        text, activation = _cut(text, span), activation[slice(*span)]
    if width < 1:
        raise ValueError("width must be >= 1")
    rows, cols, row, col = [], [], 0, 0
    for ch in text:
        if col == width:
            row, col = row + 1, 0
        rows.append(row)
        cols.append(col)
        row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
    num_rows = (rows[-1] + 1) if rows else 1
    num_cols = max(cols) + 1 if cols else 1
    grid = np.full((num_rows, num_cols), np.nan)
    grid[rows, cols] = activation
    low, high = _value_range(activation)
    low, high = (low if vmin is None else vmin), (high if vmax is None else vmax)
    cmap = colormaps[_colormap(low)].with_extremes(bad="white")
    fig = Figure(figsize=(0.11 * num_cols + 1.2, 0.2 * num_rows + 0.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=low, vmax=high)
    shades = cmap(image.norm(activation))  # white letters on dark cells, black on light ones
    luminance = shades[:, :3] @ np.array([0.299, 0.587, 0.114])
    for ch, r, c, lum in zip(text, rows, cols, luminance):
        if ch != " ":
            ax.text(c, r, _visible(ch), ha="center", va="center", fontsize=7, family="monospace",
                    color="white" if lum < 0.5 else "black")
    ax.set_axis_off()
    fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------- gate saturation
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
            values = values.reshape(-1, values.shape[-1])
            near_zero, near_one = np.mean(values < low, axis=0), np.mean(values > high, axis=0)
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


# ------------------------------------------------------------------------ curves and tables
def loss_series(records) -> dict[str, tuple[list, list]]:
    """From metrics.jsonl records (`lstm.logger.read_metrics`): {label: (steps, losses)} for
    the logged training loss, the per-epoch training mean and the validation loss (nats/char);
    series with no points are left out."""
    picks = {
        "train (logged)": ("train", "loss"),
        "train (epoch mean)": ("epoch", "train_loss"),
        "validation": ("eval", "val_loss"),
    }
    series = {}
    for label, (event, field) in picks.items():
        points = [(r["step"], r[field]) for r in records if r.get("event") == event and field in r]
        if points:
            steps, values = zip(*points)
            series[label] = (list(steps), list(values))
    return series


def loss_curves(records, title: str | None = None) -> Figure:
    """Training and validation loss (nats/char) against step, the same series as the
    workdir's loss.png; a second y axis on the right reads bits/char."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    series = loss_series(records)
    for label, (steps, values) in series.items():
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    bits = ax.secondary_yaxis("right", functions=(lambda n: n / np.log(2), lambda b: b * np.log(2)))
    bits.set_ylabel("bits/char")
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no records yet", ha="center", va="center", transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return fig


def sample_table(generator, seed_text: str, temperatures: Iterable[float] = (0.2, 0.5, 1.0),
                 length: int = 200, rng: int = 0, **settings) -> list[dict]:
    """One sample per temperature from a `lstm.sample.Generator` (anything with its
    `generate(seed_text, length, temperature=..., rng=..., ...)`): rows {"temperature",
    "sample"}; extra settings (top_k, top_p) pass through. Show with `markdown_table`."""
    return [{"temperature": t,
             "sample": generator.generate(seed_text, length, temperature=t, rng=rng, **settings)}
            for t in temperatures]


def _cell(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ↵ ")
            .replace("`", "\\`").replace("*", "\\*").replace("_", "\\_"))


def markdown_table(rows: Sequence[Mapping]) -> str:
    """Rows of dicts (columns from the first row's keys) as a Markdown table; newlines show as
    ↵ and Markdown's special characters are escaped, so samples appear as generated.
    In a notebook: `IPython.display.Markdown(markdown_table(rows))`."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
