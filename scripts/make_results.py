"""Regenerates docs/results.md's numbers and figures from training workdirs (never by hand):

    python scripts/make_results.py --runs=runs/small,runs/small_val,runs/bigger \\
        --plot=small:small+small_val --plot=bigger:bigger --samples=1

prints a markdown table with one row per --runs workdir (then, with --samples=N, each run's
latest N logged samples) and writes one PNG per --plot into --out_dir (plot progress on stderr).

--plot=NAME:RUN+RUN[:TITLE] draws those runs' loss curves into OUT_DIR/NAME.png; a RUN is the
name (last path part) of a --runs workdir, or a workdir path. Runs of the tutorial's configs
(small, bigger) get the tutorial's end point as a star unless --notutorial_points;
--reference=NAME:EPOCH:LOSS:LABEL adds a star of your own to plot NAME. --json prints one JSON
object (summaries, plots, samples, epoch losses) instead of markdown. --time_plots=NAME,… draws those plots
against seconds of training rather than epochs (fixed-budget comparisons).
--epoch_table=RUN+RUN… prints those runs' epoch-mean training losses side by side, one row per
epoch, with each later run's difference from the first (paired comparisons, e.g. one change
under the same seed). --val_table=RUN prints each evaluation of that run (a held-out one) as a
row: its epoch, the epoch-mean training loss and the validation loss in nats and bits/char.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_RUNS = flags.DEFINE_list("runs", [], "Workdirs to summarise, one table row each, in this order.")
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/images", "Where the --plot PNGs go.")
_PLOT = flags.DEFINE_multi_string("plot", [], "NAME:RUN+RUN[:TITLE]: loss curves of those runs in OUT_DIR/NAME.png.")
_REFERENCE = flags.DEFINE_multi_string("reference", [], "NAME:EPOCH:LOSS:LABEL: a reference point (star) on plot NAME.")
_TUTORIAL = flags.DEFINE_bool("tutorial_points", True, "Star the tutorial's end point on plots of small/bigger runs.")
_COLUMNS = flags.DEFINE_list("columns", None, "Table columns (default: the library's DEFAULT_COLUMNS).")
_SAMPLES = flags.DEFINE_integer("samples", 0, "Print each run's latest N logged samples after the table.")
_TIME_PLOTS = flags.DEFINE_list(
    "time_plots", [], "Names of --plot figures drawn against seconds of training instead of epochs.")
_EPOCH_TABLE = flags.DEFINE_string(
    "epoch_table", None, "RUN+RUN…: epoch-mean training losses side by side, with differences from the first.")
_VAL_TABLE = flags.DEFINE_string(
    "val_table", None, "RUN: each evaluation's validation loss beside the epoch's training loss.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of markdown.")

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_plots(specs, runs: dict) -> dict:
    """{name: (workdirs, labels, title)} from the --plot specs; runs maps label → workdir."""
    plots = {}
    for spec in specs:
        name, _, rest = spec.partition(":")
        members, _, title = rest.partition(":")
        if not _NAME.fullmatch(name) or not members:
            cli.fail(f"--plot={spec}: expected NAME:RUN+RUN[:TITLE] with NAME of letters, digits, _ . -")
        if name in plots:
            cli.fail(f"--plot name {name!r} is given twice")
        workdirs, labels = resolve_runs(f"--plot={spec}", members, runs)
        plots[name] = (workdirs, labels, title or f"{name}: {', '.join(labels)}")
    return plots


def resolve_runs(spec: str, members: str, runs: dict) -> tuple[list, list]:
    """(workdirs, labels) for RUN+RUN…, each a --runs name or a workdir path."""
    names = members.split("+")
    for name in names:
        if name not in runs and not os.path.isdir(name):
            cli.fail(f"{spec}: {name!r} is neither a --runs name ({', '.join(runs)}) nor a workdir")
    return [runs.get(name, name) for name in names], [os.path.basename(os.path.normpath(n)) for n in names]


def parse_references(specs, plots: dict) -> dict:
    references = {}
    for spec in specs:
        parts = spec.split(":", 3)
        try:
            name, epoch, loss, label = parts[0], float(parts[1]), float(parts[2]), parts[3]
        except (IndexError, ValueError):
            cli.fail(f"--reference={spec}: expected NAME:EPOCH:LOSS:LABEL, e.g. small:19:1.9435:tutorial")
        if name not in plots:
            cli.fail(f"--reference={spec} names plot {name!r}, which no --plot defines")
        references.setdefault(name, []).append((epoch, loss, label))
    return references


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _RUNS.value:
        cli.fail("--runs is empty: name at least one workdir, e.g. --runs=runs/small")
    if _SAMPLES.value < 0:
        cli.fail("--samples must be >= 0")
    from lstm.analysis import results
    labels = [os.path.basename(os.path.normpath(w)) for w in _RUNS.value]
    if len(set(labels)) < len(labels):
        labels = list(_RUNS.value)  # two runs/*/small: only the paths tell them apart
    runs = dict(zip(labels, _RUNS.value))
    plots = parse_plots(_PLOT.value, runs)
    references = parse_references(_REFERENCE.value, plots)
    epoch_runs = (resolve_runs(f"--epoch_table={_EPOCH_TABLE.value}", _EPOCH_TABLE.value, runs)
                  if _EPOCH_TABLE.value else None)
    val_run = (resolve_runs(f"--val_table={_VAL_TABLE.value}", _VAL_TABLE.value, runs)[0][0]
               if _VAL_TABLE.value else None)
    unknown = sorted(set(_TIME_PLOTS.value) - set(plots))
    if unknown:
        cli.fail(f"--time_plots names {unknown[0]!r}, which no --plot defines")
    with cli.one_line_errors(results.ResultsError):
        summaries = [results.summarize_run(w, label) for label, w in runs.items()]
        table = results.markdown_table(summaries, _COLUMNS.value or results.DEFAULT_COLUMNS)
        written = {}
        for name, (workdirs, plot_labels, title) in plots.items():
            stars = list(references.get(name, []))
            if _TUTORIAL.value:
                configs = {results.summarize_run(w)["config"] for w in workdirs}
                stars += [point for config, point in results.TUTORIAL_POINTS.items() if config in configs]
            path = results.plot_curves(workdirs, os.path.join(_OUT_DIR.value, f"{name}.png"), title,
                                       reference=stars, labels=plot_labels,
                                       x_axis="time" if name in _TIME_PLOTS.value else "epoch")
            written[name] = str(path)
            print(f"wrote {path}", file=sys.stderr)
        samples = {label: results.collect_samples(w, _SAMPLES.value)
                   for label, w in runs.items()} if _SAMPLES.value else {}
        # A list, not the label dict: a run named twice (a+a) must still fill both columns.
        losses = [results.epoch_losses(w) for w in epoch_runs[0]] if epoch_runs else []
        by_epoch = dict(zip(epoch_runs[1], losses)) if epoch_runs else {}
        epoch_table = results.epoch_table(*epoch_runs, losses=losses) if epoch_runs else ""
        val_table = results.validation_table(val_run) if val_run else ""
    if _JSON.value:
        print(json.dumps({"runs": summaries, "plots": written, "samples": samples,
                          "epoch_losses": by_epoch}, indent=1))
        return
    print(table, end="")
    if epoch_table:
        print("\n" + epoch_table, end="")
    if val_table:
        print("\n" + val_table, end="")
    for label, logged in samples.items():
        print("\n" + (results.samples_markdown(label, logged) or f"**{label}**: no samples logged\n"), end="")


if __name__ == "__main__":
    cli.run(main)
