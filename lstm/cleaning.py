"""Text file → clean text: the Gutenberg licence dropped, line endings LF, optional lower-casing
and character filters.

Every cleaning path (in memory, or streamed chunk by chunk to lstm.data's memory-mapped cache)
runs through one generator, `clean_pieces`, so the two can never disagree about what the corpus
is. It streams so that a 465-million-character file never has to be one string: UTF-8
sequences and CRLF pairs are carried across chunk boundaries, and the Gutenberg markers are
found on the file's bytes.

Users hit this module first with their own files (Windows line endings, stray bytes), so every
problem is a `DataError` with a one-line message that names the file, the byte offset or the
offending characters.
"""
from __future__ import annotations

import dataclasses
import functools
import mmap
import re
from pathlib import Path

CHUNK_BYTES = 4 << 20  # encoding needs ~16 bytes per character of a chunk, whatever the file size
_MAX_CARRIED_CHARS = 1 << 20  # a partial line waits for its end up to this length


class DataError(ValueError):
    """A problem with the user's data or settings; the message is one line, fit to print."""


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
class Cleaning:
    """One set of cleaning rules; lstm.data keys its cache on them, so they are the whole story."""

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

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self).items())


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


def require_file(path) -> Path:
    """`path` as a Path, or a DataError saying why it is not a readable file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: " + ("not a regular file" if path.exists() else "no such file"))
    return path


def clean_pieces(path, cleaning: Cleaning, chunk_bytes: int = CHUNK_BYTES):
    """Yield the cleaned text in pieces; joined, they are exactly the cleaned corpus."""
    path = require_file(path)
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
    cleaning = Cleaning.make(strip_gutenberg, lowercase, allowed_chars, ascii_only, crlf)
    text = "".join(clean_pieces(path, cleaning))
    if not text:
        raise DataError(f"{path}: no text left after cleaning ({cleaning.describe()})")
    return text


def clean_text(text: str, *, lowercase=False, allowed_chars=None, ascii_only=False,
               crlf=False) -> str:
    """Cleans a string by the rules `read_text` applies to a file (line endings, case,
    allowed characters, ASCII), so a user's seed text matches the corpus it is fed to."""
    return Cleaning.make(False, lowercase, allowed_chars, ascii_only, crlf).apply(text)
