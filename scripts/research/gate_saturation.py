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

GATES = ("i", "f", "o")  # the sigmoid gates; g is a tanh
NEAR_ZERO, NEAR_ONE = 0.1, 0.9
BATCH = 256

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
    from lstm.analysis.tables import text_table
    lines = [[r["workdir"], f"{r['step']:,}", str(r["layer"]), r["gate"],
              *(f"{100 * r[k]:.1f}%" for k in ("near_zero", "near_one", "exactly_zero", "exactly_one")),
              f"{r['stuck_at_zero']}/{r['units']}", f"{r['stuck_at_one']}/{r['units']}"] for r in report]
    title = f"gate saturation over {report[0]['windows']:,} windows of the {_SPLIT.value} text"
    print(text_table(title, ["workdir", "step", "layer", "gate", f"< {NEAR_ZERO}", f"> {NEAR_ONE}",
                             "= 0", "= 1", "units always 0", "units always 1"], lines, left={0}))


def _measure(workdir, which) -> list[dict]:
    import numpy as np
    from lstm import schedules
    rows, windows = [], None
    for checkpoint in cli.trained_checkpoints(workdir, which, _SPLIT.value):
        if windows is None:  # every checkpoint of a run reads the same windows
            seq_len = checkpoint.config.data.seq_len
            starts = schedules.tutorial_eval_starts(len(checkpoint.ids), seq_len, _WINDOWS.value)
            windows = np.asarray(checkpoint.ids)[starts[:, None] + np.arange(seq_len)]
        counts = _count(checkpoint.model, windows)
        for layer, (units, layer_counts) in enumerate(counts, start=1):
            for gate in GATES:
                fractions = {k: n / (windows.size * units) for k, n in layer_counts[gate].items()
                             if not k.startswith("stuck")}
                stuck = {k: int(n.sum()) for k, n in layer_counts[gate].items() if k.startswith("stuck")}
                rows.append({"workdir": workdir, "step": checkpoint.step, "layer": layer, "gate": gate,
                             "windows": len(windows), "units": units, **fractions, **stuck})
    return rows


def _count(model, windows) -> list[tuple[int, dict]]:
    """Per layer (units, {gate: counts}): near_zero, near_one, exactly_zero and exactly_one
    summed over windows, positions and units; stuck_at_zero and stuck_at_one as [units] bools,
    true where the unit's gate held that value at every position."""
    import jax
    import numpy as np
    from flax import nnx
    from lstm.model import trace
    graphdef, params = nnx.split(model)
    traced = jax.jit(lambda p, tokens: [{g: layer[g] for g in GATES}
                                        for layer in trace(nnx.merge(graphdef, p), tokens)])
    keys = ("near_zero", "near_one", "exactly_zero", "exactly_one")
    counts = [{g: {**dict.fromkeys(keys, 0), "stuck_at_zero": True, "stuck_at_one": True} for g in GATES}
              for _ in model.layers]
    units = [None] * len(model.layers)
    for begin in range(0, len(windows), BATCH):
        chunk = windows[begin:begin + BATCH]
        padded = np.pad(chunk, ((0, BATCH - len(chunk)), (0, 0)), mode="edge")  # one compiled shape
        for index, layer in enumerate(traced(params, padded)):
            for gate in GATES:
                values = np.asarray(layer[gate])[:len(chunk)]
                units[index] = values.shape[-1]
                for key, hits in zip(keys, (values < NEAR_ZERO, values > NEAR_ONE, values == 0, values == 1)):
                    counts[index][gate][key] += int(hits.sum())
                counts[index][gate]["stuck_at_zero"] &= (values == 0).all(axis=(0, 1))
                counts[index][gate]["stuck_at_one"] &= (values == 1).all(axis=(0, 1))
    return list(zip(units, counts))


if __name__ == "__main__":
    cli.run(main)
