"""Which hidden units track a property of the text, after Karpathy, Johnson & Fei-Fei (2015),
"Visualizing and understanding recurrent networks" (arXiv:1506.02078).

`trace_text` runs a model over a passage (`held_out_text` picks one it never trained on);
`inside_quotes`, `line_position` and `word_boundary` give one value per character; `find_units`,
`unit_table` and `best_unit` rank units by their correlation with such a feature.

Alignment: `trace_text(model, vocab, text)[layer]["h"][t]` is the state after the model has
read text[t], so a feature of text[t] lines up with row t.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from lstm import data
from lstm.model import trace

QUOTES = "\"'“”‘’"
OPENING_QUOTES = "“‘"
CLOSING_QUOTES = "”’"


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
