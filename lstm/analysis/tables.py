"""Tables for the terminal and for Markdown: one renderer of each, shared by the scripts, the
benchmarks, the notebook and docs/results.md's generator. Callers choose what goes in the
cells; these only lay them out."""
from __future__ import annotations

from typing import Sequence


def text_table(title: str, header, lines, left) -> str:
    """Columns padded to their widest cell: those in `left` left-aligned, the rest (numbers)
    right-aligned, under a title and a rule."""
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   numeric: bool = False) -> str:
    """A GitHub Markdown table of cells that are Markdown already (bold marks stay bold; use
    `markdown_text` for text that must show as it is). A | in a cell would end the cell, so
    every one is escaped here. numeric=True right-aligns every column."""
    line = lambda cells: "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    rule = "|" + "|".join("---:" if numeric else "---" for _ in header) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def markdown_text(value) -> str:
    """A value as Markdown that shows it verbatim on one line: floats in %g, newlines as ↵,
    backslashes and the marks of code and emphasis escaped (`markdown_table` escapes |)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return (text.replace("\\", "\\\\").replace("\n", " ↵ ")
            .replace("`", "\\`").replace("*", "\\*").replace("_", "\\_"))
