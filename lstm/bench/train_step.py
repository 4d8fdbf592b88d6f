"""The training-step benchmark behind `scripts/benchmark.py train`: our step and the peers'
(lstm/bench/peers.py) on identical shapes, interleaved in one process, plus the machine's
matmul ceiling measured in the same run.

Interleaving matters on a shared machine: a burst of load from elsewhere then slows every
contestant's sample of the same round instead of one contestant's whole series. Each entry is
the median over rounds, after warm-up calls that compile and fill caches.

FLOPs are counted the usual way (the "model FLOPs" of MFU): matmuls only, a forward pass of
Σ_layers 2·B·T·(I + H)·4H plus the head's 2·B·P·H·V (P = 1 prediction per window for `last`,
T for `all`), times 3 for forward + backward. I is the layer's dense input width (1 for the
scaled input, V for one-hot, D for an embedding), so every implementation is charged the same
work however it computes it (ours turns the one-hot/embedded projection into a gather).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from lstm.analysis.tables import text_table
from lstm.bench import peers as bench_peers
from lstm.bench.peers import PeerUnavailable, TrainShape

# Vocabulary sizes of the corpora the configs train on (cleaned Alice; Tiny Shakespeare).
CONFIG_VOCAB = {"small": 45, "bigger": 45, "shakespeare": 65, "tiny": 45}
DEFAULT_SHAPES = ("small", "bigger", "shakespeare")
OURS = "ours"


def shape_of(name: str, config) -> TrainShape:
    d, m = config.data, config.model
    if name not in CONFIG_VOCAB:
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(CONFIG_VOCAB)}")
    if d.objective not in ("last", "all"):
        raise ValueError(f"{name}: the benchmark times the last and all objectives, not {d.objective}")
    return TrainShape(name=name, batch=config.train.batch_size, seq_len=d.seq_len, vocab=CONFIG_VOCAB[name],
                      hidden_sizes=tuple(int(h) for h in m.hidden_sizes), encoding=m.encoding,
                      embed_dim=m.embed_dim, objective=d.objective, dropout=m.dropout)


def flops_per_step(shape: TrainShape) -> float:
    """Matmul FLOPs of one forward + backward (see the module docstring)."""
    first_input = {"scaled": 1, "onehot": shape.vocab, "embed": shape.embed_dim}[shape.encoding]
    B, T = shape.batch, shape.seq_len
    forward, width = 0.0, first_input
    for hidden in shape.hidden_sizes:
        forward += 2 * B * T * (width + hidden) * 4 * hidden
        width = hidden
    predictions = 1 if shape.objective == "last" else T
    forward += 2 * B * predictions * width * shape.vocab
    return 3 * forward


# --------------------------------------------------------------------------------- our step
def make_our_step(config, shape: TrainShape, *, unroll: int, matmul_dtype: str = "float32",
                  cell: str = "lstm", corpus_chars: int = 1 << 16, seed: int = 0):
    """(step, info): one optimizer step of lstm.train's jitted training program, windows
    gathered on the device from a random corpus of the shape's vocabulary, as in training."""
    from lstm import state as run_state
    from lstm import train

    config = config.copy_and_resolve_references()
    config.model.unroll = unroll
    config.model.matmul_dtype = matmul_dtype
    config.model.cell = cell
    config.seed = seed
    graphdef, optimizer, state = run_state.init_train_state(config, shape.vocab)
    train_steps = train.make_train_steps(graphdef, optimizer, config)
    rng = np.random.default_rng(seed)
    corpus = jnp.asarray(rng.integers(0, shape.vocab, corpus_chars), jnp.uint8)
    high = corpus_chars - shape.seq_len - 1
    weights = jnp.ones((1, shape.batch), jnp.float32)
    resets = jnp.zeros((1,), bool)
    holder = {"state": state}

    def step() -> float:
        starts = jnp.asarray(rng.integers(0, high, (1, shape.batch)), jnp.int32)
        holder["state"], metrics = train_steps(holder["state"], corpus, starts, weights, resets)
        return float(metrics["loss"][-1])

    return step, {"peer": OURS, "version": f"jax {jax.__version__}",
                  "init": "Keras (Glorot input, orthogonal recurrent, unit forget bias)",
                  "matmul_dtype": matmul_dtype, "cell": cell,
                  "note": f"lstm.train step, {cell} cell, {matmul_dtype} matmuls, unroll {unroll}"}


# -------------------------------------------------------------------------------- ceilings
def _median_seconds(run, repeats: int) -> float:
    run()  # compile
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def matmul_ceiling(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one large square float32 matmul: what the machine's BLAS can reach."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    seconds = _median_seconds(lambda: product(a).block_until_ready(), repeats)
    return 2 * size ** 3 / seconds / 1e9


def recurrent_matmul_rate(batch: int, hidden: int, steps: int = 100, repeats: int = 5) -> float:
    """GFLOP/s of the recurrence's own matmul, [B, H] @ [H, 4H], chained through a scan as
    in the cell (each step waits for the last): the ceiling for a sequential recurrence,
    usually well below the large-matmul rate because each product is small."""
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden), jnp.float32)
    h0 = jnp.asarray(rng.standard_normal((batch, hidden)), jnp.float32)

    @jax.jit
    def chain(W, h):
        body = lambda h, _: (jnp.tanh((h @ W)[:, :hidden]), None)  # tanh keeps values bounded
        return jax.lax.scan(body, h, None, length=steps)[0]

    seconds = _median_seconds(lambda: chain(W, h0).block_until_ready(), repeats)
    return 2 * batch * hidden * 4 * hidden * steps / seconds / 1e9


