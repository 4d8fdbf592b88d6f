"""Training: one jitted step and `train_and_evaluate` (evaluation: lstm/evaluation.py; the state: lstm/state.py).

The hot path is functional: the NNX model is split once into a static graph definition and
its parameters, and the jitted step is a pure function of (state, corpus, window starts). The
corpus sits on the device; a step receives only int32 window starts and gathers its windows
there (docs/design.md, "Performance principles", 2). Several optimizer steps can run in one
dispatch (a scan over steps), which matters where steps are short.
"""
from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lstm import checkpoint, data, distributed, environment, host_memory, ngram, regularisers, sample, schedules
from lstm.evaluation import (
    LOG2E,
    batch_windows,
    check_protocol,
    evaluate,
    make_eval_steps,
    protocol,
    sequence_loss,
)
from lstm.interrupt import StopOnSignals, TrainingInterrupted
from lstm.logger import MetricLogger
from lstm.model import ModelConfig
from lstm.sentences import SentenceWindows
from lstm.sizing import fit_to_corpus
from lstm.state import (
    ConfigError,
    TrainState,
    flatten_state,
    init_train_state,
    started_matmul_dtype,
    unflatten_state,
    upgrade_config,
    upgrade_config_dict,
    validate_config,
)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite); str(e) is one line."""


def place_state(state: TrainState, mesh) -> TrainState:
    """Replicates everything over the mesh except the stateful carry, whose rows are streams
    and so follow the batch's sharding."""
    carry = jax.tree.map(
        lambda x: distributed.global_array(np.asarray(x), distributed.batch_sharding(mesh)), state.carry)
    return distributed.put_replicated(state._replace(carry=()), mesh)._replace(carry=carry)


def make_train_steps(graphdef, optimizer, config):
    """Returns the jitted `train_steps(state, corpus, starts[K, B], weights[K, B], resets[K])`,
    K optimizer steps in one dispatch (K=1 is the plain step); `state` is donated."""
    objective, seq_len, t = config.data.objective, config.data.seq_len, config.train
    penalised = t.activation_reg > 0 or t.temporal_activation_reg > 0

    def train_step(corpus, state: TrainState, batch):
        starts, weights, reset = batch
        inputs, targets = batch_windows(corpus, starts, seq_len, objective)
        carry = state.carry
        if objective == "stateful":
            # A new epoch restarts the streams; otherwise continue them, but stop the
            # gradient: truncated BPTT backpropagates only through this window.
            carry = jax.tree.map(lambda x: jnp.where(reset, jnp.zeros_like(x), jax.lax.stop_gradient(x)), carry)
        dropout_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_fn(params):
            model = nnx.merge(graphdef, params)
            out = model(inputs, carry if objective == "stateful" else None, train=True,
                        dropout_key=dropout_key, last_only=objective == "last", with_top=penalised)
            logits, final = out[:2]
            loss_sum, weight = sequence_loss(logits, targets, weights, objective)
            loss = loss_sum / jnp.maximum(weight, 1.0)
            penalties = {}
            if penalised:  # scored positions, time-major like the outputs
                positions = weights.T if weights.ndim == 2 else jnp.broadcast_to(weights, inputs.T.shape)
                penalties = dict(zip(("ar_loss", "tar_loss"), regularisers.activation_penalties(
                    out[2], positions, t.activation_reg, t.temporal_activation_reg)))
            return loss + sum(penalties.values()), (final, loss_sum, weight, loss, penalties)

        (_, (final, loss_sum, weight, loss, penalties)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = jnp.where(reset, 0.0, 1.0)
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng,
            carry=final if objective == "stateful" else state.carry,
            epoch_loss_sum=state.epoch_loss_sum * keep + loss_sum,
            epoch_weight_sum=state.epoch_weight_sum * keep + weight)
        # "loss" is the data's alone, comparable with unregularised runs; AR/TAR are beside it.
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params),
                   **penalties}
        return new_state, metrics

    @functools.partial(jax.jit, donate_argnums=0)
    def train_steps(state, corpus, starts, weights, resets):
        return jax.lax.scan(functools.partial(train_step, corpus), state, (starts, weights, resets))

    return train_steps


