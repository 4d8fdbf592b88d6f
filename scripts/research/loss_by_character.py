"""Splits a trained model's loss (the tutorial's: the character after a full window) by that
target character, and prints a table (or --json): count, mean loss and share of the total.

    python scripts/research/loss_by_character.py --workdir=runs/small --windows=20000
    python scripts/research/loss_by_character.py --workdir=runs/small_val --split=val --json

Several checkpoints (--workdir=a,b and/or --which=1128,2256,best) are scored on the same windows
and set side by side: per character, its part of each checkpoint's mean loss (its summed loss
over all windows), largest spread first, so the rows say where two means part:

    python scripts/research/loss_by_character.py --workdir=runs/seed0,runs/seed1 --which=4512 --rows=10

The text is the corpus the run's config names, cleaned as it was for training, and it must
give the vocabulary stored with the checkpoints. Windows are evenly spaced, stride 1.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdir", None, "Training workdirs holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_list("which", ["best"], "Checkpoints of each workdir: best, latest or steps.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "val"], "Which part of the corpus to score.")
_WINDOWS = flags.DEFINE_integer("windows", 20_000, "Evenly spaced windows to score (at most).")
_ROWS = flags.DEFINE_integer("rows", 0, "Print only the first N characters (0: all).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _WINDOWS.value < 1 or _ROWS.value < 0:
        cli.fail("--windows must be >= 1 and --rows >= 0")
    if not _WORKDIRS.value:
        cli.fail("--workdir needs at least one workdir")
    which = cli.checkpoint_choices(_WHICH.value)
    with cli.one_line_errors():
        scored = [score for workdir in _WORKDIRS.value for score in _score(workdir, which)]
        report = _single(scored[0]) if len(scored) == 1 else _comparison(scored)
    if _JSON.value:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    from lstm.analysis.tables import text_table
    rows = report["characters"][:_ROWS.value or None]
    if len(scored) == 1:
        lines = [[repr(r["character"]), f"{r['count']:,}", f"{r['mean_loss']:.4f}", f"{100 * r['share']:.2f}%"]
                 for r in rows]
        title = (f"{report['workdir']} ({report['which']}), {report['split']} split: "
                 f"{report['windows']:,} windows, mean loss {report['mean_loss']:.4f} nats")
        print(text_table(title, ["target", "count", "mean loss", "share"], lines, left={0}))
        return
    labels = [f"{c['workdir']}@{c['step']}" for c in report["checkpoints"]]
    lines = [[repr(r["character"]), f"{r['count']:,}", *(f"{p:.4f}" for p in r["part"])] for r in rows]
    lines.append(["all", f"{report['windows']:,}", *(f"{c['mean_loss']:.4f}" for c in report["checkpoints"])])
    title = (f"each target's part of the mean loss (nats), {report['split']} split, "
             f"{report['windows']:,} windows; largest spread first")
    print(text_table(title, ["target", "count", *labels], lines, left={0}))


def _score(workdir, which) -> list[dict]:
    """Per checkpoint of `workdir` in `which`: its choice, step, vocab, losses and targets."""
    from lstm.analysis import char_loss
    scores = []
    for checkpoint in cli.trained_checkpoints(workdir, which, _SPLIT.value):
        losses, targets = char_loss.window_losses(checkpoint.model, checkpoint.ids,
                                                  checkpoint.config.data.seq_len, _WINDOWS.value)
        scores.append({"workdir": workdir, "which": checkpoint.choice, "step": checkpoint.step,
                       "vocab": checkpoint.vocab, "losses": losses, "targets": targets})
    return scores


def _single(score) -> dict:
    from lstm.analysis import char_loss
    rows = char_loss.by_character(score["losses"], score["targets"], score["vocab"])
    return {"workdir": score["workdir"], "which": score["which"], "step": score["step"],
            "split": _SPLIT.value, "windows": int(len(score["losses"])),
            "mean_loss": float(score["losses"].mean()), "characters": [row._asdict() for row in rows]}


def _comparison(scored) -> dict:
    from lstm import cleaning
    from lstm.analysis import char_loss
    first = scored[0]
    for score in scored[1:]:
        if score["vocab"] != first["vocab"]:
            raise cleaning.DataError(f"{score['workdir']} has another vocabulary than {first['workdir']}: "
                                     "compare runs of one text")
    rows = char_loss.compare([(score["losses"], score["targets"]) for score in scored], first["vocab"])
    return {"split": _SPLIT.value, "windows": int(len(first["losses"])),
            "checkpoints": [{"workdir": score["workdir"], "step": score["step"],
                             "mean_loss": float(score["losses"].mean())} for score in scored],
            "characters": [row._asdict() for row in rows]}


if __name__ == "__main__":
    cli.run(main)
