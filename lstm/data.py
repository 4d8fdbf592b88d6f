"""Clean text → Vocab → encoded ids → train/val split: `load_corpus`, and the pieces it is made of.

The cleaning itself (Gutenberg markers, line endings, UTF-8 across chunk boundaries) is in
`lstm.cleaning`, and so are `read_text`, `clean_text` and `DataError`: import them from there. A
file too large to encode in memory is streamed once into a memory-mapped cache keyed by its
content and cleaning. The batch schedules that cut the ids into windows live in `lstm.schedules`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import json
import os
import urllib.request
from pathlib import Path

import numpy as np

from lstm import cleaning, files
from lstm.cleaning import CHUNK_BYTES, DataError, read_text

WONDERLAND_FILENAME = "wonderland.txt"
# Gutenberg #11, the 2011 revision with straight quotes that the reference counts come from
# (144,440 characters, 45 symbols); a later revision would silently change every number.
WONDERLAND_URLS = ("https://www.gutenberg.org/cache/epub/11/pg11.txt",
                   "https://www.gutenberg.org/files/11/11-0.txt")
WONDERLAND_SHA256 = "85afadc129f83223297f7ef8bad88e2a43f61f0b30f3bbefe2eb87f1bbdd318b"
DOWNLOAD_TIMEOUT_S = 20
IN_MEMORY_LIMIT_BYTES = 64 << 20  # above this load_corpus encodes to a memory-mapped cache
_CACHE_FORMAT = 1  # bump when the cache layout or the cleaning rules change


# ------------------------------------------------------------------------------- vocabulary
def _id_dtype(size: int):
    return np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.int32


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Characters ↔ ids; an id is the character's rank in sorted order, as in the tutorial."""

    chars: tuple[str, ...]

    def __post_init__(self):
        chars = tuple(self.chars)
        object.__setattr__(self, "chars", chars)
        if (not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars)
                or list(chars) != sorted(set(chars))):
            raise DataError("a vocabulary must be a non-empty sorted list of distinct characters")

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        if not text:
            raise DataError("cannot build a vocabulary from empty text")
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self):
        return np.dtype(_id_dtype(len(self)))

    @functools.cached_property
    def _id_of_codepoint(self) -> np.ndarray:
        # A dense table (≤ 4.4 MB even for the top of Unicode) turns encoding into one gather;
        # the last slot is -1 and catches every codepoint above the vocabulary's largest.
        codepoints = np.array([ord(c) for c in self.chars])
        table = np.full(codepoints[-1] + 2, -1, dtype=np.int32)
        table[codepoints] = np.arange(len(self.chars), dtype=np.int32)
        return table

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of `text`; characters outside the vocabulary raise DataError, or with
        unknown="skip" are dropped (e.g. encoding a user's seed for sampling)."""
        if unknown not in ("error", "skip"):
            raise DataError(f"unknown={unknown!r}: expected 'error' or 'skip'")
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._id_of_codepoint
        ids = table[np.minimum(codepoints, len(table) - 1)]
        missing = ids < 0
        if missing.any():
            if unknown == "skip":
                ids = ids[~missing]
            else:
                strangers = [chr(c) for c in np.unique(codepoints[missing])]
                shown = ", ".join(map(repr, strangers[:10])) + (", ..." * (len(strangers) > 10))
                raise DataError(f"{int(missing.sum())} characters are not in the {len(self)}-"
                                f"symbol vocabulary ({len(strangers)} distinct: {shown})")
        return ids.astype(self.dtype)

    @functools.cached_property
    def _char_array(self) -> np.ndarray:
        return np.array(self.chars)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            return ""
        if ids.min() < 0 or ids.max() >= len(self):
            raise DataError(f"ids must lie in [0, {len(self)}); got {ids.min()}..{ids.max()}")
        return "".join(self._char_array[ids].tolist())

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars)})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            return cls(tuple(json.loads(text)["chars"]))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"not a vocabulary JSON ({err})") from None

    def save(self, path) -> None:
        files.write_atomically(path, self.to_json())

    @classmethod
    def load(cls, path) -> Vocab:
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise DataError(f"{path}: cannot read vocabulary ({err.strerror})") from None


