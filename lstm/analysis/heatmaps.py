"""Heat maps of hidden units over a passage, its characters as the axis (Karpathy et al. 2015):
`activation_heatmap` (chosen units of one array), `gate_heatmaps` (the same units in h and the
gates of one layer) and `text_heatmap` (one unit as coloured text).

Every function returns a `matplotlib.figure.Figure` built without pyplot: no backend is
switched, no global figure list grows, nothing is shown.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

# Value ranges for colour scales: the sigmoid gates live in (0, 1); h and g in (-1, 1).
_UNIT_RANGE = {"i": (0.0, 1.0), "f": (0.0, 1.0), "o": (0.0, 1.0), "g": (-1.0, 1.0), "h": (-1.0, 1.0)}
_VISIBLE = {"\n": "↵", " ": "␣", "\t": "⇥"}


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
