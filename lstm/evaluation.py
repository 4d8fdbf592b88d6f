"""Held-out evaluation under a named protocol (`eval.context`), and the loss both it and
training sum.

How much context each scored character gets changes the number as much as a model change
does (issue 44: one Shakespeare checkpoint scored 1.576 over 64-character windows, 1.542 over
256, 1.529 with the state carried through the tail), so the protocol is an option and every
record names it:

- `window` (the default; the numbers before the option existed): non-overlapping windows of
  `data.seq_len` characters, each from a zero state, every position scored.
- a length N, e.g. "256": the same over windows of N characters: a character at offset t of
  its window has t characters of context. nanoGPT's `estimate_loss` scores its block_size-256
  windows this way, so rows compared with its baby GPT use "256".
- `continuous`: the tail cut into `eval.streams` contiguous streams, the state carried through
  each chunk by chunk: every character has all of its stream before it, as LSTM language-model
  papers report (AWD-LSTM evaluates 10 streams).

Each caps what it scores at `eval.max_windows` windows (continuous: that many windows' worth
of characters, from the tail's start). The tutorial's metric, the loss on the character after
a full `seq_len` window, comes from the `window` pass whatever the protocol; where the protocol
is another, that pass's loss is reported beside it as val_window_loss.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lstm import distributed, schedules

LOG2E = math.log2(math.e)
CONTINUOUS_CHUNK = 256  # characters per call of the continuous step; the numbers do not depend on it


def sequence_loss(logits, targets, weights, objective):
    """Weighted sum of next-character cross-entropy (nats) and the weight it was summed over.

    `last`: one prediction per window (the character after it); otherwise every position.
    `weights` is one per window [B], or one per position [B, T] (`sentences`: 0 past each
    sentence's end). The loss is float32 at least (bfloat16 logits are widened; float64 stays)."""
    if objective == "last":
        logits = logits[:, -1]
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), targets)
    w = weights if weights.ndim == losses.ndim else jnp.broadcast_to(weights[:, None], losses.shape)
    return jnp.sum(losses * w), jnp.sum(w)


def batch_windows(corpus, starts, seq_len, objective):
    inputs, targets = schedules.gather_windows(corpus, starts, seq_len, objective)
    return inputs.astype(jnp.int32), targets.astype(jnp.int32)


def context_length(context) -> int | None:
    """eval.context's window length: None for `window` and `continuous`, else the positive
    integer it spells; ValueError for anything else."""
    if context in ("window", "continuous"):
        return None
    text = str(context).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"eval.context must be window, continuous or a positive length such as 256; got {context!r}")
    return int(text)


def protocol(config) -> str:
    """The protocol's name as records give it: window:<seq_len>, context:<N> or continuous:<streams>."""
    length = context_length(config.eval.context)
    if config.eval.context == "continuous":
        return f"continuous:{config.eval.streams}"
    return f"context:{length}" if length else f"window:{config.data.seq_len}"


def check_protocol(config, num_tokens: int) -> None:
    """ValueError (one line) where the held-out tail cannot be scored under the protocol;
    called before training, so a long run does not fail at its first evaluation."""
    length = context_length(config.eval.context)
    if length and num_tokens - 1 < length:
        raise ValueError(f"eval.context={length} is longer than the {num_tokens - 1} held-out positions")
    if config.eval.context == "continuous" and (num_tokens - 1) // config.eval.streams < 1:
        raise ValueError(f"eval.streams={config.eval.streams} streams leave no held-out character for each")


def make_eval_step(graphdef, seq_len):
    """Sums over held-out windows of T+1 characters: every position's loss (nats/char) and
    the last position's (the tutorial's metric: the character after a full window).

    With per-position weights [B, T] (held-out sentences), "every position" is every weighted
    one and "the last" is each row's last weighted position: a sentence's last character,
    predicted from the rest of the sentence (for a full window, the tutorial's metric again)."""

    @jax.jit
    def eval_step(params, corpus, starts, weights):
        inputs, targets = batch_windows(corpus, starts, seq_len, "all")
        logits, _ = nnx.merge(graphdef, params)(inputs)
        all_sum, all_weight = sequence_loss(logits, targets, weights, "all")
        if weights.ndim == 2:
            last = jnp.maximum(jnp.sum(weights > 0, axis=1) - 1, 0)[:, None]
            at_last = lambda x: jnp.take_along_axis(x, last, axis=1)[:, 0]
            last_sum, last_weight = sequence_loss(jnp.take_along_axis(logits, last[..., None], axis=1),
                                                  at_last(targets), at_last(weights), "last")
        else:
            last_sum, last_weight = sequence_loss(logits, targets[:, -1], weights, "last")
        return jnp.stack([all_sum, all_weight, last_sum, last_weight])

    return eval_step


