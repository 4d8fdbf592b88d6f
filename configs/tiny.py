"""A seconds-long run for tests and smoke checks: a 2×64 embedded model, 120 steps on Alice.

    python scripts/train.py --config=configs/tiny.py

On a 2-core CPU it finishes in well under a minute; the loss falls from ln(45) ≈ 3.8 to a
validation loss of about 2.3 nats/char.
"""
from configs import default


def get_config():
    config = default.get_config()
    config.name = "tiny"
    config.data.seq_len = 32
    config.data.stride = 3  # fewer, still overlapping windows: a short epoch
    config.data.objective = "all"
    config.model.encoding = "embed"
    config.model.embed_dim = 16
    config.model.hidden_sizes = (64, 64)
    config.model.dropout = 0.1
    config.train.batch_size = 32
    config.train.num_epochs = 1
    config.train.max_steps = 120
    config.train.learning_rate = 1e-2  # small model, short run: a large step learns visibly
    config.train.log_every_steps = 20
    config.train.eval_every_steps = 60
    config.eval.max_windows = 128
    config.eval.sample_length = 64
    config.checkpoint.every_steps = 40
    return config
