"""The sampling benchmark behind `scripts/benchmark.py sample`: rows of plain numbers that the
script prints as a table or JSON.

Timings are the best of several repeats after compilation: on a shared machine the fastest run
is the one least disturbed by others, and the compile time is reported on its own line.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm import data, sample
from lstm.analysis.tables import text_table
from lstm.model import CharLSTM

# The tutorial's bigger model on Alice: 45 symbols, LSTM(256) → LSTM(256) → Dense.
BIGGER_VOCAB = 45
BIGGER_HIDDEN = (256, 256)


def _best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


# ------------------------------------------------------------------------------------ sampling
def _bigger_model(encoding: str) -> CharLSTM:
    return CharLSTM(BIGGER_VOCAB, hidden_sizes=BIGGER_HIDDEN, encoding=encoding, rngs=nnx.Rngs(0))


def _stand_in_vocab(size: int) -> data.Vocab:
    """Speed does not depend on which characters the ids stand for; any `size` of them do."""
    return data.Vocab(tuple(chr(ord("!") + i) for i in range(size)))


def sampling_rows(length: int = 1000, batch_sizes=(1, 64), encodings=("scaled", "embed"),
                  temperature: float = 1.0, unroll: int = sample.DEFAULT_UNROLL,
                  baseline_chars: int = 100, repeats: int = 5) -> list[dict]:
    """chars/s generating `length` characters per stream with `Generator.generate`, after
    compilation, for every encoding × batch size; then the tutorial's loop as the baseline."""
    rows = []
    vocab = _stand_in_vocab(BIGGER_VOCAB)
    seed = "".join(vocab.chars[i % BIGGER_VOCAB] for i in range(100))  # the tutorial's 100-char seed
    for encoding in encodings:
        generator = sample.Generator(_bigger_model(encoding), vocab, unroll=unroll)
        for batch in batch_sizes:
            call = lambda generator=generator, batch=batch: generator.generate(
                seed, length, temperature=temperature, num_samples=batch)
            call()
            compile_s = generator.timings["compile_s"]  # the priming and the generation programs
            generate_s = []
            for _ in range(repeats):
                call()
                generate_s.append(generator.timings["generate_s"])  # the scan: no priming, no text
            seconds = min(generate_s)
            rows.append(dict(method="jitted scan", encoding=encoding, batch=batch, chars=length * batch,
                             seconds=seconds, chars_per_s=length * batch / seconds,
                             compile_s=compile_s, note=f"unroll {unroll}"))
    if baseline_chars > 0:
        rows.append(tutorial_loop_row(length, baseline_chars, repeats=max(1, repeats // 2)))
    return rows


def tutorial_loop_row(length: int, timed_chars: int, window: int = 100, repeats: int = 2) -> dict:
    """The tutorial's generation in JAX: run the whole 100-character window through the model
    for every new character, take the argmax, slide the window. The forward pass is jitted (a
    kindness the Keras original lacks); the loop is Python, with each character brought to the
    host as the tutorial's print does. Timed over `timed_chars` and scaled to `length`."""
    model = _bigger_model("scaled")
    graphdef, params = nnx.split(model)

    @jax.jit
    def next_window(params, tokens):
        logits, _ = nnx.merge(graphdef, params)(tokens)
        token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return jnp.concatenate([tokens[:, 1:], token[:, None]], axis=1), token

    start = jnp.asarray(np.arange(window)[None] % BIGGER_VOCAB, jnp.int32)
    started = time.perf_counter()
    jax.block_until_ready(next_window(params, start))
    compile_s = time.perf_counter() - started

    def loop():
        tokens = start
        for _ in range(timed_chars):
            tokens, token = next_window(params, tokens)
            int(token[0])
    seconds = _best_seconds(loop, repeats) * length / timed_chars
    return dict(method="tutorial window loop", encoding="scaled", batch=1, chars=length,
                seconds=seconds, chars_per_s=length / seconds, compile_s=compile_s,
                note=f"timed over {timed_chars} chars, scaled to {length}")


def format_rows(rows: list[dict], title: str) -> str:
    """A plain-text table, numbers right-aligned. A step makes one character in each of the
    batch's streams, so for batch 1 "ms per 1,000 steps" is the time for 1,000 characters."""
    header = ("method", "encoding", "batch", "chars/s", "ms per 1,000 steps", "compile s", "note")
    lines = [[r["method"], r["encoding"], str(r["batch"]), f"{r['chars_per_s']:,.0f}",
              f"{1e6 * r['seconds'] * r['batch'] / r['chars']:,.1f}", f"{r['compile_s']:.2f}", r["note"]]
             for r in rows]
    return text_table(title, header, lines, left={0, 1, 6})
