"""What the thin scripts share: one-line errors instead of tracebacks, absl start-up (with
--help and --config_help), and a trained run's text read back for analysis."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator, NamedTuple

from absl import flags, logging

# The flags define_config_flag makes belong to the script that calls it: they are the script's
# own in its --help, next to the ones it defines itself.
flags.disclaim_key_flags()
HELP_ARGS = ("-h", "--help", "-help")


def fail(message: str):
    """Prints `error: message` on one line and exits 1."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)


@contextlib.contextmanager
def one_line_errors(*also: type[BaseException], interrupted: str = "interrupted"):
    """Turns the library's user-facing errors into one line on stderr and exit status 1, and
    Ctrl-C into one line and the shell's status for it: the interrupt's own line and
    `exit_code` where it has them (lstm.interrupt.TrainingInterrupted: 130 or 143), else the
    line `interrupted` and 130.

    Only the library's own error types (DataError, CheckpointError, ConfigError, TrainingError,
    ResultsError), OS errors and the script's own in `also` are caught; a genuine bug still
    shows its traceback."""
    try:
        yield
    except KeyboardInterrupt as stop:
        # After a progress line drawn with \r, the message needs a line of its own.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + (str(stop) or interrupted) + "\n")
        sys.exit(getattr(stop, "exit_code", 130))
    except Exception as error:
        if not isinstance(error, (OSError, *also)) and not _is_library_error(error):
            raise
        fail(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


def _is_library_error(error: Exception) -> bool:
    """The library's error types are the ValueError/RuntimeError subclasses defined in lstm/,
    all raised with one-line messages for the user. Told apart by where their class lives, so
    that a script which never imported JAX does not import it just to name them."""
    return isinstance(error, (ValueError, RuntimeError)) and type(error).__module__.startswith("lstm.")


# What config_flags raises for `--config.model.widht=3`, an unparsable value or a config file
# that does not load.
_CONFIG_ERRORS = (AttributeError, KeyError, ValueError, TypeError, OSError, SyntaxError)


def _fail_config(error: Exception):
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    overrides = [a.split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--config.")]
    fail(f"bad config override {' '.join(overrides)}: {detail}" if overrides else f"bad flag: {detail}")


def define_config_flag(default: str, help_text: str):
    """The script's --config (a config file; any field overridable as --config.train.batch_size=32)
    and --config_help, which `run` answers by listing the fields; returns --config's holder."""
    from ml_collections import config_flags
    try:
        holder = config_flags.DEFINE_config_file(
            "config", default, f"{help_text} Change any field with --config.FIELD=VALUE, e.g. "
            "--config.train.batch_size=32; --config_help lists them.")
    except _CONFIG_ERRORS as error:  # without --config=, the default loads, overrides and all, here
        _fail_config(error)
    flags.DEFINE_bool("config_help", False, "Print every field of the --config file with its value "
                      "and the reason for it, and exit.")
    return holder


def run(main) -> None:
    """Answers --help/-h (the script's docstring and own flags) before anything is imported,
    parses flags once, with flag errors (unknown flags, typo'd config keys, bad values) on one
    line instead of absl's usage dump or a traceback, answers --config_help, then calls
    `main(argv)`."""
    arguments = sys.argv[1:sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if any(arg in HELP_ARGS for arg in arguments):
        from lstm import usage
        # absl files the flags of the script being run under its path, not "__main__".
        name = sys.argv[0] if main.__module__ == "__main__" else main.__module__
        sys.stdout.write(usage.script_help(main.__globals__.get("__doc__"),
                                           flags.FLAGS.get_key_flags_for_module(name)))
        sys.exit(0)
    for arg in sys.argv[1:]:
        # config_flags reports a missing config file only as "failed loading config_config".
        if arg.startswith("--config=") and not os.path.isfile(arg.split("=", 1)[1]):
            fail(f"config file {arg.split('=', 1)[1]} not found")
    try:
        argv = flags.FLAGS(sys.argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
    except _CONFIG_ERRORS as error:
        _fail_config(error)
    if "config_help" in flags.FLAGS:  # the script took define_config_flag's --config
        from ml_collections import config_flags
        config_file = config_flags.get_config_filename(flags.FLAGS["config"])
        if not os.path.isfile(config_file):  # the default, named relative to the repository root
            fail(f"config file {config_file} not found from {os.getcwd()}; run from the repository "
                 "root or pass --config=PATH")
        if flags.FLAGS.config_help:
            from lstm import usage
            sys.stdout.write(usage.config_help(flags.FLAGS["config"].value, config_file))
            sys.exit(0)
    logging.use_absl_handler()
    try:
        main(argv)
    except KeyboardInterrupt:  # Ctrl-C outside a script's own handling (e.g. while JAX imports)
        sys.stderr.write("interrupted\n")
        sys.exit(130)


def load_config_file(path, overrides: dict | None = None):
    """The `get_config()` of the config file at `path`, with dotted overrides
    ({"train.batch_size": 4}) applied. Config files import their base as `configs.default`, so
    the folder above `configs/` must be importable, as the scripts arrange."""
    import importlib.util
    path = os.fspath(path)
    spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for dotted, value in (overrides or {}).items():
        node, *path_parts, leaf = [config] + dotted.split(".")
        for part in path_parts:
            node = node[part]
        node[leaf] = value
    return config


def checkpoint_choices(values) -> list:
    """A --which flag's values as load_state takes them: "latest", "best" or step numbers
    (ints), in the order given; anything else, or no value at all, exits with one line."""
    choices = []
    for value in values:
        value = value.strip()
        if value not in ("latest", "best") and not value.isdigit():
            fail(f"--which takes latest, best or step numbers, not {value!r}")
        choices.append(value if value in ("latest", "best") else int(value))
    if not choices:
        fail("--which needs at least one checkpoint")
    return choices


def format_summary(summary: dict, workdir) -> str:
    keys = ("step", "epoch", "train_loss", "val_loss", "val_bpc", "val_protocol", "val_last_char_loss",
            "val_window_loss", "best_val_loss", "best_val_bpc", "best_step", "count_model_loss", "elapsed_s",
            "eval_s", "save_s")
    parts = [f"{k}={summary[k]:.4f}" if isinstance(summary.get(k), float) else f"{k}={summary[k]}"
             for k in keys if k in summary]
    return f"done ({workdir}): " + " ".join(parts)


class TrainedCheckpoint(NamedTuple):
    choice: Any        # as given to --which: "latest", "best" or a step number
    step: int
    model: Any         # the nnx model with the checkpoint's parameters
    vocab: Any
    config: Any
    ids: Any           # the run's `split` text, as token ids


def trained_checkpoints(workdir, which, split: str) -> Iterator[TrainedCheckpoint]:
    """Each checkpoint of `workdir` named in `which`, in order, with the run's `split` text.

    The text is read and checked against the vocabulary once, on the first checkpoint: every
    checkpoint of one run was trained on the same text."""
    from flax import nnx

    from lstm import state as train_state
    ids = None
    for choice in which:
        graphdef, state, vocab, config, step = train_state.load_state(workdir, choice)
        if ids is None:
            ids = run_text_ids(config, vocab, split)
        yield TrainedCheckpoint(choice, step, nnx.merge(graphdef, state.params), vocab, config, ids)


def run_text_ids(config, vocab, split: str):
    """The ids of a trained run's text, `split` "train" or "val": the corpus its config names,
    cleaned as for training and never downloaded. A DataError if the text no longer gives the
    vocabulary stored with the checkpoints, or if --split=val finds nothing held out."""
    import ml_collections

    from lstm import cleaning, data
    corpus = data.load_corpus(ml_collections.ConfigDict({**config.data.to_dict(), "download": False}))
    if corpus.vocab != vocab:
        raise cleaning.DataError(f"{config.data.path} no longer gives the vocabulary the checkpoint "
                                 "was trained with; the text changed")
    ids = corpus.train if split == "train" else corpus.val
    if ids is None:
        raise cleaning.DataError("--split=val: this run held nothing out (data.val_fraction=0)")
    return ids
