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

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_SOURCES = (str(ROOT / "data" / "wonderland.txt"),)
LINES_PER_BLOCK = 1 << 15  # ~2 MB of text per write
SPLICE_PROBABILITY = 0.5


def source_lines(paths) -> list[str]:
    """The cleaned lines of the sources (the library's own cleaning), each with its newline."""
    from lstm import data
    lines = []
    for path in paths:
        text = data.read_text(path, strip_gutenberg=True)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    written_chars = written_bytes = 0
    try:
        with os.fdopen(fd, "wb") as file:
            for block in pieces(source_lines(sources), seed):
                block = block[:num_chars - written_chars]
                payload = block.encode("utf-8")
                file.write(payload)
                written_chars += len(block)
                written_bytes += len(payload)
                if written_chars == num_chars:
                    break
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise whoever reads it next
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, required=True, help="characters to write (exactly)")
    parser.add_argument("--out", required=True, help="output file (keep it out of git: /tmp or data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", action="append", default=None,
                        help="a UTF-8 text whose lines are sampled (repeatable; default Alice)")
    args = parser.parse_args(argv)
    sources = args.source or DEFAULT_SOURCES
    for path in sources:
        if not Path(path).is_file():
            raise SystemExit(f"error: source {path} not found (`make data` copies the corpora)")
    size = make_corpus(args.out, args.chars, args.seed, sources)
    print(f"wrote {args.chars:,} characters ({size:,} bytes) to {args.out}")


if __name__ == "__main__":
    main()
