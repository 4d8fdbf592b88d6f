"""Your own text: any UTF-8 file, 30 minutes, the recipe that held up in docs/results.md.

    python scripts/train.py --config=configs/mytext.py --config.data.path=FILE --workdir=runs/NAME

The last 10% of FILE is held out (a contiguous tail, so no held-out sentence leaks into
training); case and every character are kept (a Project Gutenberg file loses its licence
header and footer). The model is the 30-minute Shakespeare one: a 1×256 LSTM on a 64-wide
embedding, every position a target, batch 64 × 64, Adam at 6e-3 clipped at 1, a cosine decay
over the run, AR/TAR on (the one regulariser that gained at every length measured).

Sized from the text when training starts (lstm/sizing.py): the four dropout rates are -1 here,
and the first log line says what they became, from the passes the run makes over the training
text: ~440 for a 150 k-character book such as Alice (AWD-LSTM's strengths: weight drop 0.5,
locked dropout 0.3/0.1, embedding dropout 0.1), ~57 for a 1 M-character text such as Tiny
Shakespeare (weight drop 0.2, locked dropout 0.2), under 20 from ~2.9 M characters on (locked
dropout 0.2 alone). Any rate set on the command line is kept as given.

Evaluation is tied to the run's length: every max_steps / 20 steps, on up to 2,048 held-out
windows, and the best held-out step is kept as the run's 'best' checkpoint
(`scripts/generate.py --which=best`). For another budget change both, in proportion:
`--config.train.time_budget_s=600 --config.train.max_steps=4700`; evaluation follows
max_steps. Yardsticks from the runs the recipe comes from (2-core AMD EPYC, docs/results.md):
Tiny Shakespeare 1.488 nats/char (configs/shakespeare_30min.py with AR/TAR), Alice 1.346
(configs/alice_30min.py).
"""
from configs import default

AUTO = -1.0  # lstm.sizing.AUTO: sized from the text when training starts


def get_config():
    config = default.get_config()
    config.name = "mytext"
    config.data.path = ""  # required: --config.data.path=FILE
    config.data.download = False
    config.data.strip_gutenberg = True  # a file without the markers is kept whole
    config.data.lowercase = False  # case carries information; the vocabulary is whatever the file holds
    config.data.val_fraction = 0.1  # the held-out tail
    config.data.objective = "all"  # every position a target: T times the signal per window
    config.data.seq_len = 64
    config.data.stride = 1  # windows at every character: each pass sees a small text at new phases
    config.model.encoding = "embed"  # 0.6-0.8 nats/char below the tutorial's scaled input in 120 s
    config.model.embed_dim = 64
    config.model.hidden_sizes = (256,)  # on a CPU, more steps beat more units (docs/results.md)
    config.model.dropout_kind = "locked"  # one mask per sequence (variational dropout)
    config.model.dropout = AUTO  # -1: sized from the text (lstm/sizing.py), as the three below
    config.model.input_dropout = AUTO
    config.model.embed_dropout = AUTO
    config.model.weight_drop = AUTO
    config.train.batch_size = 64
    config.train.num_epochs = 1_000_000  # the time budget or max_steps ends this run
    config.train.time_budget_s = 1800.0
    # The cosine needs a length: what 30 minutes held on the 2-core AMD EPYC of 2026-12-04 with
    # masks on (~8 steps/s), as in configs/shakespeare_30min.py. A faster machine stops here.
    config.train.max_steps = 14_000
    config.train.learning_rate = 6e-3
    config.train.grad_clip_norm = 1.0
    config.train.lr_schedule = "cosine"
    config.train.lr_end_fraction = 0.05
    config.train.activation_reg = 2.0  # AR/TAR: -0.038 at 2,000 steps, -0.023 at 30 minutes
    config.train.temporal_activation_reg = 1.0
    config.train.log_every_steps = 50
    # Twenty evaluations whatever the length: a small text overfits between sparse ones.
    config.train.eval_every_steps = config.train.get_ref("max_steps") // 20
    config.eval.every_epoch = False  # with stride 1 an epoch is ~64 passes; the schedule above instead
    config.eval.max_windows = 2048
    config.checkpoint.every_steps = 1000  # resume points; every better evaluation is saved too
    return config
