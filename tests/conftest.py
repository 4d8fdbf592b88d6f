"""Shared fixtures: a short slice of Alice, so training tests are fast and need no network.

Much of the suite's time is XLA compiling the same tiny programs again: many tests start
`scripts/train.py` in subprocesses. JAX's persistent compilation cache, set here before any
test imports JAX and inherited by the subprocesses through the environment, compiles each
program once per worker. It holds the executables the compiler would produce anyway, so no
test's numbers change. Each pytest-xdist worker gets its own directory: without eviction JAX
writes cache files unlocked, and a worker could read another's half-written entry.
"""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix=f"lstm-tests-xla-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

ROOT = Path(__file__).resolve().parents[1]
ALICE = ROOT / "data" / "wonderland.txt"
SHARED_ALICE = ROOT.parent / "shared" / "data" / "wonderland.txt"


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory):
    """A 20k-character slice of Alice, Gutenberg markers included."""
    source = ALICE if ALICE.exists() else SHARED_ALICE
    if not source.exists():
        pytest.skip("Alice corpus not available (make test seeds data/ from ../shared/data)")
    path = tmp_path_factory.mktemp("corpus") / "alice_slice.txt"
    text = source.read_text(encoding="utf-8")
    start = text.index("*** START")
    path.write_text(text[start:start + 20_000] + "\n*** END OF THE BOOK ***\n", encoding="utf-8")
    return path
