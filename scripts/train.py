"""Trains a character LSTM: `python scripts/train.py --config=configs/bigger.py`.

Flags: --config (a config file; override any field with --config.train.batch_size=32) and
--workdir (default runs/<config name>). Running the same command again resumes.
`--config_help` lists every config field with its default and the reason for it.
"""
import os
import sys

# Config files import their base as `configs.default`, so the repository root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_CONFIG = cli.define_config_flag("configs/default.py", "Training configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go (default runs/<config name>).")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from lstm import train
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("runs", config.name)
    # Ctrl-C or SIGTERM while training saves the step and exits 130 or 143 with one line
    # (lstm/interrupt.py); before training starts there is nothing new to save.
    with cli.one_line_errors(interrupted="interrupted before training started; run the same "
                                         "command again to start or resume"):
        train.prepare_process(config)  # the allocator, CPU devices, multi-process: this process's, not the library's
        summary = train.train_and_evaluate(config, workdir)
    print(cli.format_summary(summary, workdir))


if __name__ == "__main__":
    cli.run(main)