def make_continuous_step(graphdef):
    """`step(params, carry, corpus, index[B, T+1], weights[B, T]) -> (carry, [loss sum, weight])`:
    one chunk of B streams, continuing from `carry`."""

    @jax.jit
    def continuous_step(params, carry, corpus, index, weights):
        tokens = jnp.take(corpus, index, axis=0).astype(jnp.int32)
        logits, carry = nnx.merge(graphdef, params)(tokens[:, :-1], carry)
        return carry, jnp.stack(sequence_loss(logits, tokens[:, 1:], weights, "all"))

    return continuous_step


class EvalSteps(NamedTuple):
    """The jitted steps `evaluate` needs under a config's protocol (each compiles on first use)."""

    graphdef: object  # rebuilds the model: the continuous protocol's zero state comes from it
    window: Callable  # over data.seq_len windows: the `window` protocol and the tutorial's metric
    context: Callable | None  # over eval.context windows, where that is a length
    continuous: Callable | None


def make_eval_steps(graphdef, config) -> EvalSteps:
    window = make_eval_step(graphdef, config.data.seq_len)
    length = context_length(config.eval.context)
    return EvalSteps(graphdef, window,
                     context=(window if length == config.data.seq_len else make_eval_step(graphdef, length))
                     if length else None,
                     continuous=make_continuous_step(graphdef) if config.eval.context == "continuous" else None)


def stream_chunks(num_tokens: int, streams: int, rows: int, chunk: int, max_positions: int | None = None):
    """The continuous protocol's calls: (index int32[rows, chunk+1], weights float32[rows, chunk]).

    The first `max_positions` + 1 tokens (all, if None) make `streams` streams of L = (n−1) //
    streams targets; row b of call k reads tokens b·L + k·chunk + [0, chunk], so call k+1 continues
    call k row for row. Positions past a stream's end, and rows past `streams` (padding to a
    multiple of the devices), weigh 0; their indices are clipped into the array."""
    n = num_tokens if max_positions is None else min(num_tokens, max_positions + 1)
    length = (n - 1) // streams
    offsets = np.arange(chunk + 1)
    for begin in range(0, length, chunk):
        index = np.zeros((rows, chunk + 1), np.int64)
        index[:streams] = np.arange(streams)[:, None] * length + begin + offsets
        weights = np.zeros((rows, chunk), np.float32)
        weights[:streams] = (begin + offsets[:-1] < length)
        yield np.minimum(index, num_tokens - 1).astype(np.int32), weights


def evaluate(eval_steps, params, corpus, num_tokens, config, mesh, sentences=None) -> dict:
    """Held-out loss under config's protocol (val_loss, named by val_protocol); with `sentences`
    (the tail's SentenceWindows, objective `sentences`) over its sentences instead. Where the
    protocol is not the `window` one, that pass's loss is beside it as val_window_loss."""
    batch = -(-config.eval.batch_size // mesh.size) * mesh.size  # a multiple of the devices
    shard = distributed.batch_sharding(mesh)
    put = lambda x: distributed.global_array(x, shard)

    def totals(step, batches):
        sums = np.zeros(4)
        for chunk, weights in batches:
            sums += np.asarray(step(params, corpus, put(chunk), put(weights)), np.float64)
        return sums

    def spread(starts):  # evenly spaced, so the whole tail is covered
        if len(starts) > config.eval.max_windows:
            starts = starts[np.linspace(0, len(starts) - 1, config.eval.max_windows).astype(int)]
        return starts

    starts = spread(schedules.eval_windows(num_tokens, config.data.seq_len))
    windows = totals(eval_steps.window, schedules.padded_batches(starts, batch))
    length = context_length(config.eval.context)
    if sentences is not None:
        scored = totals(eval_steps.window, schedules.sentence_batches(sentences, batch, config.eval.max_windows))
        count = min(len(sentences), config.eval.max_windows)
    elif length and length != config.data.seq_len:
        context_starts = spread(schedules.eval_windows(num_tokens, length))
        scored = totals(eval_steps.context, schedules.padded_batches(context_starts, batch))
        count = len(context_starts)
    elif config.eval.context == "continuous":
        streams = config.eval.streams
        rows = -(-streams // mesh.size) * mesh.size
        zero = nnx.merge(eval_steps.graphdef, params).initial_state(rows)
        carry = jax.tree.map(lambda x: put(np.asarray(x)), zero)
        scored, count = np.zeros(4), streams
        for index, weights in stream_chunks(num_tokens, streams, rows, CONTINUOUS_CHUNK,
                                            config.eval.max_windows * config.data.seq_len):
            carry, sums = eval_steps.continuous(params, carry, corpus, put(index), put(weights))
            scored[:2] += np.asarray(sums, np.float64)
    else:
        scored, count = windows, len(starts)
    val_loss = scored[0] / scored[1]
    result = {"val_loss": val_loss, "val_bpc": val_loss * LOG2E, "val_protocol": protocol(config),
              "val_last_char_loss": windows[2] / windows[3], "val_windows": count}
    if sentences is not None:
        result.update(val_window_last_char_loss=windows[2] / windows[3],
                      val_last_char_loss=scored[2] / scored[3])
    if scored is not windows:
        result["val_window_loss"] = windows[0] / windows[1]
    return result
