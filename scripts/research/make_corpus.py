"""Writes a synthetic corpus of exactly N characters, the same bytes for the same seed.

    python scripts/research/make_corpus.py --chars=500000000 --out=/tmp/lstm_scaling/corpus_500M.txt

For measuring the large-corpus path (docs/scaling.md), not for learning anything: the text is
lines of the source books (default: Alice, Gutenberg licence dropped) drawn at random, and half
of them spliced at a word boundary with another line's tail, so the vocabulary and the line
lengths are the real ones while the file never repeats in long runs. The output is written
block by block (memory stays at a few MiB whatever N is) to a temporary sibling renamed at the
end. Generated corpora are never committed: write them to /tmp or an ignored folder (data/).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from absl import flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lstm import cli  # noqa: E402

DEFAULT_SOURCES = (str(ROOT / "data" / "wonderland.txt"),)
LINES_PER_BLOCK = 1 << 15  # ~2 MB of text per write
SPLICE_PROBABILITY = 0.5

_CHARS = flags.DEFINE_integer("chars", None, "Characters to write (exactly).", required=True)
_OUT = flags.DEFINE_string("out", None, "Output file (keep it out of git: /tmp or data/).", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Picks the lines and the splices: the same seed, the same bytes.")
_SOURCES = flags.DEFINE_multi_string("source", None, "A UTF-8 text whose lines are sampled "
                                     "(default data/wonderland.txt, Alice).")


def source_lines(paths) -> list[str]:
    """The cleaned lines of the sources (the library's own cleaning), each with its newline."""
    from lstm import cleaning
    lines = []
    for path in paths:
        text = cleaning.read_text(path, strip_gutenberg=True)
        lines.extend(line + "\n" for line in text.split("\n"))
    if not lines:
        raise SystemExit("error: the sources hold no text")
    return lines


def pieces(lines: list[str], seed: int):
    """An endless stream of text blocks, a pure function of (lines, seed)."""
    rng = np.random.default_rng(seed)
    # A line can be cut after any of its spaces; cuts[k] lists line k's cut points.
    cuts = [[0] + [i + 1 for i, ch in enumerate(line) if ch == " "] for line in lines]
    while True:
        first = rng.integers(0, len(lines), LINES_PER_BLOCK)
        second = rng.integers(0, len(lines), LINES_PER_BLOCK)
        splice = rng.random(LINES_PER_BLOCK) < SPLICE_PROBABILITY
        u, v = rng.random(LINES_PER_BLOCK), rng.random(LINES_PER_BLOCK)
        out = []
        for a, b, s, x, y in zip(first.tolist(), second.tolist(), splice.tolist(), u.tolist(), v.tolist()):
            if not s:
                out.append(lines[a])
                continue
            ca, cb = cuts[a], cuts[b]
            out.append(lines[a][:ca[int(x * len(ca))]] + lines[b][cb[int(y * len(cb))]:])
        yield "".join(out)


def make_corpus(out, num_chars: int, seed: int = 0, sources=DEFAULT_SOURCES) -> int:
    """Writes exactly `num_chars` characters (UTF-8) to `out`; returns the bytes written."""
    if num_chars < 1:
        raise SystemExit(f"error: --chars must be >= 1; got {num_chars}")
    from lstm import files
    written_chars = written_bytes = 0
    with files.atomic_writer(out) as file:
        for block in pieces(source_lines(sources), seed):
            block = block[:num_chars - written_chars]
            payload = block.encode("utf-8")
            file.write(payload)
            written_chars += len(block)
            written_bytes += len(payload)
            if written_chars == num_chars:
                break
    return written_bytes


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    sources = _SOURCES.value or DEFAULT_SOURCES
    for path in sources:
        if not Path(path).is_file():
            cli.fail(f"source {path} not found (`make data` copies the corpora)")
    with cli.one_line_errors():
        size = make_corpus(_OUT.value, _CHARS.value, _SEED.value, sources)
    print(f"wrote {_CHARS.value:,} characters ({size:,} bytes) to {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
