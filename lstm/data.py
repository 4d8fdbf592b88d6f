"""Text → clean text → Vocab → encoded ids → train/val split.

Every cleaning path (in memory or streamed to a memory-mapped cache) runs through one
generator, `_clean_pieces`, so the two can never disagree about what the corpus is. The batch
schedules that cut the ids into windows live in `lstm.schedules`.

Users hit this module first with their own files (Windows line endings, stray bytes, a
465-million-character corpus), so every problem is a `DataError` with a one-line message that
names the file, the byte offset or the offending characters.

About 450 lines, past the usual ~400, because cleaning and streaming (UTF-8 and CRLF across
chunk boundaries, the Gutenberg markers found on bytes), the vocabulary, the cache and the
download are one pipeline that shares its cleaning rules; split, each part would import the
others' internals.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import json
import mmap
import os
import re
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

WONDERLAND_FILENAME = "wonderland.txt"
# Gutenberg #11, the 2011 revision with straight quotes that the reference counts come from
# (144,440 characters, 45 symbols); a later revision would silently change every number.
WONDERLAND_URLS = ("https://www.gutenberg.org/cache/epub/11/pg11.txt",
                   "https://www.gutenberg.org/files/11/11-0.txt")
WONDERLAND_SHA256 = "85afadc129f83223297f7ef8bad88e2a43f61f0b30f3bbefe2eb87f1bbdd318b"
DOWNLOAD_TIMEOUT_S = 20
CHUNK_BYTES = 4 << 20  # encoding needs ~16 bytes per character of a chunk, whatever the file size
_MAX_CARRIED_CHARS = 1 << 20  # a partial line waits for its end up to this length
IN_MEMORY_LIMIT_BYTES = 64 << 20  # above this load_corpus encodes to a memory-mapped cache
_CACHE_FORMAT = 1  # bump when the cache layout or the cleaning rules change


class DataError(ValueError):
    """A problem with the user's data or settings; the message is one line, fit to print."""


# ---------------------------------------------------------------------------------- cleaning
# Both marker spellings occur ("THIS" before ~2016, "THE" after); "*** START: FULL LICENSE ***"
# must not match. Patterns open with a literal so the scan of a big file stays fast (~1 s/GB).
_START = re.compile(rb"\*\*\* ?START OF TH(?:E|IS) PROJECT GUTENBERG E-?BOOK"
                    rb"[^\r\n]*(?:\r\n|\r|\n)?", re.IGNORECASE)
_END = re.compile(rb"\*\*\* ?END OF TH(?:E|IS) PROJECT GUTENBERG E-?BOOK", re.IGNORECASE)
_TRAILER = re.compile(rb"(?<![^\r\n])End of (?:the )?Project Gutenberg[^\r\n]*\Z", re.IGNORECASE)


def _search_line_start(pattern, buf, line_start):
    """First match that begins a line: at `line_start` (callers pass one) or after \\n or \\r."""
    pos = line_start
    while (match := pattern.search(buf, pos)) is not None:
        if match.start() == line_start or buf[match.start() - 1] in b"\r\n":
            return match
        pos = match.start() + 1
    return None