# -------------------------------------------------------------------- memory-mapped corpora
def _content_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def encode_file(path, vocab: Vocab | None = None, *, cache_dir, strip_gutenberg=True,
                lowercase=False, allowed_chars=None, ascii_only=False, crlf=False,
                chunk_bytes=CHUNK_BYTES) -> tuple[Vocab, np.ndarray]:
    """Encode a file of any size to `cache_dir/<key>.bin` and return it as a read-only memmap.

    The key hashes the content, the cleaning and the vocabulary, so an edited file or changed
    option never reuses a stale cache. Without a vocabulary, a first streamed pass collects
    the character set; the encoding pass writes chunk by chunk, so memory stays constant.
    """
    cleaning.require_file(path)
    rules = cleaning.Cleaning.make(strip_gutenberg, lowercase, allowed_chars, ascii_only, crlf)
    key_source = json.dumps([_CACHE_FORMAT, _content_sha256(path), dataclasses.asdict(rules),
                             list(vocab.chars) if vocab else None])
    key = hashlib.sha256(key_source.encode()).hexdigest()
    cache_dir = Path(cache_dir).expanduser()
    ids_path, meta_path = cache_dir / f"{key}.bin", cache_dir / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        cached_vocab = Vocab(tuple(meta["chars"]))
        num_tokens = meta["num_tokens"]
        if ids_path.stat().st_size == num_tokens * cached_vocab.dtype.itemsize:
            return cached_vocab, np.memmap(ids_path, cached_vocab.dtype, "r", shape=(num_tokens,))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache, or a damaged one: rebuild it
    if vocab is None:
        seen = set()  # codepoints; a histogram per piece is ~20x faster than set(str)
        for piece in cleaning.clean_pieces(path, rules, chunk_bytes):
            codepoints = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            seen.update(np.flatnonzero(np.bincount(codepoints)).tolist())
        if not seen:
            raise DataError(f"{path}: no text left after cleaning ({rules.describe()})")
        vocab = Vocab(tuple(map(chr, sorted(seen))))
    num_tokens = 0
    with files.atomic_writer(ids_path) as out:
        for piece in cleaning.clean_pieces(path, rules, chunk_bytes):
            ids = vocab.encode(piece)
            out.write(ids.tobytes())
            num_tokens += len(ids)
        if num_tokens == 0:
            raise DataError(f"{path}: no text left after cleaning ({rules.describe()})")
    meta = {"chars": list(vocab.chars), "num_tokens": num_tokens, "source": str(path),
            "cleaning": dataclasses.asdict(rules)}
    files.write_atomically(meta_path, json.dumps(meta))
    return vocab, np.memmap(ids_path, vocab.dtype, "r", shape=(num_tokens,))


# -------------------------------------------------------------------------- corpus + split
@dataclasses.dataclass
class Corpus:
    vocab: Vocab
    train: np.ndarray  # ids; uint8/uint16 (callers cast), a memmap for large files
    val: np.ndarray | None  # the contiguous held-out tail; None when val_fraction is 0
    path: str


def split_tail(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Hold out a contiguous tail: windows never straddle train and val, and the train count is
    int(n·(1 − f)) exactly as nanoGPT's tiny-Shakespeare split (1,003,854 / 111,540)."""
    _check_val_fraction(val_fraction)
    if val_fraction == 0:
        return ids, None
    num_train = int(len(ids) * (1 - val_fraction))
    if num_train in (0, len(ids)):
        raise DataError(f"val_fraction {val_fraction} of {len(ids)} tokens leaves an empty split")
    return ids[:num_train], ids[num_train:]


def _check_val_fraction(val_fraction):
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise DataError(f"val_fraction must be in [0, 1); got {val_fraction!r}")


def download_wonderland(dest) -> Path:
    """Fetch the pinned Gutenberg #11 text to `dest`; DataError saying where to put it if not."""
    dest, reasons = Path(dest), []
    for url in WONDERLAND_URLS:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
        except (OSError, http.client.HTTPException, ValueError) as err:
            reasons.append(f"{url}: {err}")
            continue
        digest = hashlib.sha256(payload).hexdigest()
        if digest != WONDERLAND_SHA256:
            reasons.append(f"{url}: sha256 {digest[:12]}… is not the pinned revision")
            continue
        files.write_atomically(dest, payload)
        return dest
    reason = "; ".join(reasons).replace("\n", " ")
    raise DataError(f"{dest} not found and download failed ({reason}); copy Project Gutenberg "
                    f"#11 plain text (sha256 {WONDERLAND_SHA256}) there")


def default_cache_dir(path: Path) -> Path:
    """Where caches derived from the corpus at `path` live: data/.cache beside it where that
    is writable, else ~/.cache/lstm."""
    beside = path.parent / ".cache"
    if os.access(beside if beside.is_dir() else path.parent, os.W_OK):
        return beside
    return Path("~/.cache/lstm").expanduser()


def load_corpus(cfg, cache_dir=None) -> Corpus:
    """Clean, encode and split the corpus `cfg` names (fields as in configs/default.py)."""
    path = Path(cfg.path).expanduser()
    val_fraction = getattr(cfg, "val_fraction", 0.0)
    _check_val_fraction(val_fraction)  # before the slow part
    if not path.exists():
        if path.name == WONDERLAND_FILENAME and getattr(cfg, "download", False):
            download_wonderland(path)
        elif path.name == WONDERLAND_FILENAME:
            raise DataError(f"{path} not found; copy Project Gutenberg #11 plain text there "
                            "(`make data` copies ../shared/data) or set download=True")
        else:
            cleaning.require_file(path)
    options = dict(strip_gutenberg=getattr(cfg, "strip_gutenberg", True),
                   lowercase=getattr(cfg, "lowercase", False),
                   allowed_chars=getattr(cfg, "allowed_chars", None) or None,
                   ascii_only=getattr(cfg, "ascii_only", False),
                   crlf=getattr(cfg, "crlf", False))
    if path.is_file() and path.stat().st_size < IN_MEMORY_LIMIT_BYTES:
        text = read_text(path, **options)
        vocab = Vocab.from_text(text)
        ids = vocab.encode(text)
        ids.flags.writeable = False  # like the memmap: the corpus is never edited in place
    else:
        vocab, ids = encode_file(path, None, cache_dir=cache_dir or default_cache_dir(path),
                                 **options)
    train, val = split_tail(ids, val_fraction)
    return Corpus(vocab, train, val, str(path))
