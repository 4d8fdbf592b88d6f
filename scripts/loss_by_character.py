"""Splits a trained model's loss (the tutorial's: the character after a full window) by that
target character, and prints a table (or --json): count, mean loss and share of the total.

    python scripts/loss_by_character.py --workdir=runs/small --windows=20000
    python scripts/loss_by_character.py --workdir=runs/small_val --split=val --json

The text is the corpus the run's config names, cleaned as it was for training, and it must
give the vocabulary stored with the checkpoints. Windows are evenly spaced, stride 1.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to evaluate.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "val"], "Which part of the corpus to score.")
_WINDOWS = flags.DEFINE_integer("windows", 20_000, "Evenly spaced windows to score (at most).")
_ROWS = flags.DEFINE_integer("rows", 0, "Print only the N characters with the largest share (0: all).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _WINDOWS.value < 1 or _ROWS.value < 0:
        cli.fail("--windows must be >= 1 and --rows >= 0")
    with cli.one_line_errors():
        report = _evaluate()
    if _JSON.value:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    from lstm.bench import text_table
    rows = report["characters"][:_ROWS.value or None]
    lines = [[repr(r["character"]), f"{r['count']:,}", f"{r['mean_loss']:.4f}", f"{100 * r['share']:.2f}%"]
             for r in rows]
    title = (f"{report['workdir']} ({report['which']}), {report['split']} split: "
             f"{report['windows']:,} windows, mean loss {report['mean_loss']:.4f} nats")
    print(text_table(title, ["target", "count", "mean loss", "share"], lines, left={0}))


def _evaluate() -> dict:
    from lstm import char_loss, train
    model, vocab, config = train.load_model(_WORKDIR.value, _WHICH.value)
    ids = cli.run_text_ids(config, vocab, _SPLIT.value)
    losses, targets = char_loss.window_losses(model, ids, config.data.seq_len, _WINDOWS.value)
    rows = char_loss.by_character(losses, targets, vocab)
    return {"workdir": _WORKDIR.value, "which": _WHICH.value, "split": _SPLIT.value,
            "windows": int(len(losses)), "mean_loss": float(losses.mean()),
            "characters": [row._asdict() for row in rows]}


if __name__ == "__main__":
    cli.run(main)
