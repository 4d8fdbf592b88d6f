"""Tables for the terminal and for Markdown: one renderer of each, shared by the scripts, the
benchmarks and docs/results.md's generator."""
from __future__ import annotations


def text_table(title: str, header, lines, left) -> str:
    """Columns padded to their widest cell: those in `left` left-aligned, the rest (numbers)
    right-aligned, under a title and a rule."""
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])
