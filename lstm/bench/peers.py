"""The same character-LSTM train step in other frameworks, for `scripts/benchmark.py train`.

Each peer builds the model a user of that framework would write (PyTorch `nn.LSTM`, Flax NNX
`OptimizedLSTMCell`, the Keras tutorial's `Sequential`, JAX's cuDNN LSTM on a GPU) for one
`TrainShape`, and returns a
`step()` that runs forward, loss, backward and an Adam update on a fixed batch. Every peer keeps
its framework's default initialisers; what they are is stated in the peer's `info`.

torch and keras are optional (requirements-bench.txt) and imported only when their peer is
built, so importing this module is free and a missing package reads as `PeerUnavailable`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import sys

import numpy as np

PEERS = ("pytorch", "flax", "keras", "jax-cudnn")
ENCODINGS = ("scaled", "embed", "onehot")
OBJECTIVES = ("last", "all")
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-7  # Keras's default epsilon, used by every peer so the optimizers match


@dataclasses.dataclass(frozen=True)
class TrainShape:
    name: str
    batch: int
    seq_len: int
    vocab: int
    hidden_sizes: tuple[int, ...]
    encoding: str = "scaled"  # scaled: token/V as one float feature (the tutorial) | embed | onehot
    embed_dim: int = 64  # only for "embed"
    objective: str = "last"  # last: predict the char after the window | all: next char everywhere
    dropout: float = 0.0  # after each LSTM layer, like the tutorial's Dropout(0.2)


class PeerUnavailable(Exception):
    """The peer's package is not installed (or unusable); the message is a one-line reason."""


def make_batch(shape: TrainShape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens: inputs int32 [B, T] in [0, V); targets int32 [B] ("last") or [B, T] ("all")."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, shape.vocab, (shape.batch, shape.seq_len), dtype=np.int32)
    target_shape = (shape.batch,) if shape.objective == "last" else (shape.batch, shape.seq_len)
    return inputs, rng.integers(0, shape.vocab, target_shape, dtype=np.int32)


def make_peer_step(peer: str, shape: TrainShape, inputs, targets, seed: int = 0):
    """Returns (step, info). `step()` runs one training step on the fixed batch, waits for it and
    returns the loss as a float; the first call of the flax and keras peers includes compilation.
    Raises PeerUnavailable when the peer's package is missing, ValueError for a bad peer or shape."""
    builders = {"pytorch": _pytorch_step, "flax": _flax_step, "keras": _keras_step,
                "jax-cudnn": _jax_cudnn_step}
    if peer not in builders:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    _check_shape(shape)
    inputs, targets = np.asarray(inputs, np.int32), np.asarray(targets, np.int32)
    want = (shape.batch,) if shape.objective == "last" else (shape.batch, shape.seq_len)
    if inputs.shape != (shape.batch, shape.seq_len) or targets.shape != want:
        raise ValueError(f"batch {inputs.shape}/{targets.shape} does not fit shape {shape.name!r}")
    return builders[peer](shape, inputs, targets, seed)


def _check_shape(shape: TrainShape) -> None:
    if shape.encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {shape.encoding!r}; expected one of {ENCODINGS}")
    if shape.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {shape.objective!r}; expected one of {OBJECTIVES}")
    if not shape.hidden_sizes:
        raise ValueError("hidden_sizes must name at least one LSTM layer")
    if not 0.0 <= shape.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {shape.dropout}")


def _features(shape: TrainShape, inputs: np.ndarray) -> np.ndarray:
    """The network's input as the tutorial prepares it outside the model: token/V as one float
    feature, or a one-hot vector; "embed" feeds the token ids to an embedding table."""
    if shape.encoding == "scaled":
        return (inputs / np.float32(shape.vocab)).astype(np.float32)[..., None]
    if shape.encoding == "onehot":
        return np.eye(shape.vocab, dtype=np.float32)[inputs]
    return inputs


def _input_size(shape: TrainShape) -> int:
    return {"scaled": 1, "onehot": shape.vocab, "embed": shape.embed_dim}[shape.encoding]


# ------------------------------------------------------------------------------------- pytorch
def _pytorch_step(shape: TrainShape, inputs, targets, seed):
    try:
        import torch
    except ImportError as error:
        raise PeerUnavailable(f"torch is not installed ({error}); see requirements-bench.txt") from None
    # One thread per core is fastest on an idle machine; while other processes keep the cores
    # busy, torch's OpenMP threads stall at barriers and a step can run 10x slower.
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = (torch.nn.Embedding(shape.vocab, shape.embed_dim)
                          if shape.encoding == "embed" else None)
            # One nn.LSTM per layer: dropout then follows every layer, the last included,
            # where num_layers=N would drop only between layers.
            sizes = (_input_size(shape),) + tuple(shape.hidden_sizes)
            self.lstms = torch.nn.ModuleList(
                torch.nn.LSTM(n_in, n_out, batch_first=True) for n_in, n_out in zip(sizes, sizes[1:]))
            self.dropout = torch.nn.Dropout(shape.dropout)
            self.head = torch.nn.Linear(sizes[-1], shape.vocab)

        def forward(self, x):
            if self.embed is not None:
                x = self.embed(x)
            for lstm in self.lstms:
                x = self.dropout(lstm(x)[0])
            if shape.objective == "last":
                x = x[:, -1]  # like Keras's return_sequences=False: only the last step has a head
            return self.head(x)

    model = Net().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPS)
    x = torch.from_numpy(_features(shape, inputs))
    x = x.long() if shape.encoding == "embed" else x  # nn.Embedding wants int64 ids
    y = torch.from_numpy(targets).long().reshape(-1)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x).reshape(-1, shape.vocab), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    # On a CPU build with oneDNN, nn.LSTM runs as mkldnn_rnn_layer (checked with the profiler).
    backend = "oneDNN" if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled else "ATen"
    return step, {
        "peer": "pytorch", "version": torch.__version__, "threads": str(threads),
        "init": "PyTorch defaults: LSTM/Linear U(±1/√fan), Embedding N(0, 1)",
        "note": f"nn.LSTM per layer, eager (no torch.compile), {backend} CPU build, {threads} threads",
    }