def prepare_process(config: ml_collections.ConfigDict) -> None:
    """The process-wide setup a training config asks for, which `train_and_evaluate` leaves to
    its caller because it outlives the call: glibc keeping freed host memory
    (train.keep_freed_memory, irreversible), the CPU as train.cpu_devices JAX devices, and
    joining a multi-process job when the environment describes one. Call it first, in a fresh
    process, before anything starts JAX's backend: scripts/train.py does; a notebook may choose
    to (train.cpu_devices then needs a fresh kernel)."""
    config = upgrade_config(config)
    if config.train.keep_freed_memory:  # before JAX's backend starts its threads
        host_memory.keep_freed_memory()
    try:  # both must precede any use of a JAX backend
        distributed.split_cpu(config.train.cpu_devices)
    except RuntimeError as error:
        raise ConfigError(f"train.cpu_devices: {error}") from None
    distributed.initialize()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

    Returns the last epoch/eval summary, with the best held-out loss and its step
    (best_val_loss, best_step) where the run has held-out text, and the seconds of its wall
    time that evaluation and saving took (eval_s, save_s). Raises DataError, CheckpointError,
    ConfigError or TrainingError with one-line messages for problems the user can fix.

    SIGINT (Ctrl-C) or SIGTERM while it trains: the step in flight finishes, is saved and logged,
    and TrainingInterrupted (a KeyboardInterrupt) is raised; a second signal raises it at once
    (lstm/interrupt.py). The previous signal handlers are back when this returns or raises.
    """
    config = upgrade_config(config)
    config, sized = fit_to_corpus(config)  # rates of -1 (configs/mytext.py): from the text
    validate_config(config)
    cpus = len(jax.devices("cpu"))
    if config.train.cpu_devices > 0 and cpus != config.train.cpu_devices:
        raise ConfigError(f"train.cpu_devices={config.train.cpu_devices}, but this process has {cpus} CPU devices: "
                          f"call lstm.train.prepare_process(config) first, in a fresh process (scripts/train.py does)")
    # Explicit before the config is recorded, so sampling and resuming elsewhere use the dtype
    # the run trained with; a resumed "auto" run keeps the one it started with.
    config.model.matmul_dtype = ModelConfig.from_config(config.model, started_matmul_dtype(workdir)).matmul_dtype
    d, t = config.data, config.train
    corpus = data.load_corpus(d)
    vocab = corpus.vocab
    if corpus.val is not None:
        try:  # before training: a long run must not fail at its first evaluation
            check_protocol(config, len(corpus.val))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    sentences = d.objective == "sentences"  # which needs the text, one character per id
    schedule = schedules.make_schedule(d.objective, len(corpus.train), d.seq_len, t.batch_size,
                                       stride=d.stride, seed=config.seed,
                                       text=vocab.decode(corpus.train) if sentences else None)
    val_sentences = None
    if sentences and corpus.val is not None:
        val_sentences = SentenceWindows.from_text(vocab.decode(corpus.val), d.seq_len, what="held-out")
    steps_per_epoch = schedule.steps_per_epoch
    total_steps = t.num_epochs * steps_per_epoch
    if t.max_steps > 0:
        total_steps = min(total_steps, t.max_steps)
    mesh = distributed.data_mesh()
    if t.batch_size % mesh.size:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {mesh.size} devices; "
                          f"use a multiple of {mesh.size}")
    graphdef, optimizer, state = init_train_state(config, len(vocab), total_steps)
    state = place_state(state, mesh)

    saver = checkpoint.Checkpointer(workdir, keep_best=config.checkpoint.keep_best, best_mode="min")
    saver.check_compatible(config.to_dict(), vocab.to_json(), upgrade=upgrade_config_dict)
    step, set_aside = 0, []
    if saver.latest_step() is not None:
        try:  # the newest readable step; damaged newer ones are moved out of the run's way
            step, flat, _, set_aside = saver.restore_for_resume(flatten_state(state))
        except BaseException:
            saver.close()
            raise
        state = unflatten_state(flat, state)
    else:
        saver.write_meta(config=config.to_dict(), vocab_json=vocab.to_json())
    logger = MetricLogger(workdir, total_steps=total_steps, resume_step=step,
                          primary=jax.process_index() == 0)
    for unreadable, folder in set_aside:
        logger.message(f"checkpoint step {unreadable.step} is unreadable ({unreadable.reason}); "
                       f"moved it to {folder}, resuming from step {step}")
    if sized:
        logger.message(sized)
    logger.message(f"{config.name}: {len(corpus.train):,} training characters, vocabulary {len(vocab)}, "
                   f"{steps_per_epoch} steps/epoch, {total_steps} steps"
                   + (f", resuming at step {step}" if step else ""))
    if sentences:
        logger.message(f"training: {schedule.sentences.describe()}")
    if val_sentences is not None:
        logger.message(f"held out: {val_sentences.describe()}")
    yardstick = {}
    if corpus.val is not None:  # the count model on this very split (lstm/ngram.py; cached)
        line, yardstick = ngram.beat_this(corpus)
        logger.message(line)

    train_steps = make_train_steps(graphdef, optimizer, config)
    eval_step = make_eval_steps(graphdef, config)
    everywhere, by_batch = distributed.replicated(mesh), distributed.batch_sharding(mesh, batch_axis=1)
    train_corpus = distributed.global_array(corpus.train, everywhere)
    val_corpus = distributed.global_array(corpus.val, everywhere) if corpus.val is not None else None
    generator = sample.Generator(nnx.merge(graphdef, state.params), vocab, config)
    sample_seed = vocab.decode(np.asarray(corpus.train[:d.seq_len]))
    chars_per_step = t.batch_size * (1 if d.objective == "last" else d.seq_len)
    pending, last_checked, summary = [], step, dict(yardstick)
    # Best-of-run: every evaluation that improves on the held-out best is saved, whatever the
    # save schedule, so the best checkpoint is on disk even in a race that evaluates between
    # its saves. A resumed run starts from the best its checkpoints hold.
    keeps_best = config.checkpoint.monitor == "val_loss" and val_corpus is not None
    if keeps_best and saver.best_step() is not None:
        summary.update(best_summary(saver.best_metric(), saver.best_step()))
    eval_s = save_s = 0.0  # the race's clock runs through both: reported, not hidden
    started = time.time()
    # Each (re)start records what it runs on: a seed fixes the numbers only for a given CPU,
    # core count and build (lstm/environment.py).
    logger.write({"event": environment.EVENT, "step": step, "environment": environment.environment(),
                  "elapsed_s": time.time() - started})

    def check_finite():
        """Pulls the pending metrics off the device (log points only) and stops on NaN/inf."""
        nonlocal pending, last_checked
        losses = np.concatenate([np.asarray(m["loss"]) for m in pending]) if pending else np.zeros(0)
        # The last step's norms and, where on, its AR/TAR terms.
        norms = {k: float(np.asarray(v)[-1]) for k, v in pending[-1].items() if k != "loss"} if pending else {}
        pending = []
        if not (np.all(np.isfinite(losses)) and all(np.isfinite(v) for v in norms.values())):
            raise TrainingError(f"loss became non-finite between steps {last_checked} and {step}; "
                                f"the last good checkpoint (step {saver.latest_step()}) is intact")
        last_checked = step
        return losses, norms

    stop = StopOnSignals()
    try:
        stop.install()
        while step < total_steps:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            count = min(t.steps_per_dispatch, steps_per_epoch - in_epoch, total_steps - step)
            batches = [schedule.batch(epoch, in_epoch + j) for j in range(count)]
            starts = np.stack([b[0] for b in batches])
            weights = np.stack([b[1] for b in batches])
            resets = np.arange(in_epoch, in_epoch + count) == 0
            state, metrics = train_steps(state, train_corpus, distributed.global_array(starts, by_batch),
                                         distributed.global_array(weights, by_batch),
                                         distributed.global_array(resets, everywhere))
            pending.append(metrics)
            step += count
            epoch_done = step % steps_per_epoch == 0
            out_of_time = False
            if t.time_budget_s > 0:  # the clock must time finished steps, not queued ones
                jax.block_until_ready(metrics)
                out_of_time = time.time() - started >= t.time_budget_s
            finished = step >= total_steps or out_of_time
            stopping = stop.signum is not None and not finished  # a finished run just ends
            eval_due = ((epoch_done and config.eval.every_epoch) or finished
                        or passed_multiple(t.eval_every_steps, step, count))
            save_due = ((epoch_done and config.checkpoint.every_epoch) or finished or stopping
                        or passed_multiple(config.checkpoint.every_steps, step, count))
            improved = False
            log_due = passed_multiple(t.log_every_steps, step, count)
            if log_due or eval_due or save_due:
                losses, norms = check_finite()
                logger.write({"event": "train", "step": step, "epoch": epoch + 1,
                              "loss": float(losses[-1]), **norms, "elapsed_s": time.time() - started})
                logger.progress(step, float(losses[-1]), chars_per_step)
            if epoch_done or ((finished or stopping) and step % steps_per_epoch):
                sums = np.asarray([state.epoch_loss_sum, state.epoch_weight_sum])
                record = {"event": "epoch", "step": step, "epoch": epoch + 1,
                          "train_loss": float(sums[0] / sums[1]), "epoch_complete": bool(epoch_done),
                          "elapsed_s": time.time() - started}
                logger.write(record)
                summary.update(record)
                logger.message(f"epoch {epoch + 1}: training loss {record['train_loss']:.4f}")
            eval_started = time.time()
            if eval_due and val_corpus is not None:
                ev = evaluate(eval_step, state.params, val_corpus, len(corpus.val), config, mesh,
                              sentences=val_sentences)
                improved = bool(keeps_best and ev["val_loss"] < summary.get("best_val_loss", math.inf))
                logger.write({"event": "eval", "step": step, "epoch": epoch + 1, **ev,
                              "eval_s": time.time() - eval_started, "best": improved})
                summary.update(ev)
                if improved:
                    summary.update(best_summary(ev["val_loss"], step))
                logger.message(f"step {step}: validation {ev['val_loss']:.4f} nats/char "
                               f"({ev['val_bpc']:.3f} bits/char, {ev['val_protocol']})" + (
                                   f"; over {d.seq_len}-character windows {ev['val_window_loss']:.4f}"
                                   if "val_window_loss" in ev else ""))
            if eval_due:
                logger.plot()
                if config.eval.sample_length > 0:
                    generator.params = state.params
                    text = generator.generate(sample_seed, config.eval.sample_length,
                                              temperature=config.eval.sample_temperature, rng=step)
                    logger.write({"event": "sample", "step": step, "seed": sample_seed, "sample": text,
                                  "temperature": config.eval.sample_temperature})
                    logger.message(f"sample at step {step}: {text[:120]!r}")
            eval_s += time.time() - eval_started
            if save_due or improved:
                save_started = time.time()
                if config.checkpoint.monitor == "val_loss":
                    metric = summary["val_loss"] if eval_due else None
                else:  # a partial epoch's loss is not comparable to whole epochs'
                    metric = summary["train_loss"] if epoch_done else None
                with stop.deferred():  # a second signal waits for the save to finish
                    saver.save(step, flatten_state(state), metric=metric, extra={"epoch": epoch + 1})
                save_s += time.time() - save_started
            if out_of_time:
                logger.message(f"time budget of {t.time_budget_s:.0f} s reached at step {step}")
                break
            if stopping:
                logger.write({"event": "stopped", "step": step, "signal": stop.signum,
                              "elapsed_s": time.time() - started})
                raise TrainingInterrupted(stop.signum, step)
        elapsed = time.time() - started
        summary.update({"step": step, "elapsed_s": elapsed, "eval_s": eval_s, "save_s": save_s})
        if "best_val_loss" in summary:
            logger.message(f"best held-out loss {summary['best_val_loss']:.4f} nats/char at step "
                           f"{summary['best_step']} (its checkpoint is the run's 'best'); of the "
                           f"{elapsed:.0f} s, evaluation took {eval_s:.1f} s and saving {save_s:.1f} s")
            # At the run's own step: the records' steps never go back (a step that did would
            # read as a restart to lstm.analysis.results.training_time).
            logger.write({"event": "best", "step": step, "best_step": summary["best_step"],
                          "val_loss": summary["best_val_loss"], "val_bpc": summary["best_val_bpc"],
                          "val_protocol": protocol(config),
                          "elapsed_s": elapsed, "eval_s": eval_s, "save_s": save_s})
    finally:
        stop.restore()
        logger.close()
        saver.close()
    return summary


def best_summary(val_loss: float, step: int) -> dict:
    return {"best_val_loss": float(val_loss), "best_val_bpc": float(val_loss) * LOG2E, "best_step": int(step)}


def passed_multiple(every: int, step: int, count: int) -> bool:
    """Whether the last `count` steps, ending at `step`, crossed a multiple of `every` (0: never).
    A dispatch of several steps can jump over the multiple itself."""
    return every > 0 and step // every > (step - count) // every
