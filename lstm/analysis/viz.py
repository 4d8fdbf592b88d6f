"""The notebooks' figures and tables that are not about the cells: `loss_curves` (from
metrics.jsonl records), `sample_table` (one sample per temperature) and `markdown_table`.

`loss_curves` returns a `matplotlib.figure.Figure` built without pyplot: no backend is
switched, no global figure list grows, nothing is shown. A notebook displays the returned
figure (the last expression of a cell); a script calls `fig.savefig(path)`.

What the cells do, after Karpathy, Johnson & Fei-Fei (2015), "Visualizing and understanding
recurrent networks" (arXiv:1506.02078), lives in its own modules; import each from there
(`from lstm.analysis import heatmaps, saturation, units`):

- lstm.analysis.units: `trace_text`, `held_out_text`, the per-character features
  `inside_quotes`, `line_position`, `word_boundary` (`text_features`), and `find_units`,
  `unit_table`, `best_unit`: which units track a property of the text, ranked by correlation;
- lstm.analysis.heatmaps: `activation_heatmap`, `gate_heatmaps`, `text_heatmap`: chosen hidden
  units (or gates) over a passage, with the passage's characters as the axis;
- lstm.analysis.saturation: `saturation_fractions` / `gate_saturation`: how often the i, f and o
  gates sit near 0 (< 0.1) or near 1 (> 0.9), per layer.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from matplotlib.figure import Figure

from lstm import curves
from lstm.analysis import tables


def loss_curves(records, title: str | None = None) -> Figure:
    """Training and validation loss (nats/char) against step from metrics.jsonl records
    (`lstm.logger.read_metrics`): the same figure as the workdir's loss.png."""
    return curves.loss_figure([curves.RunRecords(records)], title)


def sample_table(generator, seed_text: str, temperatures: Iterable[float] = (0.2, 0.5, 1.0),
                 length: int = 200, rng: int = 0, **settings) -> list[dict]:
    """One sample per temperature from a `lstm.sample.Generator` (anything with its
    `generate(seed_text, length, temperature=..., rng=..., ...)`): rows {"temperature",
    "sample"}; extra settings (top_k, top_p) pass through. Show with `markdown_table`."""
    return [{"temperature": t,
             "sample": generator.generate(seed_text, length, temperature=t, rng=rng, **settings)}
            for t in temperatures]


def markdown_table(rows: Sequence[Mapping]) -> str:
    """Rows of dicts (columns from the first row's keys) as a Markdown table; newlines show as
    ↵ and Markdown's special characters are escaped, so samples appear as generated.
    In a notebook: `IPython.display.Markdown(markdown_table(rows))`."""
    if not rows:
        return ""
    columns = list(rows[0])
    return tables.markdown_table(
        columns, [[tables.markdown_text(row.get(column, "")) for column in columns] for row in rows])
