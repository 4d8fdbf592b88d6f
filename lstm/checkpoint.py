"""Checkpoints: the best k by a monitored metric plus the latest, and the config and vocabulary.

A workdir's `checkpoints/` folder is self-describing: Orbax step folders hold the training state
and a small JSON `extra` (epoch, data position, histories), and `config.json` / `vocab.json`
beside them let the sampler rebuild the model from that folder alone.

Damage: `restore` checks a step against the checksums `save` wrote beside it (lstm/integrity.py)
before Orbax reads anything, so a damaged step is one `UnreadableCheckpoint` line; a resume
moves unreadable steps to checkpoints/unreadable/ and continues from the newest readable one.

Multi-host: every process calls `save` and `restore`; Orbax coordinates which process writes
what, so nothing here is gated on the process index except the files Orbax does not manage.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lstm import files, integrity
from lstm.orbax_logging import Quietly, quieted

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
UNREADABLE = "unreadable"  # checkpoints/unreadable/<step>: steps a resume set aside
_METRIC = "metric"
_UNSET = object()


class CheckpointError(ValueError):
    """A checkpoint problem the user can act on; str(e) is one line for the terminal."""


class UnreadableCheckpoint(CheckpointError):
    """A step whose files are damaged, truncated or missing: `step` and `reason` (one line)."""

    def __init__(self, directory, step: int, reason: str):
        self.step, self.reason = int(step), reason
        super().__init__(f"checkpoint step {step} in {directory} is unreadable: {reason}")


def _metric_of(metrics):
    return metrics[_METRIC]


class _Manager(ocp.CheckpointManager):
    """Orbax's manager reads every step's metrics when it opens, and one undecodable metrics
    file would make the whole workdir unopenable, for every step, with a bare JSON error. Here
    such a step counts as having no metric, and is remembered in `damaged_metrics` so that
    best_step() refuses to rank without it and a resume sets the step aside."""

    def __init__(self, *args, **kwargs):
        self.damaged_metrics = {}  # before Orbax's __init__, which reads the metrics
        super().__init__(*args, **kwargs)

    # Orbax's private hook, the one way into the reading of metrics at open. pyproject pins the
    # Orbax it was written against (tests/test_checkpoint.py fails on another version), and
    # tests/test_damaged_checkpoints.py fails if the hook stops being called.
    def _get_metrics(self, step):
        try:
            return super()._get_metrics(step)
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            self.damaged_metrics[step] = f"metrics/metrics is damaged ({integrity.describe_error(e)})"
            return None


class Checkpointer:
    """Saves and restores the training state of one workdir (see the module docstring)."""

    def __init__(self, workdir, *, keep_best: int = 3, best_mode: str = "min"):
        if best_mode not in ("min", "max"):
            raise CheckpointError(f"best_mode must be 'min' or 'max', not {best_mode!r}")
        if keep_best < 0:
            raise CheckpointError(f"keep_best must be >= 0, not {keep_best}")
        self.workdir = os.fspath(workdir)
        self.directory = Path(workdir).absolute() / CHECKPOINTS  # Orbax refuses relative paths
        # One manager, not a `latest/` and a `best/` pair: each step is written once, and
        # AnyPreservationPolicy keeps a step if any rule keeps it, so LatestN(1) alone guarantees
        # the newest step survives however bad its metric. BestN ranks only steps with a metric
        # (keep_checkpoints_without_metrics=False: a metric-less step goes once it is not the
        # latest and more than keep_best steps exist), so disk holds at most keep_best + 1 steps.
        keep = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(n=1),
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=_metric_of,
                    reverse=(best_mode == "min"),
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            best_fn=_metric_of,  # without it Orbax neither stores metrics nor ranks best_step()
            best_mode=best_mode,
            preservation_policy=keep,
            # Synchronous: when save() returns the step is on disk, so resume sees exactly it.
            enable_async_checkpointing=False,
            # Orbax would delete half-written steps on construction, including the save in
            # flight of a trainer when a sampler opens the same workdir; save() sweeps instead.
            cleanup_tmp_directories=False,
            create=False,  # the sampler must not litter a mistyped workdir; save() creates it
        )
        # Handlers named up front so item_metadata() works before the first restore.
        with quieted():
            self._manager = Quietly(_Manager(
                self.directory,
                options=options,
                item_handlers={
                    "state": ocp.StandardCheckpointHandler(),
                    "extra": ocp.JsonCheckpointHandler(),
                },
            ))
        self._swept = False

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best metric, or None when no step carries one. A step whose
        metrics cannot be read might be the best: refused rather than ranked without it."""
        for step, reason in sorted(self._manager.damaged_metrics.items()):
            if step in self.all_steps():
                raise UnreadableCheckpoint(self.directory, step, f"{reason}; the best step "
                                           "cannot be told without it")
        return self._manager.best_step()

    def best_metric(self) -> float | None:
        """The monitored metric of best_step(), or None when no step carries one."""
        step = self.best_step()
        return None if step is None else float(_metric_of(self._manager.metrics(step)))

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, *, metric: float | None = None, extra: dict | None = None):
        """Writes step `step`; on return it is complete. Orbax writes into a temporary folder
        and renames it into place, so a kill at any moment leaves earlier steps intact and the
        partial one unlisted."""
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(
                f"cannot save step {step} in {self.workdir}: " f"it already holds step {latest}"
            )
        # A diverged (non-finite) metric cannot be best, and NaN would scramble the ranking.
        ranked = metric is not None and math.isfinite(metric)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._swept and jax.process_index() == 0:
            # Steps a killed run left half-written are never read, but each holds a whole
            # state's worth of disk. Only the writer sweeps: none of them can be in flight.
            for leftover in ocp.utils.tmp_checkpoints(self.directory):
                shutil.rmtree(leftover.get(), ignore_errors=True)
        self._swept = True
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(dict(extra or {}))
            ),
            metrics={_METRIC: float(metric)} if ranked else None,
            force=True,
        )  # the step check above stands in for Orbax's save-interval policy
        self._manager.wait_until_finished()
        if jax.process_index() == 0:  # Orbax has committed every process's files by now
            integrity.write_checksums(self._step_dir(step))

    def restore(self, target, which: str | int = "latest") -> tuple[int, object, dict]:
        """Returns (step, state, extra) for `which` ("latest", "best" or a step number), the
        state shaped, typed and sharded like `target` (arrays or jax.ShapeDtypeStruct leaves).
        A damaged step is an UnreadableCheckpoint naming it; no other step is tried."""
        named = {"latest": self.latest_step, "best": self.best_step}
        if which in named:
            step = named[which]()
        elif isinstance(which, numbers.Integral):
            step = int(which)
        else:
            raise CheckpointError(f"which must be 'latest', 'best' or a step, not {which!r}")
        if step is None:
            raise CheckpointError(f"no {which} checkpoint to restore in {self.directory}")
        if step not in self.all_steps():
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}")
        integrity.verify_step(self._step_dir(step),
                              lambda reason: UnreadableCheckpoint(self.directory, step, reason))
        self._check_matches(step, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # Orbax and TensorStore raise many types; the user needs one line
            raise UnreadableCheckpoint(self.directory, step, integrity.describe_error(e)) from e
        return step, restored["state"], dict(restored["extra"] or {})

    def restore_for_resume(self, target) -> tuple[int, object, dict, list]:
        """restore() of the newest readable step, for a resume: returns (step, state, extra,
        set_aside), where set_aside lists (UnreadableCheckpoint, folder) for each step that
        could not be read and was moved to `checkpoints/unreadable/` (kept for inspection, out
        of the way of the steps the resumed run saves). Steps are tried newest first; anything
        but damage (another config's checkpoint) stops the search. None readable: a
        CheckpointError, and nothing moved."""
        if not self.all_steps():
            raise CheckpointError(f"no checkpoint to resume from in {self.directory}")
        failures = {}
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self.restore(target, step)
                break
            except UnreadableCheckpoint as e:
                failures[step] = e
        else:
            newest = failures[max(failures)]
            others = sorted(failures, reverse=True)[1:]
            also = f"; steps {', '.join(map(str, others))} are unreadable too" if others else ""
            raise CheckpointError(
                f"cannot resume in {self.workdir}: checkpoint step {newest.step} is unreadable "
                f"({newest.reason}){also}; move {self.directory} aside to start afresh"
            )
        # Steps whose metrics are damaged are unreadable too, and Orbax would delete them once
        # unranked; each resume sets them aside with the rest.
        for step, reason in self._manager.damaged_metrics.items():
            if step in self.all_steps() and step not in failures:
                failures[step] = UnreadableCheckpoint(self.directory, step, reason)
        set_aside = [(failures[step], self._set_aside(step)) for step in sorted(failures)]
        if set_aside:
            ocp.multihost.sync_global_processes("lstm_checkpoint_set_aside")
            self._manager.reload()
        return (*restored, set_aside)

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(step)  # Orbax's default step name format: the bare number

    def _set_aside(self, step: int) -> Path:
        """Moves step `step` to checkpoints/unreadable/<step> (<step>.2, ... if taken)."""
        folder = self.directory / UNREADABLE / str(step)
        for suffix in range(2, 1000):
            if not folder.exists():
                break
            folder = folder.with_name(f"{step}.{suffix}")
        if jax.process_index() == 0:
            folder.parent.mkdir(exist_ok=True)
            os.rename(self._step_dir(step), folder)
        return folder

    def _check_matches(self, step: int, target) -> None:
        """Compares names, shapes and dtypes with the step's metadata before any array is read,
        so a checkpoint of another config fails with a sentence, not a TensorStore traceback."""
        try:
            saved_tree = self._manager.item_metadata(step)["state"].tree
        except Exception as e:
            raise UnreadableCheckpoint(self.directory, step, integrity.describe_error(e)) from e
        saved = {leaf.name: leaf for leaf in jax.tree.leaves(saved_tree)}
        wanted = {
            ".".join(ocp.tree.str_keypath(path)): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
        }
        # The shallowest name is the recognisable one: params.embed before opt_state.0.mu.embed.
        by_depth = lambda names: sorted(names, key=lambda name: (name.count("."), name))
        here = f"checkpoint in {self.workdir}"
        why = "it was written by a different config or vocabulary"
        for names, verb, expects in (
            (set(wanted) - set(saved), "lacks", "expects"),
            (set(saved) - set(wanted), "has", "does not expect"),
        ):
            if names:
                more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
                raise CheckpointError(
                    f"{here} {verb} {by_depth(names)[0]}{more}, which the "
                    f"training state {expects}: {why}"
                )
        for name in by_depth(wanted):
            leaf, have = wanted[name], saved[name]
            if not isinstance(have, ocp.metadata.ArrayMetadata):
                continue  # strings: nothing shaped to compare
            if tuple(np.shape(leaf)) != tuple(have.shape):
                raise CheckpointError(
                    f"{here} has {name} with shape {tuple(have.shape)} where the "
                    f"config expects {tuple(np.shape(leaf))}: {why}"
                )
            # Python scalars are stored 64-bit, whatever dtype a weakly typed target guesses.
            if isinstance(have, ocp.metadata.ScalarMetadata) or not hasattr(leaf, "dtype"):
                continue
            if np.dtype(leaf.dtype) != np.dtype(have.dtype):
                raise CheckpointError(
                    f"{here} has {name} as {np.dtype(have.dtype)} where the "
                    f"config expects {np.dtype(leaf.dtype)}: {why}"
                )

    def write_meta(self, *, config, vocab_json: str) -> None:
        """Writes config.json and vocab.json, each whole or not at all."""
        json.loads(vocab_json)  # fail here, not later in the sampler
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            files.write_atomically(self.directory / CONFIG_FILE, _to_json(config))
            files.write_atomically(self.directory / VOCAB_FILE, vocab_json)
        ocp.multihost.sync_global_processes("lstm_checkpoint_write_meta")  # others may read next

    def check_compatible(self, config, vocab_json: str, keys=("model",), upgrade=None) -> None:
        """Refuses to resume over another model's checkpoints: the vocabulary and the config
        entries under `keys` (dotted paths) must equal those the workdir was started with.

        `upgrade` turns the saved config dict into today's (lstm.state.upgrade_config_dict:
        options added since take the value that reproduces what the run did), so adding an
        option does not orphan every older workdir."""
        if not any((self.directory / name).exists() for name in (CONFIG_FILE, VOCAB_FILE)):
            return  # a fresh workdir
        saved_config, saved_vocab = read_meta(self.workdir)
        refusal = (
            f"workdir {self.workdir} holds checkpoints for a different model: {{}}; "
            "use another --workdir or delete it"
        )
        if json.loads(saved_vocab) != json.loads(vocab_json):
            raise CheckpointError(
                refusal.format(_vocab_difference(json.loads(saved_vocab), json.loads(vocab_json)))
            )
        if upgrade is not None:
            saved_config = upgrade(saved_config)
        before, now = (_flatten(c) for c in (saved_config, json.loads(_to_json(config))))
        for key in keys:
            for name in sorted(n for n in before.keys() | now.keys() if _under(n, key)):
                was, is_now = before.get(name, _UNSET), now.get(name, _UNSET)
                if was != is_now:
                    raise CheckpointError(
                        refusal.format(f"{name} was {_show(was)}, now {_show(is_now)}")
                    )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_meta(workdir) -> tuple[dict, str]:
    """Returns (config dict, vocabulary JSON) as written by Checkpointer.write_meta."""
    directory = Path(workdir) / CHECKPOINTS
    texts = []
    for name in (CONFIG_FILE, VOCAB_FILE):
        try:
            texts.append((directory / name).read_text(encoding="utf-8"))
        except OSError as e:
            raise CheckpointError(
                f"cannot read {directory / name} ({e.strerror}): "
                f"is {workdir} a training workdir?"
            ) from e
    try:
        return json.loads(texts[0]), texts[1]
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not valid JSON: {e}") from e


def _to_json(config) -> str:
    config = config.to_dict() if hasattr(config, "to_dict") else config  # ml_collections
    # str() for stray non-JSON values (dtypes, paths): the record stays readable and comparable.
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def _vocab_difference(before, now) -> str:
    """Vocab.to_json() writes {"chars": [...]}; a bare list of symbols reads the same way."""
    before, now = (v.get("chars", v) if isinstance(v, dict) else v for v in (before, now))
    if not (isinstance(before, list) and isinstance(now, list)):
        return "the vocabulary differs"
    changes = [
        f"{label} {''.join(sorted(map(str, symbols)))[:20]!r}"
        for label, symbols in (("adds", set(now) - set(before)), ("drops", set(before) - set(now)))
        if symbols
    ]
    detail = "; ".join(changes) or "same symbols, in another order"
    return f"the vocabulary differs ({len(before)} symbols, now {len(now)}; {detail})"


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _under(name: str, key: str) -> bool:
    return name == key or name.startswith(key + ".")


def _show(value) -> str:
    """JSON turned the config's tuples into lists; show them as the config spells them."""
    as_tuples = lambda v: tuple(map(as_tuples, v)) if isinstance(v, list) else v
    return "unset" if value is _UNSET else repr(as_tuples(value))
