"""Tiny Shakespeare in 3 minutes on one GPU: issue 6's GPU row, against nanoGPT's baby GPT
(1.4697 nats/char on an A100 in about 3 minutes).

    python scripts/train.py --config=configs/shakespeare_gpu.py --config.train.max_steps=N

The 30-minute CPU recipe (configs/shakespeare_30min.py: nanoGPT's split, embedded input,
variational dropout and DropConnect, cosine decay, best held-out checkpoint) made wider and
deeper. On a GPU a scan step costs about the same at 256 or 512 units and at batch 64 or 128
(the loop's per-step latency, not its arithmetic, sets the time), so the width and batch the CPU
could not afford are nearly free here; more regularisation goes with them, since three minutes
of a GPU see the training text well over a hundred times. The cosine needs a length:
scripts/device_check.sh times a short run of this config first and passes the steps that 3
minutes hold as max_steps.
"""
from configs import shakespeare_30min


def get_config():
    config = shakespeare_30min.get_config()
    config.name = "shakespeare_gpu"
    config.model.hidden_sizes = (512, 512)
    config.model.dropout = 0.3
    config.model.weight_drop = 0.3
    config.data.seq_len = 128
    config.data.stride = 128
    config.train.batch_size = 128
    config.train.cpu_devices = 0  # one GPU
    config.train.learning_rate = 3e-3
    config.train.time_budget_s = 180.0
    config.train.max_steps = 20_000  # replaced by the timed length (see above)
    config.train.steps_per_dispatch = 25  # a step is ~ms on a GPU: dispatch per step would show
    config.train.eval_every_steps = 500
    config.checkpoint.every_steps = 100_000  # saves at evaluations and the end only,
    config.checkpoint.every_epoch = False  # not at the ends of its ~62-step epochs (40 MB each)
    return config