# ---------------------------------------------------------------------------------------- flax
def _flax_step(shape: TrainShape, inputs, targets, seed):
    import flax
    import jax
    import optax
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.embed = (nnx.Embed(shape.vocab, shape.embed_dim, rngs=rngs)
                          if shape.encoding == "embed" else None)
            sizes = (_input_size(shape),) + tuple(shape.hidden_sizes)
            self.lstms = nnx.List([nnx.RNN(nnx.OptimizedLSTMCell(n_in, n_out, rngs=rngs))
                                   for n_in, n_out in zip(sizes, sizes[1:])])
            self.dropout = nnx.Dropout(shape.dropout, rngs=rngs)
            self.head = nnx.Linear(sizes[-1], shape.vocab, rngs=rngs)

        def __call__(self, x):
            if self.embed is not None:
                x = self.embed(x)
            for lstm in self.lstms:
                x = self.dropout(lstm(x))
            return self.head(x[:, -1] if shape.objective == "last" else x)

    model = Net(nnx.Rngs(params=seed, dropout=seed + 1))
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE, eps=ADAM_EPS), wrt=nnx.Param)
    # Flax's performance guide: split once, and jit a pure function of the state that merges
    # inside; this skips nnx.jit's graph traversal on every call. The state is donated.
    graphdef, state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    x, y = jax.device_put(_features(shape, inputs)), jax.device_put(targets)
    holder = [state]

    def step() -> float:
        holder[0], loss = train_step(holder[0], x, y)
        return float(loss)

    return step, {
        "peer": "flax", "version": flax.__version__,
        "init": "Flax defaults: kernels LeCun normal, recurrent orthogonal, biases 0, Embed N(0, 1)",
        "note": f"nnx.RNN(nnx.OptimizedLSTMCell), split/merge under jax.jit, jax {jax.__version__} "
                f"on {jax.devices()[0].platform}",
    }


