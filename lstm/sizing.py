"""Regularisers sized from the text when training starts (configs/mytext.py).

A config is built before `--config.data.path=FILE` is applied, so nothing in `get_config()`
can depend on the text's length. A regulariser's rate of AUTO (-1) means "size it from the
text": before anything else, training replaces each AUTO rate by the one for the number of
passes the run makes over its training text,

    passes = train.max_steps × train.batch_size × positions per window ÷ training characters,

and records the result in the run's config.json, so the sampler and a resumed run see plain
numbers (a resume sizes again from the same file and gets the same ones). A rate given on the
command line is not AUTO and stays as given.

The bands come from the recipe's measured runs (docs/results.md), split at the geometric mean
between neighbouring measurements:
- ~8 passes (the 2,000-step ablation on Tiny Shakespeare): locked dropout 0.2 on the output
  gained 0.017 nats/char; weight drop, embedding and input dropout cost 0.007-0.025.
- ~57 passes (Tiny Shakespeare in 30 minutes): without weight drop the model overfits from
  step 4,000; locked dropout 0.2 and weight drop 0.2 reach 1.511, with AR/TAR 1.488.
- ~370 passes (Alice in 30 minutes): AWD-LSTM's character-level strengths below reach 1.346,
  where the unregularised run overfits after ~20 passes (1.465 at best).
"""
from __future__ import annotations

import math

from lstm import data

AUTO = -1.0
RATES = ("dropout", "input_dropout", "embed_dropout", "weight_drop")

# (fewest passes, rates): the first band whose floor the run reaches.
BANDS = (
    (150, dict(dropout=0.3, input_dropout=0.1, embed_dropout=0.1, weight_drop=0.5)),  # Alice, ~370
    (20, dict(dropout=0.2, input_dropout=0.0, embed_dropout=0.0, weight_drop=0.2)),  # Shakespeare, ~57
    (0, dict(dropout=0.2, input_dropout=0.0, embed_dropout=0.0, weight_drop=0.0)),  # the ablation, ~8
)


class SizingError(ValueError):
    """An AUTO config that cannot be sized; str(e) is one line."""


def passes(config, train_characters: int) -> float:
    """How many times the run's training positions cover the training text."""
    per_window = 1 if config.data.objective == "last" else config.data.seq_len
    return config.train.max_steps * config.train.batch_size * per_window / max(train_characters, 1)


def rates_for(num_passes: float) -> dict:
    return next(rates for floor, rates in BANDS if num_passes >= floor)


def fit_to_corpus(config):
    """Returns (config, message): the config with every AUTO rate sized from its corpus (a copy;
    the caller's is left alone) and one line saying what was chosen, or (config, None) when no
    rate is AUTO, in which case the corpus is not read."""
    if not str(config.data.path).strip():
        raise SizingError("data.path is empty: pass --config.data.path=FILE, the text to train on")
    auto = [name for name in RATES if config.model[name] == AUTO]
    if not auto:
        return config, None
    if config.train.max_steps <= 0:
        raise SizingError(f"model.{auto[0]}=-1 (sized from the text) needs train.max_steps > 0, the "
                          "run's length in steps")
    corpus = data.load_corpus(config.data)  # DataError for a missing or unreadable file
    count = len(corpus.train)
    num_passes = passes(config, count)
    chosen = rates_for(num_passes)
    config = config.copy_and_resolve_references()
    for name in auto:
        config.model[name] = chosen[name]
    shown = ", ".join(f"{name} {chosen[name]:g}" for name in auto)
    return config, (f"sized for {count:,} training characters ({_round(num_passes)} passes in "
                    f"{config.train.max_steps:,} steps): {shown} (lstm/sizing.py)")


def _round(x: float) -> str:
    return f"{x:.2g}" if x < 10 else f"{round(x):,}" if math.isfinite(x) else str(x)
