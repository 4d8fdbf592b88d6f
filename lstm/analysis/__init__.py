"""Figures and forensics over trained runs: what units track (units), heat maps over a passage
(heatmaps), gate saturation (saturation), the notebooks' loss curves and sample tables (viz),
loss by target character (char_loss), run summaries and docs/results.md's tables (results),
where two runs part (provenance), and the table renderers they share (tables). Nothing in the
core `lstm` package imports this one."""
