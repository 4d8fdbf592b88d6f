"""Text → clean text → Vocab → encoded ids → train/val split → window start indices.

Every cleaning path (in memory or streamed to a memory-mapped cache) runs through one
generator, `_clean_pieces`, so the two can never disagree about what the corpus is. Every
objective reduces to window *start* indices into the 1-D id array: the training loop keeps the
ids on the device and gathers windows there (design.md, principle 2), and a schedule is a pure
function of (seed, epoch, step) so a resumed run sees the same batches.

Users hit this module first with their own files (Windows line endings, stray bytes, a
465-million-character corpus), so every problem is a `DataError` with a one-line message that
names the file, the byte offset or the offending characters.

About 600 lines, past the usual ~400, because it holds four things the loop takes from one
place: cleaning and streaming (the largest part: UTF-8 and CRLF across chunk boundaries), the
vocabulary, the download, and the batch schedules. The schedules (from `feistel_permute` on)
depend on nothing above them and are the natural piece to move out if the file grows.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import json
import math
import mmap
import os
import re
import tempfile
import urllib.request
from pathlib import Path

import jax
import jax.numpy as jnp
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
# Above this many windows the epoch's cached permutation would pass 64 MiB (int32); a Feistel
# bijection gives every batch its windows from O(batch) work instead.
MAX_MATERIALISED_PERMUTATION = 1 << 24
FEISTEL_ROUNDS = 6
_CACHE_FORMAT = 1  # bump when the cache layout or the cleaning rules change
_OBJECTIVES = ("last", "all", "stateful")
_UNKNOWN_OBJECTIVE = "unknown objective {!r}; expected 'last', 'all' or 'stateful'"


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


# ------------------------------------------------------------------------- batch schedules
def _check_sizes(num_tokens, **sizes):
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise DataError(f"{name} must be a positive integer; got {value!r}")
    if num_tokens >= 1 << 31:
        raise DataError(f"{num_tokens} tokens: window starts are int32, so at most 2**31 - 1")


def feistel_permute(positions, domain_size: int, keys) -> np.ndarray:
    """A keyed bijection on [0, domain_size), evaluated only at `positions`.

    A balanced Feistel network permutes [0, 4^h) for any round function; cycle-walking (apply
    again while the value lies outside the domain) restricts it to [0, domain_size). Since
    4^h < 4·domain_size, a value walks fewer than 4 times on average.
    """
    half_bits = max(1, ((int(domain_size) - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half_bits) - 1)
    keys = np.asarray(keys, dtype=np.uint64)

    def network(x):
        left, right = x >> np.uint64(half_bits), x & mask
        for key in keys:  # splitmix64's finaliser as the round function: cheap, well mixed
            z = right ^ key
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            left, right = right, left ^ ((z ^ (z >> np.uint64(31))) & mask)
        return (left << np.uint64(half_bits)) | right

    values = network(np.asarray(positions, dtype=np.uint64))
    outside = values >= domain_size
    while outside.any():
        values[outside] = network(values[outside])
        outside = values >= domain_size
    return values.astype(np.int64)


class WindowSchedule:
    """Shuffled windows for the "last" and "all" objectives.

    A window starting at s has inputs tokens[s:s+T]; its target is tokens[s+T] ("last", the
    tutorial) or tokens[s+1:s+T+1] ("all", char-rnn). Starts are 0, stride, 2·stride, ... with
    s + T ≤ num_tokens − 1. Each epoch visits every window exactly once in an order fixed by
    (seed, epoch); the ragged last batch is padded with weight-0 repeats so the step's shapes,
    and so its compiled program, never change.
    """

    def __init__(self, num_tokens, seq_len, batch_size, *, objective, stride=1, seed=0):
        if objective not in ("last", "all"):
            raise DataError(f"WindowSchedule objective must be 'last' or 'all'; got {objective!r}")
        _check_sizes(num_tokens, seq_len=seq_len, batch_size=batch_size, stride=stride)
        if int(seed) != seed or seed < 0:
            raise DataError(f"seed must be a non-negative integer; got {seed!r}")
        last_start = num_tokens - 1 - seq_len
        if last_start < 0:
            raise DataError(f"{num_tokens} tokens are too short for one window of {seq_len} "
                            "inputs and its target")
        self.objective, self.seq_len, self.batch_size = objective, seq_len, batch_size
        self.stride, self.seed = stride, seed
        self.num_windows = last_start // stride + 1
        self.steps_per_epoch = math.ceil(self.num_windows / batch_size)
        self._permutation_epoch, self._permutation = None, None

    def _window_order(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        if self.num_windows > MAX_MATERIALISED_PERMUTATION:
            keys = np.random.default_rng([self.seed, epoch]).integers(
                0, 2**63, size=FEISTEL_ROUNDS, dtype=np.uint64)
            return feistel_permute(positions, self.num_windows, keys)
        if self._permutation_epoch != epoch:  # memo: every step of an epoch uses the same one
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            self._permutation = order.astype(np.int32)
            self._permutation_epoch = epoch
        return self._permutation[positions]

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts int32[B], weights float32[B]); weight 0 marks padding."""
        _check_step(step, self.steps_per_epoch)
        positions = step * self.batch_size + np.arange(self.batch_size)
        weights = (positions < self.num_windows).astype(np.float32)
        windows = self._window_order(epoch, positions % self.num_windows)
        return (windows * self.stride).astype(np.int32), weights


