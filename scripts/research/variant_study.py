"""The cell-variant study of docs/variants.md: every variant on Tiny Shakespeare with the
configs/shakespeare.py recipe, the same number of steps for each, several seeds.

    python scripts/research/variant_study.py                     # trains what is missing, reports
    python scripts/research/variant_study.py --cells=lstm,nfg --seeds=0 --steps=200
    python scripts/research/variant_study.py --report_only --out=docs/runs/variants/study.json
    python scripts/research/variant_study.py --cells=fgr --out=docs/runs/variants/study.json  # adds a row
    python scripts/research/variant_study.py --cells=lstm --matmul_dtype=bfloat16 --out=runs/bf16.json

Each run is `scripts/train.py --config=configs/shakespeare.py --config.model.cell=CELL
--config.seed=SEED --config.train.time_budget_s=0 --config.train.max_steps=STEPS
--config.model.matmul_dtype=DTYPE --workdir=ROOT/CELL_sSEED[_bfloat16]`, one after another
(each takes both cores; running two at once would only halve each). A workdir that already
holds its final evaluation is not rerun, so a killed study resumes where it stopped. A fixed
step count, not the recipe's 120 s, makes the losses independent of the machine's speed and
load; step time is reported beside them.

The report per variant: the final held-out loss (nats/char and bits/char), mean ± sample sd
over seeds; the median step time over its runs (compilation excluded; runs share the machine
with nothing else only if the study is run alone); and the parameter count, stored and used
(a removed gate keeps its unused blocks of the fused matrices, lstm/cells/lstm.py).

runs/ does not outlive a session, so a study can grow across sessions: with --out naming an
existing report of the same recipe and step count, the variants it holds that this call does
not train or find are kept, and the table and figure show them all.
"""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lstm import cli  # noqa: E402

# np is lstm's equations (Greff et al.'s "no peepholes"), so it would repeat lstm's runs.
STUDY_CELLS = "lstm,peephole,nig,nfg,nog,niaf,noaf,cifg,fgr,layernorm"
_CELLS = flags.DEFINE_list("cells", STUDY_CELLS, "Variants to train and report (lstm/cells/).")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "Seeds per variant.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Training steps per run (the recipe makes ~1,000 in its 120 s).")
_MATMUL_DTYPE = flags.DEFINE_enum("matmul_dtype", "float32", ["float32", "bfloat16"],
                                  "The runs' matmul operands (config model.matmul_dtype).")
_ROOT = flags.DEFINE_string("root", "runs/variants", "Folder of the study's workdirs.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Report the workdirs there are; train nothing.")
_OUT = flags.DEFINE_string("out", None, "Also write the report as JSON here.")
_FIGURE = flags.DEFINE_string("figure", None, "Also draw the held-out losses per variant into this PNG.")


def workdir(cell: str, seed: str) -> Path:
    dtype = "" if _MATMUL_DTYPE.value == "float32" else f"_{_MATMUL_DTYPE.value}"
    return Path(_ROOT.value) / f"{cell}_s{seed}{dtype}"


def final_eval(records, steps: int) -> dict | None:
    evals = [r for r in records if r.get("event") == "eval" and r.get("step") == steps]
    return evals[-1] if evals else None


