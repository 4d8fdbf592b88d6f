"""Tiny Shakespeare in 30 minutes of wall time on a 2-core CPU: the longer race, regularised.

    python scripts/train.py --config=configs/shakespeare_30min.py

The 120 s recipe (configs/shakespeare.py: nanoGPT's split, 1×256 LSTM on a 64-wide embedding,
batch 64 × 64, two JAX devices), given 15 times the time. Width stays 256: on this CPU a 1×384
step takes 2.4 times as long and a 1×512 step 4.7 times, and in 240 s trials neither learned
enough per step to make up for it (docs/results.md). In ~14,000 steps (~57 epochs) the model
sees the training text often enough to start fitting it rather than the language, so this
config adds what generalises (docs/results.md, "Tiny Shakespeare in 30 minutes"): the learning
rate decays along a cosine over the steps the budget holds, and the regularisers below are on.
It evaluates every 1,000 steps and keeps its best held-out checkpoint; evaluations and saves
count in the 30 minutes. Yardstick: nanoGPT's baby GPT, 1.4697 nats/char (an A100, ~3 min).
"""
from configs import shakespeare


def get_config():
    config = shakespeare.get_config()
    config.name = "shakespeare_30min"
    config.model.dropout_kind = "locked"  # one mask per sequence (variational dropout)
    config.model.dropout = 0.2  # on the LSTM's output, before the head
    config.model.weight_drop = 0.2  # DropConnect on W_h, one mask per batch
    config.train.time_budget_s = 1800.0
    # The cosine needs a length: the steps 30 minutes held on the 2-core AMD EPYC of
    # 2026-12-04 (~8.4 a second with these regularisers), less a margin. A faster machine
    # stops at max_steps before the budget; a slower one meets the budget before the decay ends.
    config.train.max_steps = 14_000
    config.train.lr_schedule = "cosine"
    config.train.lr_end_fraction = 0.05
    config.train.eval_every_steps = 1000
    config.eval.sample_length = 200
    return config
