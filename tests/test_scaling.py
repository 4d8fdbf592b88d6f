"""The large-corpus tooling of docs/scaling.md: the synthetic corpus generator is deterministic
and exact in size, and encoding through the streamed (memory-mapped) path keeps the whole
process's peak memory far below what holding the file's text in memory would take."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "research" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = load_script("make_corpus")


def test_make_corpus_is_deterministic_exact_and_keeps_the_vocabulary(corpus_path, tmp_path):
    sources = [str(corpus_path)]
    make_corpus.make_corpus(tmp_path / "a.txt", 50_000, seed=3, sources=sources)
    make_corpus.make_corpus(tmp_path / "b.txt", 50_000, seed=3, sources=sources)
    make_corpus.make_corpus(tmp_path / "c.txt", 50_000, seed=4, sources=sources)
    a = (tmp_path / "a.txt").read_bytes()
    assert a == (tmp_path / "b.txt").read_bytes() != (tmp_path / "c.txt").read_bytes()
    text = a.decode("utf-8")
    assert len(text) == 50_000
    # Lines are whole source lines or two spliced at a space: only the source's characters.
    from lstm import cleaning
    source = cleaning.read_text(corpus_path)
    assert set(text) <= set(source) and len(set(text)) > 0.8 * len(set(source))
    # A longer file with the same seed starts with the shorter one: blocks do not depend on N.
    make_corpus.make_corpus(tmp_path / "d.txt", 60_000, seed=3, sources=sources)
    assert (tmp_path / "d.txt").read_bytes().startswith(a)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary sibling was renamed


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_streamed_encoding_keeps_peak_memory_far_below_the_file(corpus_path, tmp_path):
    """24 MB through encode_file in 1 MiB chunks. Holding the text (str + UTF-32 codepoints +
    int32 ids ≈ 13 bytes/char) would add ~300 MiB to the process's peak; streaming adds the
    chunk's ~16 MiB, plus at most the file's own pages while the markers are searched."""
    path = tmp_path / "big.txt"
    make_corpus.make_corpus(path, 24_000_000, seed=0, sources=[str(corpus_path)])
    code = textwrap.dedent(f"""
        import json
        from lstm import data
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        before = hwm()
        vocab, ids = data.encode_file({str(path)!r}, cache_dir={str(tmp_path / "cache")!r},
                                      lowercase=True, chunk_bytes=1 << 20)
        print(json.dumps({{"growth": hwm() - before, "tokens": len(ids), "vocab": len(vocab),
                          "memmap": type(ids).__name__}}))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tokens"] == 24_000_000 and report["memmap"] == "memmap"
    assert report["growth"] < 96 << 20, report
