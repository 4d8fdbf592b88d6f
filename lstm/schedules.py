"""Batch schedules: which windows of the encoded corpus each training step sees.

Every objective reduces to window *start* indices into the 1-D id array: the training loop
keeps the ids on the device and gathers windows there (docs/design.md, "Performance principles", 2), and a schedule
is a pure function of (seed, epoch, step), so a resumed run sees the same batches. The
`sentences` objective adds per-position loss weights (lstm/sentences.py says why that is
padding).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lstm.cleaning import DataError
from lstm.sentences import SentenceWindows

# Above this many windows the epoch's cached permutation would pass 64 MiB (int32); a Feistel
# bijection gives every batch its windows from O(batch) work instead.
MAX_MATERIALISED_PERMUTATION = 1 << 24
FEISTEL_ROUNDS = 6
OBJECTIVES = ("last", "all", "stateful", "sentences")
_UNKNOWN_OBJECTIVE = "unknown objective {!r}; expected 'last', 'all', 'stateful' or 'sentences'"


def _check_sizes(num_tokens, **sizes):
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise DataError(f"{name} must be a positive integer; got {value!r}")
    if num_tokens >= 1 << 31:
        raise DataError(f"{num_tokens} tokens: window starts are int32, so at most 2**31 - 1")


def feistel_permute(positions, domain_size: int, keys) -> np.ndarray:
    """A keyed bijection on [0, domain_size), evaluated only at `positions`.

    A balanced Feistel network permutes [0, 4^h) for any round function; cycle-walking (apply
    again while the value lies outside the domain) restricts it to [0, domain_size). Since
    4^h < 4·domain_size, a value walks fewer than 4 times on average.
    """
    half_bits = max(1, ((int(domain_size) - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half_bits) - 1)
    keys = np.asarray(keys, dtype=np.uint64)

    def network(x):
        left, right = x >> np.uint64(half_bits), x & mask
        for key in keys:  # splitmix64's finaliser as the round function: cheap, well mixed
            z = right ^ key
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            left, right = right, left ^ ((z ^ (z >> np.uint64(31))) & mask)
        return (left << np.uint64(half_bits)) | right

    values = network(np.asarray(positions, dtype=np.uint64))
    outside = values >= domain_size
    while outside.any():
        values[outside] = network(values[outside])
        outside = values >= domain_size
    return values.astype(np.int64)


class _Shuffled:
    """Visits num_windows things once per epoch, in an order fixed by (seed, epoch)."""

    num_windows: int
    seed: int
    _permutation_epoch, _permutation = None, None

    def _window_order(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        if self.num_windows > MAX_MATERIALISED_PERMUTATION:
            keys = np.random.default_rng([self.seed, epoch]).integers(
                0, 2**63, size=FEISTEL_ROUNDS, dtype=np.uint64)
            return feistel_permute(positions, self.num_windows, keys)
        if self._permutation_epoch != epoch:  # memo: every step of an epoch uses the same one
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._permutation = order.astype(np.int32)
            self._permutation_epoch = epoch
        return self._permutation[positions]


def _check_seed(seed):
    if int(seed) != seed or seed < 0:
        raise DataError(f"seed must be a non-negative integer; got {seed!r}")


class WindowSchedule(_Shuffled):
    """Shuffled windows for the "last" and "all" objectives.

    A window starting at s has inputs tokens[s:s+T]; its target is tokens[s+T] ("last", the
    tutorial) or tokens[s+1:s+T+1] ("all", char-rnn). Starts are 0, stride, 2·stride, ... with
    s + T ≤ num_tokens − 1. Each epoch visits every window exactly once in an order fixed by
    (seed, epoch); the ragged last batch is padded with weight-0 repeats so the step's shapes,
    and so its compiled program, never change.
    """

    def __init__(self, num_tokens, seq_len, batch_size, *, objective, stride=1, seed=0):
        if objective not in ("last", "all"):
            raise DataError(f"WindowSchedule objective must be 'last' or 'all'; got {objective!r}")
        _check_sizes(num_tokens, seq_len=seq_len, batch_size=batch_size, stride=stride)
        _check_seed(seed)
        last_start = num_tokens - 1 - seq_len
        if last_start < 0:
            raise DataError(f"{num_tokens} tokens are too short for one window of {seq_len} "
                            "inputs and its target")
        self.objective, self.seq_len, self.batch_size = objective, seq_len, batch_size
        self.stride, self.seed = stride, seed
        self.num_windows = last_start // stride + 1
        self.steps_per_epoch = math.ceil(self.num_windows / batch_size)

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts int32[B], weights float32[B]); weight 0 marks padding."""
        _check_step(step, self.steps_per_epoch)
        positions = step * self.batch_size + np.arange(self.batch_size)
        weights = (positions < self.num_windows).astype(np.float32)
        windows = self._window_order(epoch, positions % self.num_windows)
        return (windows * self.stride).astype(np.int32), weights


