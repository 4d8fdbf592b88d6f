"""Tiny Shakespeare in 120 seconds of wall time on a 2-core CPU: the modern recipe.

    python scripts/train.py --config=configs/shakespeare.py

nanoGPT's split (first 90% train, last 10% validation, 65 symbols); every position predicts
its next character; embedded input. Yardstick: nanoGPT's CPU baby GPT reaches 1.88 nats/char
in about two minutes on the same machine; the target here is ≤ 1.60 (results in docs/results.md).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.name = "shakespeare"
    config.data.path = "data/tinyshakespeare.txt"
    config.data.download = False  # only Alice is downloaded; make/CI copy this from ../shared/data
    config.data.strip_gutenberg = False
    config.data.lowercase = False  # case carries information (speaker names are upper-case)
    config.data.val_fraction = 0.1  # nanoGPT's split: the last 10% of the file
    config.data.objective = "all"  # every position is a target: T times the signal per window
    config.data.seq_len = 64
    config.data.stride = 64  # non-overlapping windows, reshuffled every epoch
    config.model.encoding = "embed"
    config.model.embed_dim = 64
    config.model.hidden_sizes = (256,)  # in 120 s, more steps beat more units (docs/results.md)
    config.model.dropout = 0.0  # two minutes is far from overfitting; dropout only slows learning
    config.train.batch_size = 64
    # One JAX device per core: +19-44% steps in 120 s when measured (docs/results.md); with freed
    # host memory kept (train.keep_freed_memory) one device ties it (docs/performance.md). Kept
    # so that the documented runs reproduce.
    config.train.cpu_devices = 2
    config.train.num_epochs = 100  # the time budget, not the epoch count, ends this run
    config.train.time_budget_s = 120.0
    config.train.learning_rate = 6e-3
    config.train.grad_clip_norm = 1.0
    config.train.log_every_steps = 50
    # Evaluated every 250 steps (~an epoch, ~5 times in the race), so the run keeps its best
    # held-out checkpoint: pointed at a smaller text this recipe overfits within the budget, and
    # evaluating only at the end kept the worst model (issue 45). The evaluations and the saves
    # of improved steps count in the 120 s.
    config.train.eval_every_steps = 250
    config.eval.every_epoch = False  # the step schedule instead
    config.eval.max_windows = 2048
    config.checkpoint.every_steps = 100_000  # periodic saves cost training time; the best are saved anyway
    return config
