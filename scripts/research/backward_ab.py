"""Interleaved A/B of the two backward passes `lstm` can run: the hand-written one
(lstm/scans.py, `_recurrence_bwd`) and the one derived from the step by `jax.vjp`
(`derived_recurrence`), on the bigger shape: 2 layers × 256, batch 64, seq 100, `scaled`
input, `last` objective, dropout 0.2, one value-and-grad per step.

    python scripts/research/backward_ab.py            # 8 steps per round, 3 rounds
    python scripts/research/backward_ab.py --steps=20

Both are compiled first (their gradients are printed as a max relative difference), then the
rounds alternate their order so drift in machine load falls on both. lstm/scans.py's
HAND_WRITTEN_LSTM_BACKWARD records the outcome.
"""
import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lstm import cli  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps of each backward per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; their order alternates.")

VOCAB, BATCH, SEQ, HIDDEN = 60, 64, 100, (256, 256)


def compiled_step(hand_written: bool, graphdef, tokens, targets, params):
    """value_and_grad jitted and run once while the choice is in force (it is read at trace time)."""
    import jax
    import optax
    from flax import nnx

    import lstm.scans
    lstm.scans.HAND_WRITTEN_LSTM_BACKWARD = hand_written

    def loss(p, key):
        logits, _ = nnx.merge(graphdef, p)(tokens, train=True, dropout_key=key, last_only=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], targets).mean()

    step = jax.jit(jax.value_and_grad(loss))
    return step, jax.block_until_ready(step(params, jax.random.key(0)))


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax
    import numpy as np
    from flax import nnx

    import lstm
    import lstm.scans
    model = lstm.CharLSTM(VOCAB, hidden_sizes=HIDDEN, encoding="scaled", dropout=0.2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
    targets = rng.integers(0, VOCAB, (BATCH,)).astype(np.int32)
    saved = lstm.scans.HAND_WRITTEN_LSTM_BACKWARD
    steps, grads = {}, {}
    for name, hand in (("derived", False), ("hand-written", True)):
        steps[name], (_, grads[name]) = compiled_step(hand, graphdef, tokens, targets, params)
    lstm.scans.HAND_WRITTEN_LSTM_BACKWARD = saved
    diff = max(float(np.abs(a - b).max() / np.abs(b).max())
               for a, b in zip(jax.tree.leaves(grads["derived"]), jax.tree.leaves(grads["hand-written"])))
    print(f"max relative gradient difference: {diff:.2e}")
    times = {name: [] for name in steps}
    for round_index in range(_ROUNDS.value):
        order = list(times) if round_index % 2 == 0 else list(times)[::-1]
        for name in order:
            start = time.perf_counter()
            for s in range(_STEPS.value):
                out = steps[name](params, jax.random.key(s))
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / _STEPS.value)
    for name, values in times.items():
        rounds = " ".join(f"{v:.4f}" for v in values)
        print(f"{name:>12}: s/step per round {rounds}  median {np.median(values):.4f}")


if __name__ == "__main__":
    cli.run(main)
