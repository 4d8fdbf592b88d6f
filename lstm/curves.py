"""Loss curves from metrics.jsonl records: the one drawing behind training's loss.png
(lstm.logger), the notebook's figure (lstm.analysis.viz.loss_curves) and the comparisons in
docs/results.md (lstm.analysis.results.plot_curves).

Figures are `matplotlib.figure.Figure` objects, never pyplot's: pyplot's backend is global, and
switching it to Agg to write a PNG would break the inline display of a notebook that trains.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from lstm import files

LN2 = math.log(2)
# Each series in the run's colour, told apart by style. A partial epoch's mean is over other
# batches than a whole epoch's, so it is drawn hollow: comparable to no other point.
_STYLES = {
    "train (logged)": dict(lw=0.8, alpha=0.6),
    "train (epoch mean)": dict(ls="none", marker="o", ms=4),
    "train (partial epoch mean)": dict(ls="none", marker="o", mfc="none", ms=4),
    "validation": dict(ls="--", marker="s", ms=3.5, lw=1),
}
BRIEF_LEGEND_TITLE = "lines: logged training loss; dots: epoch means; squares: validation"


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def whole_epoch(record) -> bool:
    """Whether an epoch record's mean covers the whole epoch; records written before the
    field existed always did."""
    return record.get("epoch_complete", True)


def _step(record):
    return record["step"]


def loss_series(records, x: Callable[[Mapping], float] = _step) -> dict[str, tuple[list, list]]:
    """{label: (x positions, losses in nats/char)} for the logged training loss, the mean
    training loss of whole epochs, that of partial epochs (a run stopped or resumed mid-epoch)
    and the validation loss; non-finite losses and empty series are left out."""
    picks = {"train (logged)": ("train", "loss", lambda r: True),
             "train (epoch mean)": ("epoch", "train_loss", whole_epoch),
             "train (partial epoch mean)": ("epoch", "train_loss", lambda r: not whole_epoch(r)),
             "validation": ("eval", "val_loss", lambda r: True)}
    series = {}
    for label, (event, field, keep) in picks.items():
        points = [(x(r), r[field]) for r in records
                  if r.get("event") == event and finite_number(r.get(field)) and keep(r)]
        if points:
            positions, losses = zip(*points)
            series[label] = (list(positions), list(losses))
    return series


class RunRecords(NamedTuple):
    """One run for `loss_figure`: its metrics records, its name in the legend (None: the
    series' names alone) and where a record sits on the x axis (default: its step)."""

    records: Sequence[Mapping]
    label: str | None = None
    x: Callable[[Mapping], float] = _step


def loss_figure(runs: Sequence[RunRecords], title: str | None = None, *, xlabel: str = "step",
                figsize: tuple[float, float] = (6.0, 3.5)):
    """Every run's `loss_series` in its own colour: the logged training loss as a thin line,
    epoch means as dots (hollow for partial epochs), the validation loss as dashed squares; a
    second y axis reads bits/char. With more than two runs the legend names runs only."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    brief = len(runs) > 2
    drawn = False
    for index, run in enumerate(runs):
        for name, (positions, losses) in loss_series(run.records, run.x).items():
            if brief:
                label = run.label if name == "train (logged)" else "_nolegend_"
            else:
                label = f"{run.label} {name}" if run.label else name
            ax.plot(positions, losses, color=f"C{index % 10}", label=label, **_STYLES[name])
            drawn = True
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/char)")
    bits = ax.secondary_yaxis("right", functions=(lambda nats: nats / LN2, lambda b: b * LN2))
    bits.set_ylabel("bits/char")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, title=BRIEF_LEGEND_TITLE if brief else None, title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "no records yet", ha="center", va="center", transform=ax.transAxes)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save_png(fig, path, dpi: int = 100) -> Path:
    """Writes `fig` to `path` as a PNG, atomically: a reader never sees half an image."""
    with files.atomic_writer(path) as file:
        fig.savefig(file, format="png", dpi=dpi)
    return Path(path)