# ------------------------------------------------------------------------------------ rows
def train_rows(configs, peers=bench_peers.PEERS, *, rounds: int = 5, warmup: int = 2,
               unrolls=(1,), matmul_dtypes=("float32",), cells=("lstm",), log=None) -> dict:
    """Times every contestant on every shape; returns {"ceiling_gflops", "rows": [...]}.

    `configs` maps shape names (keys of CONFIG_VOCAB) to their configs, already overridden as
    the caller wants (a smaller batch for a smoke run). Ours is timed once per (matmul dtype,
    unroll, cell) triple; cells are lstm/cells/'s names. A peer whose package is missing
    gives a row with `skipped` set."""
    log = log or (lambda message: None)
    peak = matmul_ceiling()
    log(f"matmul ceiling {peak:.1f} GFLOP/s")
    rows = []
    for name, config in configs.items():
        shape = shape_of(name, config)
        inputs, targets = bench_peers.make_batch(shape)
        contestants = []
        for matmul_dtype in matmul_dtypes:
            for unroll in unrolls:
                for cell in cells:
                    contestants.append(make_our_step(config, shape, unroll=unroll, matmul_dtype=matmul_dtype,
                                                     cell=cell))
        for peer in peers:
            try:
                contestants.append(bench_peers.make_peer_step(peer, shape, inputs, targets))
            except PeerUnavailable as reason:
                rows.append(_row(shape, {"peer": peer, "note": ""}, None, peak, None, skipped=str(reason)))
        for step, _ in contestants:
            for _ in range(warmup):
                step()
        times = [[] for _ in contestants]
        losses = [float("nan")] * len(contestants)
        for _ in range(rounds):
            for index, (step, _) in enumerate(contestants):
                started = time.perf_counter()
                losses[index] = step()
                times[index].append(time.perf_counter() - started)
        recurrent = recurrent_matmul_rate(shape.batch, max(shape.hidden_sizes))
        for (_, info), seconds, loss in zip(contestants, times, losses):
            rows.append(_row(shape, info, float(np.median(seconds)), peak, recurrent, loss=loss,
                             spread=(min(seconds), max(seconds))))
        log(f"{name}: done")
    return {"ceiling_gflops": peak, "rows": rows}


def _row(shape, info, seconds, peak, recurrent, *, loss=None, spread=None, skipped=None) -> dict:
    flops = flops_per_step(shape)
    row = {"shape": shape.name, "batch": shape.batch, "seq_len": shape.seq_len, "vocab": shape.vocab,
           "hidden": list(shape.hidden_sizes), "encoding": shape.encoding, "objective": shape.objective,
           "gflop_per_step": flops / 1e9, **info, "skipped": skipped}
    if seconds is None:
        return row
    targets = shape.batch * (1 if shape.objective == "last" else shape.seq_len)
    row.update(s_per_step=seconds, s_min=spread[0], s_max=spread[1], windows_per_s=shape.batch / seconds,
               target_chars_per_s=targets / seconds, gflops=flops / seconds / 1e9,
               pct_of_ceiling=100 * flops / seconds / 1e9 / peak,
               floor_s=flops / 1e9 / peak, recurrent_gflops=recurrent,
               recurrent_floor_s=flops / 1e9 / recurrent, last_loss=loss)
    return row


def format_train_rows(result: dict, title: str) -> str:
    """A plain-text table; per shape, each contestant's time relative to our first (the
    first matmul dtype, unroll and cell asked for: float32, unroll 1, lstm by default)."""
    header = ("shape", "implementation", "s/step", "vs ours", "windows/s", "target chars/s", "GFLOP/s",
              "% ceiling", "note")
    lines = []
    ours = {}
    for r in result["rows"]:
        if r["peer"] == OURS:
            ours.setdefault(r["shape"], r["s_per_step"])
    for r in result["rows"]:
        if r.get("skipped"):
            lines.append([r["shape"], r["peer"], "skipped", "", "", "", "", "", r["skipped"]])
            continue
        lines.append([r["shape"], r["peer"], f"{r['s_per_step']:.4f}", f"{r['s_per_step'] / ours[r['shape']]:.2f}×",
                      f"{r['windows_per_s']:,.0f}", f"{r['target_chars_per_s']:,.0f}", f"{r['gflops']:.1f}",
                      f"{r['pct_of_ceiling']:.0f}%", r.get("note", "")])
    floors = []
    for name in dict.fromkeys(r["shape"] for r in result["rows"]):
        row = next(r for r in result["rows"] if r["shape"] == name and r.get("floor_s"))
        floors.append(f"{name}: {row['gflop_per_step']:.2f} GFLOP/step; floor {row['floor_s']:.4f} s at the "
                      f"{result['ceiling_gflops']:.0f} GFLOP/s ceiling, {row['recurrent_floor_s']:.4f} s at the "
                      f"recurrent matmul's {row['recurrent_gflops']:.0f} GFLOP/s")
    return "\n".join([text_table(title, header, lines, left={0, 1, 8}), "", *floors])
