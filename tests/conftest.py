"""Shared fixtures: a short slice of Alice, so training tests are fast and need no network."""
from pathlib import Path

import pytest

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