def train(cell: str, seed: str, steps: int) -> None:
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config=configs/shakespeare.py",
               f"--config.model.cell={cell}", f"--config.seed={seed}", "--config.train.time_budget_s=0",
               f"--config.model.matmul_dtype={_MATMUL_DTYPE.value}",
               f"--config.train.max_steps={steps}", f"--workdir={workdir(cell, seed)}"]
    print(" ".join(command[1:]), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode:
        cli.fail(f"the run {workdir(cell, seed)} failed (its error is above); rerun to resume it")


def unused_gates(cell: str) -> list[str]:
    """The gates whose block of the fused pre-activation reaches neither h nor c: the step's
    gradient with respect to that block is exactly zero for a random input."""
    import jax
    import jax.numpy as jnp

    from lstm.cells import get_cell
    from lstm.cells.contract import per_group

    cell_def, hidden = get_cell(cell), 8
    keys = jax.random.split(jax.random.key(0), 4)
    width = len(cell_def.gates) * hidden
    params = {"W_h": jax.random.normal(keys[0], (hidden, width)), "b": jax.random.normal(keys[0], (width,))}
    params |= {name: jax.random.normal(keys[0], extra.shape(hidden)) for name, extra in cell_def.extras.items()}
    p = per_group(cell_def.step_params(params), cell_def.layout(), hidden)
    x_proj, h_proj = (jax.random.normal(k, (3, width)) for k in keys[1:3])
    carry = cell_def.initial_carry(3, hidden)
    carry = carry._replace(h=jax.random.normal(keys[3], (3, hidden)))._replace(
        **({"c": jax.random.normal(keys[3], (3, hidden))} if "c" in carry._fields else {}))
    new, pullback = jax.vjp(lambda x: cell_def.step(p, carry, x, h_proj)[0], x_proj)
    (grad,) = pullback(jax.tree.map(jnp.ones_like, new))
    blocks = dict(zip(cell_def.gates, cell_def.split(grad)))
    return [gate for gate in cell_def.gates if not bool(jnp.any(blocks[gate] != 0))]


def parameter_counts(path: Path, cell: str) -> tuple[int, int]:
    """(stored, used) parameters of the run's model."""
    import jax
    from flax import nnx

    from lstm import state as run_state

    config, vocab = run_state.read_run(path)
    model = run_state.build_model(config, len(vocab))
    stored = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    unused = len(unused_gates(cell))  # each unused gate leaves a column block of W_x, W_h and b
    used = stored - sum(unused * (layer.input_size + layer.hidden_size + 1) * layer.hidden_size
                        for layer in model.layers)
    return stored, used


def summarise(cell: str, seeds, steps: int) -> dict:
    from lstm.analysis import results

    runs = []
    for seed in seeds:
        path = workdir(cell, seed)
        try:
            records, _ = results.load_run(path)
        except results.ResultsError:
            continue
        final = final_eval(records, steps)
        if final is not None:
            runs.append({"seed": int(seed), "val_loss": final["val_loss"], "step_s": results.step_time(records),
                         "workdir": str(path)})
    if not runs:
        return {"cell": cell, "runs": []}
    losses = [r["val_loss"] for r in runs]
    stored, used = parameter_counts(Path(runs[0]["workdir"]), cell)
    sd = statistics.stdev(losses) if len(losses) > 1 else float("nan")
    step_times = [r["step_s"] for r in runs if r["step_s"]]  # None: too few steps logged to time
    return {"cell": cell, "runs": runs, "val_loss_mean": statistics.fmean(losses), "val_loss_sd": sd,
            "val_bpc_mean": statistics.fmean(losses) / math.log(2), "val_bpc_sd": sd / math.log(2),
            "step_s": statistics.median(step_times) if step_times else None,
            "params_stored": stored, "params_used": used, "unused_gates": unused_gates(cell)}


def markdown(report: dict) -> str:
    from lstm.analysis.tables import markdown_table

    rows = []
    for entry in report["variants"]:
        if not entry["runs"]:
            rows.append([entry["cell"], "not run", "", "", "", "", ""])
            continue
        rows.append([f"`{entry['cell']}`", str(len(entry["runs"])),
                     f"{entry['val_loss_mean']:.4f} ± {entry['val_loss_sd']:.4f}",
                     f"{entry['val_bpc_mean']:.3f} ± {entry['val_bpc_sd']:.3f}",
                     " / ".join(f"{r['val_loss']:.4f}" for r in entry["runs"]),
                     f"{entry['step_s']:.3f}" if entry["step_s"] else "—",
                     f"{entry['params_used']:,} ({entry['params_stored']:,})"])
    header = ["cell", "seeds", "held-out nats/char", "bits/char", "per seed", "s/step", "params used (stored)"]
    return markdown_table(header, rows)


def figure(report: dict, path: str) -> None:
    from matplotlib.figure import Figure

    from lstm.curves import save_png

    entries = [e for e in report["variants"] if e["runs"]]
    fig = Figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for x, entry in enumerate(entries):
        losses = [r["val_loss"] for r in entry["runs"]]
        ax.plot([x] * len(losses), losses, "o", color="C0", alpha=0.5, markersize=4)
        ax.errorbar(x + 0.15, entry["val_loss_mean"], yerr=entry["val_loss_sd"], fmt="s", color="C1",
                    markersize=5, capsize=3)
    ax.set_xticks(range(len(entries)), [e["cell"] for e in entries])
    ax.set_ylabel("held-out loss (nats/char)")
    ax.set_title(f"Tiny Shakespeare, {report['steps']} steps: seeds (dots), mean ± sd (squares)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    save_png(fig, path)


def merged(report: dict, path: str) -> dict:
    """report, plus the variants the earlier report at `path` has and this one has no runs for."""
    try:
        with open(path) as file:
            earlier = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        cli.fail(f"cannot read the earlier report {path}: {error}")
    recipe = lambda r: (r.get("steps"), r.get("recipe"), r.get("matmul_dtype", "float32"))
    if recipe(earlier) != recipe(report):
        cli.fail(f"{path} reports {earlier.get('steps')} steps of {earlier.get('recipe')} "
                 f"({earlier.get('matmul_dtype', 'float32')}), this study {report['steps']} of "
                 f"{report['recipe']} ({report['matmul_dtype']}): write it to another --out")
    entries = {entry["cell"]: entry for entry in report["variants"]}  # "not run" rows included
    for entry in earlier["variants"]:
        if not entries.get(entry["cell"], {}).get("runs"):
            entries[entry["cell"]] = entry
    order = STUDY_CELLS.split(",")
    ranked = sorted(entries, key=lambda cell: order.index(cell) if cell in order else len(order))
    return {**report, "variants": [entries[cell] for cell in ranked]}


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _STEPS.value <= 0:
        cli.fail(f"--steps must be positive, not {_STEPS.value}")
    from lstm.analysis import results
    from lstm.cells import CELLS

    unknown = [c for c in _CELLS.value if c not in CELLS]
    if unknown:
        cli.fail(f"unknown cells {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    if not _REPORT_ONLY.value:
        for seed in _SEEDS.value:  # seed-major, so a study cut short still compares every variant
            for cell in _CELLS.value:
                path = workdir(cell, seed)
                try:
                    done = final_eval(results.load_run(path)[0], _STEPS.value) is not None
                except results.ResultsError:
                    done = False
                if not done:
                    train(cell, seed, _STEPS.value)
    report = {"steps": _STEPS.value, "recipe": "configs/shakespeare.py", "matmul_dtype": _MATMUL_DTYPE.value,
              "variants": [summarise(cell, _SEEDS.value, _STEPS.value) for cell in _CELLS.value]}
    if _OUT.value and os.path.exists(_OUT.value):
        report = merged(report, _OUT.value)
    print(markdown(report))
    if _OUT.value:
        from lstm.files import atomic_writer
        os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
        with atomic_writer(_OUT.value, "w") as file:
            json.dump(report, file, indent=1)
    if _FIGURE.value:
        figure(report, _FIGURE.value)


if __name__ == "__main__":
    cli.run(main)
