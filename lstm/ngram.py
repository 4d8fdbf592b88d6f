"""Interpolated modified Kneser-Ney character n-grams: the count model a network has to beat.

Chen & Goodman (1999), "An empirical study of smoothing techniques for language modeling",
eqs. 17-19 and 26: the order-n estimate discounts each count c(hw) by D(c) (three discounts,
for counts 1, 2 and 3+) and gives the mass it took to the order-(n−1) estimate,

    P_n(w | h) = [max(c(hw) − D(c(hw)), 0) + γ(h) · P_{n−1}(w | h')] / c(h·),
    γ(h) = D1·N1(h·) + D2·N2(h·) + D3+·N3+(h·)      (N_r(h·): characters seen r times after h)

and P_n = P_{n−1} where h was never seen. The highest order counts occurrences; every lower
order counts *continuation* occurrences, the number of distinct characters seen before hw
(Kneser & Ney's insight: a character that follows many contexts is a better guess for an
unseen one). Order 1 interpolates with the uniform 1/V, so every character of the vocabulary,
seen or not, gets probability > 0 and each distribution sums to 1.

Counting is numpy over the encoded ids, not Python dicts: the k-grams are numbered through the
(k−1)-grams, key = id(first k−1 characters)·V + last character, so one `np.unique` per order
numbers and counts them all; scoring looks keys up with `searchsorted`. Fitting orders 1-8 on
Tiny Shakespeare's 1 MB takes about a second on a 2-core CPU (docs/results.md).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from lstm import data, files
from lstm.cleaning import DataError

MAX_ORDER = 8
# A training run computes its yardstick at the start only below this (~1.5 s per MB of text).
MAX_BASELINE_CHARS = 64 << 20
_CACHE_FORMAT = 1  # bump when the estimate changes: cached losses would be stale


def modified_kn_discounts(counts) -> np.ndarray:
    """(D1, D2, D3+) from one order's counts (Chen & Goodman's eq. 26, Y = n1 / (n1 + 2·n2)).

    Where the counts-of-counts leave a discount undefined or outside (0, r], as in a tiny
    text, one discount Y (0.5 if that is undefined too) stands for all three: a discount of 0
    would leave no mass for the lower orders, so an unseen character would get probability 0."""
    n = np.bincount(np.minimum(np.asarray(counts, np.int64), 5), minlength=6)[1:5].astype(np.float64)
    y = n[0] / (n[0] + 2 * n[1]) if n[0] > 0 and n[1] > 0 else 0.5
    if np.all(n > 0):
        d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
        if np.all((d > 0) & (d <= np.array([1.0, 2.0, 3.0]))):
            return d
    return np.full(3, y)


class _Estimate:
    """One order's counts (raw, or continuation) summed per context, with their discounts."""

    def __init__(self, counts: np.ndarray, prefix: np.ndarray, num_contexts: int, discounts=None):
        self.counts = counts.astype(np.float64)
        self.discounts = (modified_kn_discounts(counts[counts > 0]) if discounts is None
                          else np.asarray(discounts, np.float64))
        self.total = np.bincount(prefix, weights=self.counts, minlength=num_contexts)
        taken = self._discount(self.counts)
        self.gamma = np.bincount(prefix, weights=np.where(self.counts > 0, taken, 0.0), minlength=num_contexts)

    def _discount(self, c):
        return np.where(c > 0, self.discounts[np.clip(c.astype(np.int64), 1, 3) - 1], 0.0)

    def probability(self, gram, context, lower):
        """P(w | h) for k-gram ids `gram` and (k−1)-gram ids `context` (−1: never seen in
        training), given the lower order's P(w | h') for the same positions."""
        c = np.where(gram >= 0, self.counts[np.maximum(gram, 0)], 0.0)
        seen = context >= 0
        total = np.where(seen, self.total[np.maximum(context, 0)], 0.0)
        gamma = np.where(seen, self.gamma[np.maximum(context, 0)], 0.0)
        mixed = (np.maximum(c - self._discount(c), 0.0) + gamma * lower) / np.maximum(total, 1.0)
        return np.where(total > 0, mixed, lower)


