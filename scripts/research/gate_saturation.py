"""How often a trained model's sigmoid gates (i, f, o) sit at their ends: per checkpoint, layer
and gate, the fraction of values near 0 (< 0.1) and near 1 (> 0.9), Karpathy et al.'s (2015)
saturation, and the fraction exactly 0 or exactly 1. Under Keras's hard sigmoid
(model.gate_activation=hard_sigmoid) a gate at exactly 0 or 1 is clipped: no gradient flows
through it, so those are the values that stop learning; a unit whose gate is stuck at 0 or 1 at every
traced position is counted apart (a unit with o stuck at 0 outputs nothing).

    python scripts/research/gate_saturation.py --workdir=runs/small_hard_sigmoid --which=1128,2256,best
    python scripts/research/gate_saturation.py --workdir=runs/a,runs/b --which=latest --json

Each checkpoint runs the model's own forward pass (no dropout) over --windows evenly spaced
windows of the run's text, each from the zero state as a training step starts it; every
position of every window counts. The text is the corpus the run's config names, cleaned as it
was for training, and it must give the vocabulary stored with the checkpoints.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdir", None, "Training workdirs holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_list("which", ["best"], "Checkpoints of each workdir: latest, best or steps.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "val"], "Which part of the corpus to trace.")
_WINDOWS = flags.DEFINE_integer("windows", 500, "Evenly spaced windows to trace (at most).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _WINDOWS.value < 1:
        cli.fail("--windows must be >= 1")
    which = cli.checkpoint_choices(_WHICH.value)
    with cli.one_line_errors():
        report = [row for workdir in _WORKDIRS.value for row in _measure(workdir, which)]
    if _JSON.value:
        print(json.dumps(report, indent=1))
        return
    from lstm.analysis.saturation import SATURATION_HIGH, SATURATION_LOW
    from lstm.analysis.tables import text_table
    lines = [[r["workdir"], f"{r['step']:,}", str(r["layer"]), r["gate"],
              *(f"{100 * r[k]:.1f}%" for k in ("near_zero", "near_one", "exactly_zero", "exactly_one")),
              f"{r['stuck_at_zero']}/{r['units']}", f"{r['stuck_at_one']}/{r['units']}"] for r in report]
    title = f"gate saturation over {report[0]['windows']:,} windows of the {_SPLIT.value} text"
    print(text_table(title, ["workdir", "step", "layer", "gate", f"< {SATURATION_LOW}", f"> {SATURATION_HIGH}",
                             "= 0", "= 1", "units always 0", "units always 1"], lines, left={0}))


def _measure(workdir, which) -> list[dict]:
    from lstm.analysis.saturation import saturation_counts
    return [{"workdir": workdir, "step": checkpoint.step, **row}
            for checkpoint in cli.trained_checkpoints(workdir, which, _SPLIT.value)
            for row in saturation_counts(checkpoint.model, checkpoint.ids,
                                         checkpoint.config.data.seq_len, _WINDOWS.value)]


if __name__ == "__main__":
    cli.run(main)
