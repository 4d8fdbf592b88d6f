"""The training state and how a trained workdir is rebuilt from its checkpoints alone.

Training (`lstm.train`), sampling (`lstm.sample`) and the analysis scripts all load runs through
this module, so none of them goes through another's code: data flows config → state → train,
and a workdir → state → model for everyone else.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lstm import checkpoint, data, evaluation, optim
from lstm.model import CharLSTM, ModelConfig


class ConfigError(ValueError):
    """A config value that cannot work; str(e) is one line naming the field."""


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: nnx.State
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key data (Orbax stores plain arrays); dropout keys fold in the step
    carry: tuple  # `stateful` only: one carry per layer (LSTMState for the LSTM), carried between batches
    epoch_loss_sum: jax.Array  # running sums for Keras's per-epoch training loss; checkpointed,
    epoch_weight_sum: jax.Array  # so a resumed epoch reports exactly what an unbroken one would


# Options added after runs were already saved, with the value that reproduces what those runs
# did. A saved config is upgraded once, when it is read, so the rest of the code sees every
# option and an old workdir still resumes and samples as before. The model's come from
# ModelConfig's defaults, which mean exactly that.
ADDED_OPTIONS = {**{f"model.{field.name}": field.default for field in dataclasses.fields(ModelConfig)},
                 "train.eps_placement": "optax", "train.cpu_devices": 0, "train.activation_reg": 0.0,
                 "train.temporal_activation_reg": 0.0, "checkpoint.every_epoch": True,
                 "train.keep_freed_memory": True, "eval.context": "window", "eval.streams": 10}


def upgrade_config(config) -> ml_collections.ConfigDict:
    """A copy of `config` (a ConfigDict or its dict) with every ADDED_OPTIONS entry it lacks."""
    upgraded = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
    for dotted, value in ADDED_OPTIONS.items():
        section, name = dotted.split(".")
        upgraded.setdefault(section, {}).setdefault(name, value)
    return ml_collections.ConfigDict(upgraded)


def upgrade_config_dict(config: dict) -> dict:
    """upgrade_config for the plain dict that checkpoint.read_meta returns."""
    return upgrade_config(config).to_dict()


def read_run(workdir) -> tuple[ml_collections.ConfigDict, data.Vocab]:
    """A trained workdir's config, upgraded to today's options, and its vocabulary."""
    config_dict, vocab_json = checkpoint.read_meta(workdir)
    return upgrade_config(config_dict), data.Vocab.from_json(vocab_json)


def validate_config(config) -> None:
    """Checks the values a typo or a bad override would break, with a one-line message each."""
    d, t = config.data, config.train
    try:  # the model's fields validate themselves; "auto" checked as float32, so JAX's backend stays unstarted
        ModelConfig.from_config(config.model, auto_as="float32")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    checks = [
        (d.objective in ("last", "all", "stateful", "sentences"),
         "data.objective must be last, all, stateful or sentences"),
        (d.seq_len >= 1, "data.seq_len must be >= 1"),
        (d.stride >= 1, "data.stride must be >= 1"),
        (0 <= d.val_fraction < 1, "data.val_fraction must be in [0, 1)"),
        (t.activation_reg >= 0 and t.temporal_activation_reg >= 0,
         "train.activation_reg and train.temporal_activation_reg must be >= 0"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.num_epochs >= 1, "train.num_epochs must be >= 1"),
        (t.learning_rate > 0, "train.learning_rate must be > 0"),
        (t.optimizer in ("adam", "adamw"), "train.optimizer must be adam or adamw"),
        (t.eps_placement in optim.EPS_PLACEMENTS,
         f"train.eps_placement must be one of {', '.join(optim.EPS_PLACEMENTS)}"),
        (t.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be constant or cosine"),
        (t.steps_per_dispatch >= 1, "train.steps_per_dispatch must be >= 1"),
        (t.cpu_devices >= 0, "train.cpu_devices must be >= 0"),
        (t.log_every_steps >= 1, "train.log_every_steps must be >= 1"),
        (_is_protocol(config.eval.context),
         "eval.context must be window, continuous or a window length such as 256"),
        (config.eval.streams >= 1, "eval.streams must be >= 1"),
        (config.eval.context == "window" or d.objective != "sentences",
         "eval.context must be window for objective sentences, which scores held-out sentences"),
        (config.checkpoint.monitor in ("val_loss", "train_loss"),
         "checkpoint.monitor must be val_loss or train_loss"),
        (config.checkpoint.monitor == "train_loss" or d.val_fraction > 0,
         "checkpoint.monitor=val_loss needs data.val_fraction > 0 (or monitor train_loss)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _is_protocol(context) -> bool:
    try:
        evaluation.context_length(context)
    except ValueError:
        return False
    return True


def started_matmul_dtype(workdir) -> str | None:
    """The matmul dtype a workdir's run was started with; None for a fresh (or unreadable:
    resuming then stops with the checkpoint's own error) workdir."""
    try:
        return read_run(workdir)[0].model.matmul_dtype
    except ValueError:  # CheckpointError and DataError are ValueErrors
        return None


def build_model(config, vocab_size: int) -> CharLSTM:
    return CharLSTM(vocab_size, ModelConfig.from_config(config.model), rngs=nnx.Rngs(config.seed))


def init_train_state(config, vocab_size: int, total_steps: int = 1):
    """A fresh model and train state: (graphdef, optimizer, state)."""
    model = build_model(config, vocab_size)
    graphdef, params = nnx.split(model)
    optimizer = optim.make_optimizer(config.train, total_steps, config.train.eps_placement)
    carry = model.initial_state(config.train.batch_size) if config.data.objective == "stateful" else ()
    rng = jax.random.key_data(jax.random.fold_in(jax.random.key(config.seed), 1))  # 0 went to init
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       rng=rng, carry=carry, epoch_loss_sum=jnp.zeros((), jnp.float32),
                       epoch_weight_sum=jnp.zeros((), jnp.float32))
    return graphdef, optimizer, state


def flatten_state(state) -> dict:
    """The train state as a flat {"path": array} dict for Orbax: path names stay readable in
    mismatch messages, and structural nodes that hold no array (optax's EmptyState, the empty
    carry of non-stateful runs) need no special handling on disk."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def unflatten_state(flat: dict, like):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree.unflatten(treedef, [flat[jax.tree_util.keystr(path)] for path, _ in leaves])


def load_state(workdir, which: str | int = "best"):
    """(graphdef, train state, vocab, config, step) from a workdir's checkpoints alone.

    A damaged `which` is a one-line checkpoint.UnreadableCheckpoint naming its step: no other
    step is tried in its place, since the caller asked for this one."""
    config, vocab = read_run(workdir)
    graphdef, _, target = init_train_state(config, len(vocab))
    saver = checkpoint.Checkpointer(workdir, keep_best=config.checkpoint.keep_best)
    try:
        if which == "best" and saver.best_step() is None:
            which = "latest"  # a run with no monitored metric yet: latest is the best we have
        step, flat, _ = saver.restore(flatten_state(target), which=which)
    finally:
        saver.close()
    return graphdef, unflatten_state(flat, target), vocab, config, step


def load_model(workdir, which: str | int = "best"):
    """Rebuilds (model, vocab, config) from a workdir's checkpoints alone, for sampling."""
    graphdef, state, vocab, config, _ = load_state(workdir, which)
    return nnx.merge(graphdef, state.params), vocab, config