class StreamSchedule:
    """Contiguous streams for the "stateful" objective (truncated BPTT, the tutorial's ext. 10).

    The corpus is cut into B streams of L = (num_tokens − 1) // B tokens; row b of batch k
    starts at b·L + k·T, so batch k+1 continues batch k row for row and the loop can carry
    (h, c) across steps. Inputs tokens[s:s+T] tile each stream; targets tokens[s+1:s+T+1] are
    always the true next characters (the last target may be the next stream's first token).
    The batches are the same every epoch: the loop resets the state at step 0.
    """

    def __init__(self, num_tokens, seq_len, batch_size):
        _check_sizes(num_tokens, seq_len=seq_len, batch_size=batch_size)
        self.objective, self.seq_len, self.batch_size = "stateful", seq_len, batch_size
        self.stream_len = (num_tokens - 1) // batch_size
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch == 0:
            raise DataError(f"{num_tokens} tokens cut into {batch_size} streams of "
                            f"{self.stream_len} are too short for one window of {seq_len}")
        self.num_windows = self.steps_per_epoch * batch_size
        self._stream_starts = np.arange(batch_size) * self.stream_len

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        _check_step(step, self.steps_per_epoch)
        starts = self._stream_starts + step * self.seq_len
        return starts.astype(np.int32), np.ones(self.batch_size, np.float32)


def _check_step(step, steps_per_epoch):
    if not 0 <= step < steps_per_epoch:
        raise DataError(f"step {step} is outside the epoch's {steps_per_epoch} steps")


def make_schedule(objective, num_tokens, seq_len, batch_size, *, stride=1, seed=0):
    if objective == "stateful":
        if stride != 1:
            raise DataError(f"objective 'stateful' tiles its streams; stride {stride} is moot")
        return StreamSchedule(num_tokens, seq_len, batch_size)
    if objective in ("last", "all"):
        return WindowSchedule(num_tokens, seq_len, batch_size, objective=objective,
                              stride=stride, seed=seed)
    raise DataError(_UNKNOWN_OBJECTIVE.format(objective))


@functools.partial(jax.jit, static_argnames=("seq_len", "objective"))
def gather_windows(tokens, starts, seq_len: int, objective: str):
    """Cut windows out of the device-resident ids: (inputs int32[B, T], targets int32[B] for
    "last", int32[B, T] for "all" and "stateful"). One index-matrix take: a single gather."""
    if objective not in _OBJECTIVES:
        raise DataError(_UNKNOWN_OBJECTIVE.format(objective))
    index = starts[:, None] + jnp.arange(seq_len + 1, dtype=starts.dtype)
    windows = jnp.take(tokens, index, axis=0).astype(jnp.int32)
    targets = windows[:, seq_len] if objective == "last" else windows[:, 1:]
    return windows[:, :seq_len], targets


def eval_windows(num_tokens: int, seq_len: int) -> np.ndarray:
    """Starts of non-overlapping "all"-style windows over a held-out array: every position
    predicts its next character once. The tail shorter than a window (< T positions) is
    left out rather than scored twice by an overlapping window."""
    _check_sizes(num_tokens, seq_len=seq_len)
    count = (num_tokens - 1) // seq_len
    if count == 0:
        raise DataError(f"{num_tokens} held-out tokens are too short for one window of {seq_len}")
    return (np.arange(count) * seq_len).astype(np.int32)


def tutorial_eval_starts(num_tokens: int, seq_len: int, max_windows: int = 2048) -> np.ndarray:
    """Evenly spaced stride-1 window starts for the tutorial's metric (loss on the character
    after a full window); capped because every stride-1 window costs a full forward pass."""
    _check_sizes(num_tokens, seq_len=seq_len, max_windows=max_windows)
    count = num_tokens - seq_len
    if count <= 0:
        raise DataError(f"{num_tokens} held-out tokens are too short for one window of {seq_len}")
    if count <= max_windows:
        return np.arange(count, dtype=np.int32)
    return np.linspace(0, count - 1, max_windows).round().astype(np.int32)