class CountModel:
    """Orders 1..`max_order` fitted on `train` (ids in [0, vocab_size)); `discounts` fixes
    (D1, D2, D3+) for every order instead of estimating them (hand-worked tests)."""

    def __init__(self, train, vocab_size: int, max_order: int = MAX_ORDER, discounts=None):
        train = np.asarray(train).astype(np.int64)
        if max_order < 1 or vocab_size < 1 or len(train) == 0:
            raise DataError("a count model needs max_order >= 1, a vocabulary and some training text")
        if train.min() < 0 or train.max() >= vocab_size:
            raise DataError(f"training ids must lie in [0, {vocab_size})")
        self.vocab_size, self.max_order = int(vocab_size), int(max_order)
        self.keys, self.raw, self.continuation = [], [], []
        previous, num_contexts = None, 1  # order 1's one context: the empty one
        for k in range(1, self.max_order + 1):
            if len(train) < k:
                self.max_order = k - 1  # no k-gram fits in the text
                break
            if num_contexts * vocab_size >= 1 << 62:
                raise DataError(f"order {k}: too many distinct contexts to key with int64")
            query = train if k == 1 else previous[:-1] * vocab_size + train[k - 1:]
            keys, ids = np.unique(query, return_inverse=True)
            ids = ids.reshape(-1)
            self.keys.append(keys)
            self.raw.append(_Estimate(np.bincount(ids, minlength=len(keys)), keys // vocab_size,
                                      num_contexts, discounts))
            if k >= 2:  # order k−1's continuation counts: distinct characters before each (k−1)-gram
                suffix = np.empty(len(keys), np.int64)
                suffix[ids] = previous[1:]
                lower_keys = self.keys[k - 2]
                self.continuation.append(_Estimate(
                    np.bincount(suffix, minlength=len(lower_keys)), lower_keys // vocab_size,
                    len(self.keys[k - 3]) if k >= 3 else 1, discounts))
            previous, num_contexts = ids, len(keys)

    def _lookup(self, k, query):
        keys = self.keys[k - 1]
        index = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        return np.where((query >= 0) & (keys[index] == query), index, -1)

    def log_probs(self, text) -> dict[int, np.ndarray]:
        """{order n: ln P(text[j] | up to n−1 preceding characters of `text`)} for every j;
        position j uses order min(n, j+1), the longest context the text gives it."""
        text = np.asarray(text).astype(np.int64)
        if len(text) and (text.min() < 0 or text.max() >= self.vocab_size):
            raise DataError(f"ids must lie in [0, {self.vocab_size})")
        m = len(text)
        lower = np.full(m, 1.0 / self.vocab_size)  # order 0: uniform
        best = lower
        previous = np.zeros(m + 1, np.int64)  # order 0's context ids: the empty context
        result = {}
        for k in range(1, self.max_order + 1):
            if m < k:
                result[k] = np.log(best)
                continue
            ids = self._lookup(k, np.where(previous[:m - k + 1] >= 0,
                                           previous[:m - k + 1] * self.vocab_size + text[k - 1:], -1))
            gram, context = np.full(m, -1), np.full(m, -1)
            gram[k - 1:] = ids
            context[k - 1:] = previous[:m - k + 1] if k > 1 else 0
            reaches = np.arange(m) >= k - 1  # shorter contexts keep the lower order's estimate
            best = np.where(reaches, self.raw[k - 1].probability(gram, context, lower), best)
            result[k] = np.log(best)
            if k < self.max_order:
                lower = np.where(reaches, self.continuation[k - 1].probability(gram, context, lower), lower)
            previous = ids
        return result

    def distribution(self, context, order: int | None = None) -> np.ndarray:
        """P(w | context) for every w in the vocabulary, from the order-`order` model."""
        order = self.max_order if order is None else order
        context = np.asarray(context, np.int64)[len(context) - (order - 1):] if order > 1 else np.zeros(0, np.int64)
        texts = [np.append(context, w) for w in range(self.vocab_size)]
        return np.exp([self.log_probs(t)[order][-1] for t in texts])

    def held_out_losses(self, text) -> dict[int, float]:
        """Mean nats/char per order over text[1:], each character given the held-out text before
        it (at most n−1 characters): the targets the LSTM's evaluation scores."""
        if len(text) < 2:
            raise DataError("held-out text of fewer than 2 characters has nothing to score")
        return {k: float(-np.mean(v[1:])) for k, v in self.log_probs(text).items()}


