"""Base configuration: every field any config may set, with the reason for its default.

Other configs import this, call `get_config()` and override a few fields. Every field can be
overridden from the command line: `--config.train.batch_size=32`.
"""
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "default"  # names the default workdir: runs/<name>
    config.seed = 0  # fixes init, shuffling and dropout; on CPU the same command repeats exactly

    config.data = data = ml_collections.ConfigDict()
    data.path = "data/wonderland.txt"  # downloaded (sha256-checked) from Project Gutenberg if missing
    data.download = True  # only the default Alice file is ever downloaded
    data.strip_gutenberg = True  # keep the book between the *** START/END *** markers
    data.lowercase = True  # the tutorial lower-cases to shrink the vocabulary
    data.allowed_chars = ""  # non-empty: drop every other character (tutorial extension 2)
    data.ascii_only = False  # True drops every non-ASCII character (curly quotes, accents)
    data.crlf = False  # True ends lines with "\r\n", like the tutorial's copy (measured in docs/investigations.md)
    data.val_fraction = 0.1  # contiguous held-out tail; the faithful configs set 0 like the tutorial
    data.seq_len = 100  # the tutorial's window
    data.stride = 1  # distance between window starts; 1 = every window (the tutorial)
    data.objective = "last"  # last | all | stateful | sentences (docs/design.md, "Objectives")

    config.model = model = ml_collections.ConfigDict()
    model.encoding = "scaled"  # scaled (the tutorial: index / V) | onehot | embed
    model.embed_dim = 64  # only for encoding=embed
    model.hidden_sizes = (256,)  # one width per stacked layer; the tutorial's LSTM(256)
    model.dropout = 0.2  # after every LSTM layer, as the tutorial's Dropout(0.2)
    model.input_dropout = 0.0  # tutorial extension 6
    model.dropout_kind = "standard"  # locked: one mask per sequence, shared across time (AWD-LSTM)
    model.embed_dropout = 0.0  # drops whole tokens' embeddings (or one-hot rows), one mask per batch
    model.weight_drop = 0.0  # DropConnect on W_h, one mask per batch (AWD-LSTM's WeightDrop)
    model.zoneout_h = 0.0  # a unit keeps its previous h with this probability (Krueger et al. 2016)
    model.zoneout_c = 0.0  # the same for c; evaluation keeps the expected share instead
    model.unroll = 1  # lax.scan unroll; tuned per backend by the benchmark
    model.matmul_dtype = "auto"  # bfloat16 (float32 sums and state) on a CPU with bf16 hardware, else float32
    model.gate_activation = "sigmoid"  # hard_sigmoid: Keras 1 / 2.0-2.2's default gates (the tutorial's)
    model.cell = "lstm"  # the tutorial's; peephole, Greff et al.'s ablations, layernorm, gru: lstm/cells/

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 128  # the tutorial's small model (model.fit batch_size=128)
    train.num_epochs = 20  # the tutorial's small model
    train.max_steps = 0  # > 0 stops early (tests, smoke runs)
    train.time_budget_s = 0.0  # > 0 stops after this much wall time (the Shakespeare race)
    train.optimizer = "adam"  # adam | adamw
    train.learning_rate = 1e-3  # Keras Adam default
    train.b1 = 0.9  # Keras Adam default
    train.b2 = 0.999  # Keras Adam default
    train.eps = 1e-7  # Keras 2's epsilon (optax's default and Keras 1's are 1e-8)
    train.eps_placement = "optax"  # keras: eps added to sqrt(v) before bias correction (lstm/optim.py)
    train.weight_decay = 0.0  # adamw only
    train.activation_reg = 0.0  # AR: + this · mean(top outputs after dropout)² (AWD-LSTM's alpha, 2)
    train.temporal_activation_reg = 0.0  # TAR: + this · mean(h_t − h_{t−1})² (AWD-LSTM's beta, 1)
    train.grad_clip_norm = 0.0  # > 0 clips the global gradient norm; the tutorial does not clip
    train.lr_schedule = "constant"  # constant | cosine (decays to lr_end_fraction by the last step)
    train.warmup_steps = 0  # linear warm-up from 0; the tutorial has none
    train.lr_end_fraction = 0.1  # cosine only: the last step's rate as a fraction of learning_rate
    train.cpu_devices = 0  # > 0: the host CPU as this many JAX devices, data-parallel over its cores
    train.keep_freed_memory = True  # glibc keeps the step's freed host buffers: no page faults (lstm/host_memory.py)
    train.steps_per_dispatch = 1  # > 1 scans several optimizer steps per jit call (short steps)
    train.log_every_steps = 50  # metrics leave the device only here: rarer is faster
    train.eval_every_steps = 0  # > 0 also evaluates every this many steps

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.batch_size = 256  # windows per evaluation call; no gradients, so larger than training's
    evaluation.every_epoch = True  # False: only every eval_every_steps and at the end (races)
    evaluation.max_windows = 4096  # caps the held-out windows per evaluation
    # How much context a held-out character gets changes its loss as much as a model change does.
    evaluation.context = "window"  # seq_len windows from zero | "256": nanoGPT's | continuous (lstm/evaluation.py)
    evaluation.streams = 10  # continuous only: AWD-LSTM's evaluation batch; few zero-state starts
    evaluation.sample_length = 200  # characters generated and logged at each evaluation
    evaluation.sample_temperature = 0.5  # readable yet varied; the tutorial's greedy argmax loops

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.keep_best = 3  # best steps kept by `monitor`, beside the latest
    checkpoint.monitor = "val_loss"  # val_loss | train_loss (the tutorial's save_best_only on loss)
    checkpoint.every_steps = 500  # "latest" saves for resume, besides the one at every epoch end
    checkpoint.every_epoch = True  # False: no save at epoch ends (short epochs, large models: a GPU race)
    return config