class SentenceSchedule(_Shuffled):
    """Shuffled sentences for the "sentences" objective (the tutorial's extension 4): one
    sentence per row, its window starting at its first character, padded by the characters
    after it, which weigh 0 (lstm/sentences.py has the splitting rule and why that is padding).

    batch() gives per-position weights, float32[B, T]: 1 where the target is a character of
    the row's sentence. Each epoch visits every sentence once in an order fixed by (seed,
    epoch); the ragged last batch is filled with all-zero rows, as WindowSchedule's is.
    """

    def __init__(self, text: str, seq_len, batch_size, *, seed=0):
        _check_sizes(len(text), seq_len=seq_len, batch_size=batch_size)
        _check_seed(seed)
        self.objective, self.seq_len, self.batch_size, self.seed = "sentences", seq_len, batch_size, seed
        self.sentences = SentenceWindows.from_text(text, seq_len)
        self.num_windows = len(self.sentences)
        self.steps_per_epoch = math.ceil(self.num_windows / batch_size)

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts int32[B], weights float32[B, T])."""
        _check_step(step, self.steps_per_epoch)
        positions = step * self.batch_size + np.arange(self.batch_size)
        rows = self._window_order(epoch, positions % self.num_windows)
        weights = self.sentences.position_weights(rows)
        weights[positions >= self.num_windows] = 0.0
        return self.sentences.starts[rows], weights


def sentence_batches(sentences: SentenceWindows, batch_size: int, max_windows: int | None = None):
    """Held-out sentences in order as (starts int32[B], weights float32[B, T]) chunks, the last
    filled with all-zero rows; at most `max_windows` of them, evenly spaced over the text."""
    rows = np.arange(len(sentences))
    if max_windows is not None and len(rows) > max_windows:
        rows = rows[np.linspace(0, len(rows) - 1, max_windows).astype(int)]
    for chunk, row_weights in padded_batches(rows, batch_size):
        yield sentences.starts[chunk], sentences.position_weights(chunk) * row_weights[:, None]


class StreamSchedule:
    """Contiguous streams for the "stateful" objective (truncated BPTT, the tutorial's ext. 10).

    The corpus is cut into B streams of L = (num_tokens − 1) // B tokens; row b of batch k
    starts at b·L + k·T, so batch k+1 continues batch k row for row and the loop can carry
    (h, c) across steps. Inputs tokens[s:s+T] tile each stream; targets tokens[s+1:s+T+1] are
    always the true next characters (the last target may be the next stream's first token).
    The batches are the same every epoch: the loop resets the state at step 0.
    """

    def __init__(self, num_tokens, seq_len, batch_size):
        _check_sizes(num_tokens, seq_len=seq_len, batch_size=batch_size)
        self.objective, self.seq_len, self.batch_size = "stateful", seq_len, batch_size
        self.stream_len = (num_tokens - 1) // batch_size
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch == 0:
            raise DataError(f"{num_tokens} tokens cut into {batch_size} streams of "
                            f"{self.stream_len} are too short for one window of {seq_len}")
        self.num_windows = self.steps_per_epoch * batch_size
        self._stream_starts = np.arange(batch_size) * self.stream_len

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        _check_step(step, self.steps_per_epoch)
        starts = self._stream_starts + step * self.seq_len
        return starts.astype(np.int32), np.ones(self.batch_size, np.float32)


def _check_step(step, steps_per_epoch):
    if not 0 <= step < steps_per_epoch:
        raise DataError(f"step {step} is outside the epoch's {steps_per_epoch} steps")


def make_schedule(objective, num_tokens, seq_len, batch_size, *, stride=1, seed=0, text=None):
    """`text`, the corpus's characters (one per id), only for "sentences", which splits it."""
    if objective == "sentences":
        if stride != 1:
            raise DataError(f"objective 'sentences' starts a window at each sentence; stride {stride} is moot")
        if text is None or len(text) != num_tokens:
            raise DataError("objective 'sentences' needs the corpus text, one character per token")
        return SentenceSchedule(text, seq_len, batch_size, seed=seed)
    if objective == "stateful":
        if stride != 1:
            raise DataError(f"objective 'stateful' tiles its streams; stride {stride} is moot")
        return StreamSchedule(num_tokens, seq_len, batch_size)
    if objective in ("last", "all"):
        return WindowSchedule(num_tokens, seq_len, batch_size, objective=objective,
                              stride=stride, seed=seed)
    raise DataError(_UNKNOWN_OBJECTIVE.format(objective))


@functools.partial(jax.jit, static_argnames=("seq_len", "objective"))
def gather_windows(tokens, starts, seq_len: int, objective: str):
    """Cut windows out of the device-resident ids: (inputs int32[B, T], targets int32[B] for
    "last", int32[B, T] for the others). One index-matrix take: a single gather."""
    if objective not in OBJECTIVES:
        raise DataError(_UNKNOWN_OBJECTIVE.format(objective))
    index = starts[:, None] + jnp.arange(seq_len + 1, dtype=starts.dtype)
    windows = jnp.take(tokens, index, axis=0).astype(jnp.int32)
    targets = windows[:, seq_len] if objective == "last" else windows[:, 1:]
    return windows[:, :seq_len], targets


def eval_windows(num_tokens: int, seq_len: int) -> np.ndarray:
    """Starts of non-overlapping "all"-style windows over a held-out array: every position
    predicts its next character once. The tail shorter than a window (< T positions) is
    left out rather than scored twice by an overlapping window."""
    _check_sizes(num_tokens, seq_len=seq_len)
    count = (num_tokens - 1) // seq_len
    if count == 0:
        raise DataError(f"{num_tokens} held-out tokens are too short for one window of {seq_len}")
    return (np.arange(count) * seq_len).astype(np.int32)


def tutorial_eval_starts(num_tokens: int, seq_len: int, max_windows: int = 2048) -> np.ndarray:
    """Evenly spaced stride-1 window starts for the tutorial's metric (loss on the character
    after a full window); capped because every stride-1 window costs a full forward pass."""
    _check_sizes(num_tokens, seq_len=seq_len, max_windows=max_windows)
    count = num_tokens - seq_len
    if count <= 0:
        raise DataError(f"{num_tokens} held-out tokens are too short for one window of {seq_len}")
    if count <= max_windows:
        return np.arange(count, dtype=np.int32)
    return np.linspace(0, count - 1, max_windows).round().astype(np.int32)


def padded_batches(starts, batch_size: int):
    """`starts` in order, in chunks of exactly `batch_size`: (starts[batch_size], weights
    float32[batch_size]). The last chunk is filled up with weight-0 repeats of its own starts,
    so a jitted step called on every chunk sees one shape and compiles once; callers weight
    their sums by `weights`, or drop the rows where it is 0."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer; got {batch_size!r}")
    starts = np.asarray(starts)
    for begin in range(0, len(starts), batch_size):
        chunk = starts[begin:begin + batch_size]
        weights = np.zeros(batch_size, np.float32)
        weights[:len(chunk)] = 1.0
        yield np.resize(chunk, batch_size), weights