def baseline(train, val, vocab_size: int, max_order: int = MAX_ORDER) -> dict[int, float]:
    """Held-out nats/char of orders 1..max_order fitted on `train`, scored on `val`."""
    return CountModel(train, vocab_size, max_order).held_out_losses(val)


def cache_key(train, val, vocab_size: int, max_order: int) -> str:
    """Hashes the ids themselves, so every cleaning option and split that changes the text or
    the split point changes the key, and nothing else does."""
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, int(vocab_size), int(max_order)]).encode())
    for ids in (train, val):
        ids = np.ascontiguousarray(ids, np.int32)
        digest.update(len(ids).to_bytes(8, "little"))
        digest.update(ids.tobytes())
    return digest.hexdigest()


def cached_baseline(train, val, vocab_size: int, cache_dir, max_order: int = MAX_ORDER) -> dict[int, float]:
    """`baseline`, kept in `cache_dir`/ngram-<cache_key>.json: a run's start reads it back."""
    path = Path(cache_dir).expanduser() / f"ngram-{cache_key(train, val, vocab_size, max_order)[:32]}.json"
    try:
        return {int(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or damaged: compute it again
    losses = baseline(train, val, vocab_size, max_order)
    try:
        files.write_atomically(path, json.dumps(losses))
    except OSError:
        pass  # a read-only place: the numbers are still right, only not kept
    return losses


def best(losses: dict[int, float]) -> tuple[int, float]:
    """The order with the lowest held-out loss and that loss (chosen on the held-out text
    itself, so the yardstick errs in the count model's favour)."""
    order = min(losses, key=losses.get)
    return order, losses[order]


def table(losses: dict[int, float]) -> str:
    """A markdown table: order, nats/char, bits/char, the best order in bold."""
    top, _ = best(losses)
    rows = ["| order | nats/char | bits/char |", "|---|---|---|"]
    for k, loss in sorted(losses.items()):
        mark = "**" if k == top else ""
        rows.append(f"| {k} | {mark}{loss:.4f}{mark} | {mark}{loss / math.log(2):.3f}{mark} |")
    return "\n".join(rows)


def beat_this(corpus) -> tuple[str, dict]:
    """The line a training run logs at its start, and the numbers for its summary: the best
    count model on exactly the run's split, cached beside the corpus (lstm.data's
    default_cache_dir: data/.cache/ngram-<hash of the training and held-out ids>.json)."""
    if len(corpus.train) > MAX_BASELINE_CHARS:
        return (f"beat this: not computed at the start above {MAX_BASELINE_CHARS:,} training characters; "
                "scripts/baseline.py computes it"), {}
    losses = cached_baseline(corpus.train, corpus.val, len(corpus.vocab),
                             data.default_cache_dir(Path(corpus.path).expanduser()))
    order, loss = best(losses)
    return (f"beat this: a Kneser-Ney {order}-gram scores {loss:.4f} nats/char ({loss / math.log(2):.3f} "
            "bits/char) on this held-out text (scripts/baseline.py)"), {"count_model_loss": loss,
                                                                         "count_model_order": order}