# ----------------------------------------------------------------------------------- jax-cudnn
def _jax_cudnn_step(shape: TrainShape, inputs, targets, seed):
    """cuDNN's fused LSTM through `jax.experimental.rnn`: the black box on a GPU without
    PyTorch (a CUDA torch build is gigabytes; JAX's cuDNN path ships with jaxlib)."""
    import jax
    import jax.numpy as jnp
    import optax

    if jax.default_backend() != "gpu":
        raise PeerUnavailable(f"jax.experimental.rnn lowers only to cuDNN on a CUDA GPU; "
                              f"this backend is {jax.default_backend()}")
    from jax.experimental import rnn

    sizes = (_input_size(shape),) + tuple(shape.hidden_sizes)
    keys = jax.random.split(jax.random.key(seed), len(sizes) + 2)
    params = {  # one single-layer cuDNN call per layer, so dropout follows each, as elsewhere
        "lstm": [rnn.init_lstm_weight(key, n_in, n_out, 1, False)
                 for key, n_in, n_out in zip(keys, sizes, sizes[1:])],
        "head_W": jax.nn.initializers.glorot_uniform()(keys[-2], (sizes[-1], shape.vocab)),
        "head_b": jnp.zeros((shape.vocab,), jnp.float32),
    }
    if shape.encoding == "embed":
        params["embed"] = jax.random.normal(keys[-1], (shape.vocab, shape.embed_dim))
    optimizer = optax.adam(LEARNING_RATE, eps=ADAM_EPS)
    seq_lengths = jnp.full((shape.batch,), shape.seq_len, jnp.int32)

    def logits(params, x, key):
        if shape.encoding == "embed":
            x = params["embed"][x]
        for index, (weights, hidden) in enumerate(zip(params["lstm"], shape.hidden_sizes)):
            zeros = jnp.zeros((1, shape.batch, hidden), jnp.float32)
            x, _, _ = rnn.lstm(x, zeros, zeros, weights, seq_lengths, input_size=x.shape[-1],
                               hidden_size=hidden, num_layers=1, dropout=0.0, bidirectional=False)
            if shape.dropout:
                keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1 - shape.dropout, x.shape)
                x = jnp.where(keep, x / (1 - shape.dropout), 0.0)
        x = x[:, -1] if shape.objective == "last" else x
        return x @ params["head_W"] + params["head_b"]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y, key):
        def loss_fn(params):
            return optax.softmax_cross_entropy_with_integer_labels(logits(params, x, key), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = jax.device_put(_features(shape, inputs)), jax.device_put(targets)
    dropout_key = jax.random.key(seed + 1)
    holder = {"params": params, "opt_state": optimizer.init(params), "step": 0}

    def step() -> float:
        key = jax.random.fold_in(dropout_key, holder["step"])
        holder["params"], holder["opt_state"], loss = train_step(
            holder["params"], holder["opt_state"], x, y, key)
        holder["step"] += 1
        return float(loss)

    return step, {
        "peer": "jax-cudnn", "version": jax.__version__,
        "init": "jax.experimental.rnn.init_lstm_weight (U(±1/√H)); head Glorot; Embed N(0, 1)",
        "note": f"jax.experimental.rnn.lstm (cuDNN) per layer, under jax.jit, on {jax.devices()[0].device_kind}",
    }


# --------------------------------------------------------------------------------------- keras
def _import_keras_on_jax():
    loaded = sys.modules.get("keras")
    if loaded is None:
        if "keras" in sys.modules:  # a None entry: importing it is blocked
            raise PeerUnavailable("keras cannot be imported in this process")
        # Keras picks its backend once, at first import.
        os.environ["KERAS_BACKEND"] = "jax"
    try:
        import keras
    except ImportError as error:
        raise PeerUnavailable(f"keras is not installed ({error}); see requirements-bench.txt") from None
    if keras.backend.backend() != "jax":
        raise PeerUnavailable(f"keras was already imported with the {keras.backend.backend()!r} "
                              "backend; the peer needs KERAS_BACKEND=jax set before keras's first import")
    return keras


@contextlib.contextmanager
def _global_rngs_kept():
    """keras.utils.set_random_seed reseeds Python's, NumPy's and torch's global generators, and
    building the model draws from Python's; put them back so this peer changes nothing for the
    caller or the torch peer."""
    torch = sys.modules.get("torch")
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state() if torch else None)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        if torch:
            torch.set_rng_state(saved[2])


def _keras_step(shape: TrainShape, inputs, targets, seed):
    keras = _import_keras_on_jax()
    import jax

    with _global_rngs_kept():
        keras.utils.set_random_seed(seed)
        layers = keras.layers
        if shape.encoding == "embed":
            stack = [keras.Input((shape.seq_len,), dtype="int32"), layers.Embedding(shape.vocab, shape.embed_dim)]
        else:
            stack = [keras.Input((shape.seq_len, _input_size(shape)))]
        for i, hidden in enumerate(shape.hidden_sizes):
            last_layer = i == len(shape.hidden_sizes) - 1
            stack.append(layers.LSTM(hidden, return_sequences=not last_layer or shape.objective == "all"))
            if shape.dropout:
                stack.append(layers.Dropout(shape.dropout))
        stack.append(layers.Dense(shape.vocab, activation="softmax"))
        model = keras.Sequential(stack)
        if shape.objective == "last":  # the tutorial: one-hot targets, categorical cross-entropy
            loss, y = "categorical_crossentropy", np.eye(shape.vocab, dtype=np.float32)[targets]
        else:  # sparse avoids a B×T×V one-hot; the loss is the same
            loss, y = "sparse_categorical_crossentropy", targets
        model.compile(loss=loss, optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE, epsilon=ADAM_EPS))
    x = _features(shape, inputs)

    def step() -> float:
        # train_on_batch converts its logs to NumPy, so it returns only once the step is done.
        return float(model.train_on_batch(x, y))

    return step, {
        "peer": "keras", "version": keras.__version__,
        "init": "Keras defaults: kernels Glorot uniform, recurrent orthogonal, forget bias 1, "
                "Embedding U(±0.05)",
        "note": f"tutorial Sequential, train_on_batch, JAX backend (jax {jax.__version__}), "
                "softmax + cross-entropy on probabilities",
    }
