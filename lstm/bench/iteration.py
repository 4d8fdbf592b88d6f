"""What one iteration of the recurrence costs on this machine, part by part: the budget a change
to the loop bodies is judged against (`scripts/benchmark.py iteration`).

Each part is a `lax.scan` over T steps at a shape's batch B and width H, jitted, timed as the
median of interleaved rounds, and reported per iteration:
- loop: a body that only adds its input slice to the carry (the scan's own cost per step);
- matmul: the recurrent product h_{t-1} W_h, [B, H]·[H, 4H], and nothing else;
- forward: the `lstm` step (matmul and gate math), emitting nothing;
- forward + k outputs: the same, stacking k of (h, c, i, f, g, o) as the training forward
  stacks all six for its backward; the difference to `forward` is what the stacking costs;
- backward: the backward of the `lstm` cell (recurrence.scan's pullback: the reverse loop,
  its per-step matmul and gate math, plus W_h's gradient as one matmul after the loop), given
  the forward's residuals;
- dW_h: that one matmul after the loop alone, so `backward` − `dW_h` is the reverse loop.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from lstm import recurrence
from lstm.analysis.tables import text_table
from lstm.cells.lstm import LSTM, LSTMState
from lstm.matmul import recurrent_weight_gradient

STACKED = ("h", "c", "i", "f", "g", "o")


def _parts(batch: int, hidden: int, steps: int, seed: int = 0) -> dict:
    """{part: (jitted function, its arguments)} for one shape."""
    keys = jax.random.split(jax.random.key(seed), 5)
    W_h = jax.random.normal(keys[0], (hidden, 4 * hidden)) / np.sqrt(hidden)
    x_proj = jax.random.normal(keys[1], (steps, batch, 4 * hidden))
    state = LSTMState(*(0.5 * jax.random.normal(k, (batch, hidden)) for k in keys[2:4]))
    spec = recurrence.Recurrence(LSTM())

    def loop(x_proj, state):
        return jax.lax.scan(lambda h, xp: (h + xp[:, :hidden], None), state.h, x_proj)[0]

    def matmul_only(W_h, x_proj, state):
        # The input slice keeps h at unit scale: a product alone would shrink it to subnormals.
        return jax.lax.scan(lambda h, xp: ((h @ W_h)[:, :hidden] + xp[:, :hidden], None), state.h, x_proj)[0]

    def forward(W_h, x_proj, state, outputs: int):
        def body(carry, xp):
            new, gates = recurrence.step(spec, {"W_h": W_h}, carry, xp)
            values = {"h": new.h, "c": new.c, **gates._asdict()}
            return new, tuple(values[name] for name in STACKED[:outputs])
        return jax.lax.scan(body, state, x_proj)

    _, pullback = jax.vjp(lambda W, x, s: recurrence.scan(spec, {"W_h": W}, x, s), W_h, x_proj, state)
    cotangent = (LSTMState(jnp.ones_like(state.h), jnp.ones_like(state.c)),
                 jax.random.normal(keys[4], (steps, batch, hidden)))
    dzs = jax.random.normal(keys[4], (steps, batch, 4 * hidden))
    parts = {"loop": (jax.jit(loop), (x_proj, state)),
             "matmul": (jax.jit(matmul_only), (W_h, x_proj, state))}
    for outputs in (0, 1, 2, 6):
        name = "forward" if outputs == 0 else f"forward + {outputs} output{'s' if outputs > 1 else ''}"
        parts[name] = (jax.jit(lambda W, x, s, k=outputs: forward(W, x, s, k)), (W_h, x_proj, state))
    parts["backward"] = (jax.jit(pullback), (cotangent,))
    parts["dW_h"] = (jax.jit(lambda h, dz: recurrent_weight_gradient(h, dz)), (x_proj[..., :hidden], dzs))
    return parts


def iteration_rows(shapes: dict, *, rounds: int = 7, log=None) -> list[dict]:
    """shapes: {name: (batch, hidden, steps)}. One row per (shape, part): µs per iteration,
    the median over `rounds` interleaved rounds, and the min–max spread."""
    log = log or (lambda message: None)
    rows = []
    for name, (batch, hidden, steps) in shapes.items():
        parts = _parts(batch, hidden, steps)
        for function, args in parts.values():
            jax.block_until_ready(function(*args))  # compile and warm
        times = {part: [] for part in parts}
        for _ in range(rounds):
            for part, (function, args) in parts.items():
                started = time.perf_counter()
                jax.block_until_ready(function(*args))
                times[part].append((time.perf_counter() - started) / steps * 1e6)
        for part, series in times.items():
            rows.append({"shape": name, "batch": batch, "hidden": hidden, "steps": steps, "part": part,
                         "us_per_iteration": float(np.median(series)), "us_min": min(series),
                         "us_max": max(series)})
        log(f"{name}: done")
    return rows


def format_iteration_rows(rows: list[dict], title: str) -> str:
    """A table per shape; each part also as a multiple of the matmul alone."""
    matmul = {r["shape"]: r["us_per_iteration"] for r in rows if r["part"] == "matmul"}
    lines = [[r["shape"], f"{r['batch']}×{r['hidden']}", r["part"], f"{r['us_per_iteration']:.1f}",
              f"{r['us_min']:.1f}–{r['us_max']:.1f}", f"{r['us_per_iteration'] / matmul[r['shape']]:.2f}×"]
             for r in rows]
    header = ("shape", "B×H", "part", "µs/iteration", "spread", "vs matmul")
    return text_table(title, header, lines, left={0, 1, 2})