@dataclasses.dataclass(frozen=True)
class _Cleaning:
    strip_gutenberg: bool = True
    lowercase: bool = False
    allowed_chars: str | None = None  # sorted, deduplicated; None keeps every character
    ascii_only: bool = False
    crlf: bool = False  # end lines with "\r\n" again, as the tutorial's Windows copy did

    @classmethod
    def make(cls, strip_gutenberg=True, lowercase=False, allowed_chars=None, ascii_only=False,
             crlf=False):
        allowed = "".join(sorted(set(allowed_chars))) if allowed_chars else None
        return cls(bool(strip_gutenberg), bool(lowercase), allowed, bool(ascii_only), bool(crlf))

    @functools.cached_property
    def _disallowed(self):
        return re.compile("[^" + "".join(map(re.escape, self.allowed_chars)) + "]+")

    def apply(self, text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self.lowercase:
            text = text.lower()
        if self.ascii_only:
            text = text.encode("ascii", "ignore").decode("ascii")
        if self.allowed_chars is not None:
            text = self._disallowed.sub("", text)
        if self.crlf:  # after the filter, so allowed_chars need not list "\r"
            text = text.replace("\n", "\r\n")
        return text


def _gutenberg_span(buf, start: int, end: int) -> tuple[int, int]:
    """Byte range of the book between the markers, found on bytes so a huge file is never text.

    Leading blank lines are kept: the reference count (144,440 characters, data/README.md) is
    everything after the START line up to and including "THE END". Trailing blank lines and
    the "End of Project Gutenberg's ..." line before the END marker are dropped.
    """
    opening, closing = _search_line_start(_START, buf, start), _search_line_start(_END, buf, start)
    if opening is None and closing is None:
        return start, end
    body_start = opening.end() if opening else start
    closing = _search_line_start(_END, buf, body_start) if opening else closing
    body_end = closing.start() if closing else end
    window = 1 << 16
    while True:  # widen until the kept tail holds a line break, so the trailer line was whole
        low = max(body_start, body_end - window)
        tail = bytes(buf[low:body_end]).rstrip()
        trailer = _TRAILER.search(tail)
        if trailer:
            tail = tail[:trailer.start()].rstrip()
        if low == body_start or b"\n" in tail or b"\r" in tail:
            return body_start, low + len(tail)
        window *= 4


def _decode(raw: bytes, file_offset: int, final: bool, path) -> tuple[str, bytes]:
    """UTF-8 decode a chunk; a sequence cut by the chunk boundary is carried to the next one."""
    try:
        return raw.decode("utf-8"), b""
    except UnicodeDecodeError as err:
        if not final and err.end == len(raw) and err.reason == "unexpected end of data":
            return raw[:err.start].decode("utf-8"), raw[err.start:]
        raise DataError(f"{path}: byte {raw[err.start]:#04x} at offset {file_offset + err.start} "
                        f"is not UTF-8 ({err.reason}); re-save the file as UTF-8") from None


def _require_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: " + ("not a regular file" if path.exists() else "no such file"))
    return path


def _clean_pieces(path, cleaning: _Cleaning, chunk_bytes: int = CHUNK_BYTES):
    """Yield the cleaned text in pieces; joined, they are exactly the cleaned corpus."""
    path = _require_file(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    with open(path, "rb") as file:
        # The markers are found through a mapping closed before streaming, so the pages it
        # touched leave this process; the text itself is read chunk by chunk.
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            start = 3 if buf[:3] == b"\xef\xbb\xbf" else 0  # BOM: an editor's mark, not text
            end = len(buf)
            if cleaning.strip_gutenberg:
                start, end = _gutenberg_span(buf, start, end)
        file.seek(start)
        carried_bytes, carried_text = b"", ""
        for offset in range(start, end, chunk_bytes):
            final = offset + chunk_bytes >= end
            raw = carried_bytes + file.read(min(chunk_bytes, end - offset))
            text, next_bytes = _decode(raw, offset - len(carried_bytes), final, path)
            carried_bytes, text = next_bytes, carried_text + text
            # Cut after the last line break so a CRLF pair, and the context str.lower() uses
            # (Greek final sigma), never straddle two pieces. A line longer than the carry
            # limit is cut anyway, holding back only a trailing CR.
            cut = len(text) if final else text.rfind("\n") + 1
            if cut == 0 and len(text) > _MAX_CARRIED_CHARS:
                cut = len(text) - text.endswith("\r")
            text, carried_text = text[:cut], text[cut:]
            yield cleaning.apply(text)


def read_text(path, *, strip_gutenberg=True, lowercase=False, allowed_chars=None,
              ascii_only=False, crlf=False) -> str:
    """The cleaned text of a UTF-8 file (Gutenberg licence dropped, line endings LF).

    `allowed_chars` keeps only those characters (after lower-casing): the tutorial's
    "remove punctuation" extension. Include "\\n" and " " in it if you want lines and words.
    `crlf` ends every line with "\\r\\n" instead, to reproduce the tutorial's Windows copy.
    """
    cleaning = _Cleaning.make(strip_gutenberg, lowercase, allowed_chars, ascii_only, crlf)
    text = "".join(_clean_pieces(path, cleaning))
    if not text:
        raise DataError(f"{path}: no text left after cleaning ({_describe(cleaning)})")
    return text


def clean_text(text: str, *, lowercase=False, allowed_chars=None, ascii_only=False,
               crlf=False) -> str:
    """Cleans a string by the rules `read_text` applies to a file (line endings, case,
    allowed characters, ASCII), so a user's seed text matches the corpus it is fed to."""
    return _Cleaning.make(False, lowercase, allowed_chars, ascii_only, crlf).apply(text)


def _describe(cleaning: _Cleaning) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(cleaning).items())


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
        _write_atomically(Path(path), self.to_json().encode())

    @classmethod
    def load(cls, path) -> Vocab:
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise DataError(f"{path}: cannot read vocabulary ({err.strerror})") from None


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write to a temporary sibling then rename, so a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _require_file(path)
    cleaning = _Cleaning.make(strip_gutenberg, lowercase, allowed_chars, ascii_only, crlf)
    key_source = json.dumps([_CACHE_FORMAT, _content_sha256(path), dataclasses.asdict(cleaning),
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
        for piece in _clean_pieces(path, cleaning, chunk_bytes):
            codepoints = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            seen.update(np.flatnonzero(np.bincount(codepoints)).tolist())
        if not seen:
            raise DataError(f"{path}: no text left after cleaning ({_describe(cleaning)})")
        vocab = Vocab(tuple(map(chr, sorted(seen))))
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
    num_tokens = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in _clean_pieces(path, cleaning, chunk_bytes):
                ids = vocab.encode(piece)
                out.write(ids.tobytes())
                num_tokens += len(ids)
        if num_tokens == 0:
            raise DataError(f"{path}: no text left after cleaning ({_describe(cleaning)})")
        os.replace(tmp, ids_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"chars": list(vocab.chars), "num_tokens": num_tokens, "source": str(path),
            "cleaning": dataclasses.asdict(cleaning)}
    _write_atomically(meta_path, json.dumps(meta).encode())
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
        _write_atomically(dest, payload)
        return dest
    reason = "; ".join(reasons).replace("\n", " ")
    raise DataError(f"{dest} not found and download failed ({reason}); copy Project Gutenberg "
                    f"#11 plain text (sha256 {WONDERLAND_SHA256}) there")


def _default_cache_dir(path: Path) -> Path:
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
            _require_file(path)
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
        vocab, ids = encode_file(path, None, cache_dir=cache_dir or _default_cache_dir(path),
                                 **options)
    train, val = split_tail(ids, val_fraction)
    return Corpus(vocab, train, val, str(path))
