"""Which characters a trained model pays for: the tutorial's loss split by the target character.

The tutorial's loss is the mean, over windows, of −log p(character after the window). Split by
what that character is, it shows where the nats go: `by_character` gives each character's count,
mean loss and share of the total. docs/investigations.md uses it to measure what the tutorial's Windows
line endings are worth: on a `\\r\\n` copy, every "\\n" follows a "\\r", so how cheap those "\\n"
targets are decides how much lower the tutorial's average could be.

    python scripts/research/loss_by_character.py --workdir=runs/small --windows=20000

`compare` sets several checkpoints side by side on the same windows (seeds of one config, or
one run's epochs): each character's part of the mean loss, so the difference between two
checkpoints' means is the sum of the per-character differences.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm import cleaning, data, schedules


class CharacterComparison(NamedTuple):
    character: str
    count: int
    mean_loss: tuple[float, ...]  # per checkpoint, nats per prediction of this character
    part: tuple[float, ...]  # per checkpoint, this character's nats in the mean over all windows


class CharacterLoss(NamedTuple):
    character: str
    count: int
    mean_loss: float  # nats per prediction of this character
    share: float  # of the summed loss over all evaluated windows


@functools.partial(jax.jit, static_argnames=("graphdef", "seq_len"))
def _window_losses(graphdef, params, ids, starts, seq_len: int):
    model = nnx.merge(graphdef, params)
    inputs, targets = schedules.gather_windows(ids, starts, seq_len, "last")
    logits, _ = model(inputs, last_only=True)
    log_probs = jax.nn.log_softmax(logits[:, 0])  # float32 also under bfloat16 matmuls
    return -jnp.take_along_axis(log_probs, targets[:, None], axis=1)[:, 0], targets


def window_losses(model, ids, seq_len: int, max_windows: int = 20_000,
                  batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(loss float64[N], target int32[N]) for N evenly spaced stride-1 windows of `ids`: the
    tutorial's loss on the character after each window, from the model's deterministic
    forward pass (no dropout). The last batch is padded and its padding dropped."""
    starts = schedules.tutorial_eval_starts(len(ids), seq_len, max_windows)
    graphdef, params = nnx.split(model)
    device_ids = jnp.asarray(np.asarray(ids))
    losses, targets = [], []
    for chunk, weights in schedules.padded_batches(starts, batch_size):
        loss, target = _window_losses(graphdef, params, device_ids, jnp.asarray(chunk), seq_len)
        losses.append(np.asarray(loss, np.float64)[weights > 0])
        targets.append(np.asarray(target)[weights > 0])
    return np.concatenate(losses), np.concatenate(targets)


def by_character(losses, targets, vocab: data.Vocab) -> list[CharacterLoss]:
    """Per target character: count, mean loss and share of the total; largest share first."""
    losses, targets = np.asarray(losses, np.float64), np.asarray(targets)
    total = losses.sum()
    counts = np.bincount(targets, minlength=len(vocab))
    sums = np.bincount(targets, weights=losses, minlength=len(vocab))
    rows = [CharacterLoss(vocab.chars[i], int(counts[i]), float(sums[i] / counts[i]),
                          float(sums[i] / total) if total else 0.0)
            for i in np.flatnonzero(counts)]
    return sorted(rows, key=lambda row: (-row.share, row.character))


def compare(runs: Sequence[tuple[np.ndarray, np.ndarray]], vocab: data.Vocab) -> list[CharacterComparison]:
    """Per target character, its mean loss and its part of the overall mean loss (its summed
    loss / the number of windows) under each of `runs`, (losses, targets) pairs from
    `window_losses` over the same windows. Sorted by how far the parts spread across runs
    (max − min), largest first: the characters that make two runs' means differ come first."""
    if not runs:
        raise ValueError("compare needs at least one run")
    targets = np.asarray(runs[0][1])
    for _, other in runs[1:]:
        if not np.array_equal(np.asarray(other), targets):
            raise cleaning.DataError("the runs were not scored on the same windows (different text or seq_len)")
    counts = np.bincount(targets, minlength=len(vocab))
    sums = np.stack([np.bincount(targets, weights=np.asarray(losses, np.float64), minlength=len(vocab))
                     for losses, _ in runs])
    rows = [CharacterComparison(vocab.chars[i], int(counts[i]),
                                tuple(float(v) for v in sums[:, i] / counts[i]),
                                tuple(float(v) for v in sums[:, i] / len(targets)))
            for i in np.flatnonzero(counts)]
    return sorted(rows, key=lambda row: (-(max(row.part) - min(row.part)), -row.count, row.character))
