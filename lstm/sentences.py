"""Sentences as training sequences: the `sentences` objective (the tutorial's extension 4,
"train the model on padded sentences rather than random sequences of characters").

The rule that cuts clean text into sentences:
- A sentence ends after a run of `.`, `!` or `?` (so "?!" and "..." end one too), together
  with any closing quotes or brackets right after it (`"`, `'`, `”`, `’`, `)`, `]`: they belong
  to the sentence), when whitespace or the end of the text follows. A terminator followed by
  anything else (a digit as in "3.5", a letter as in "e.g.x", a comma) ends nothing. One
  consequence: "'who are you?' said the caterpillar." is two sentences, the question and
  "said the caterpillar.".
- A blank line (a line holding only whitespace) ends a sentence, terminator or not: headings
  and verses stand alone.
- Abbreviations: a single `.` right after one of the words in ABBREVIATIONS (any case, the word
  not glued to a letter before it) ends nothing, so "mr. smith came." is one sentence. Every
  other `.` before whitespace ends one, initials ("j. r. r. tolkien") and "etc." included: a
  short list of titles that never end a sentence is wrong far less often than a guess would be.
- Whitespace around a sentence belongs to none (it is neither read nor predicted); single line
  breaks inside one stay, as the wrapped book has them.
- Text after the last terminator is a sentence of its own (a book may end "THE END"). The
  train/held-out split cuts one sentence in two, and each part counts as a sentence of its side.

How a sentence becomes a padded sequence, with no pad symbol (so none can reach the vocabulary
or a sample): its window starts at its first character, like any window of the `all` objective
(inputs ids[s:s+T], targets ids[s+1:s+T+1]), and its per-position loss weights are 1 only where
the target is a character of the same sentence. The LSTM is causal: the output at position j
reads inputs 0..j only, so the characters after the sentence, which fill the rest of the
window, play the part of padding and can move neither a scored loss nor a gradient
(tests/test_sentences.py checks both, and that the loss equals the unpadded sentences' scored
one by one). The whole text is split in memory, once per run. Consequences:
- Each sentence's first character is never predicted: its context is the sentence alone, and
  before it there is nothing. A sentence of n characters gives n − 1 predictions, so a
  sentence of 1 character gives none and is left out.
- The character after the sentence (the space or newline after its terminator) is not
  predicted either: it belongs to no sentence.
- A window holds T + 1 characters, T inputs each predicting the next. A longer sentence is cut
  to its first T + 1 characters, and the cut ones are counted.
- A sentence starting within T + 1 characters of the end of the ids has no room for its window
  (every window reads T + 1 ids); it is left out and counted: at most the sentences that start
  in the last T characters of each split, rather than padding the ids on the device.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from lstm.cleaning import DataError

# Titles, and two Latin abbreviations, that in English prose are always followed by more of
# the same sentence. Lower case; a corpus's "Mr." matches too.
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "prof", "rev", "capt", "col", "gen",
                           "lt", "sgt", "e.g", "i.e"})
CLOSERS = "\"'”’)]"
_TERMINATOR = re.compile(r"[.!?]+[" + re.escape(CLOSERS) + r"]*(?=\s|\Z)")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_WORD_BEFORE = re.compile(r"[a-z]+(?:\.[a-z]+)*\Z", re.IGNORECASE)
_LONGEST_ABBREVIATION = max(map(len, ABBREVIATIONS))


def _after_abbreviation(text: str, dot: int) -> bool:
    """Whether the `.` at `dot` closes a word of ABBREVIATIONS."""
    window = text[max(0, dot - _LONGEST_ABBREVIATION - 1):dot]
    found = _WORD_BEFORE.search(window)
    if not found or found.group().lower() not in ABBREVIATIONS:
        return False
    before = dot - len(found.group()) - 1  # the character before the word, if any
    return before < 0 or not (text[before].isalpha() or text[before] == ".")


def _cuts(text: str) -> tuple[list[tuple[int, int]], int]:
    """(where each sentence ends, where the text after it resumes) in order, and how many of
    them a terminator made."""
    cuts = [(m.end(), m.end()) for m in _TERMINATOR.finditer(text)
            if not (m.group() == "." and _after_abbreviation(text, m.start()))]
    terminated = len(cuts)
    cuts += [(m.start(), m.end()) for m in _BLANK_LINE.finditer(text)]
    return sorted(cuts), terminated


def split_sentences(text: str) -> np.ndarray:
    """Sentence spans [n, 2] (start, end), end exclusive, in order, by the module's rule."""
    return _split(text)[0]


def _split(text: str) -> tuple[np.ndarray, int]:
    cuts, terminated = _cuts(text)
    spans, begin = [], 0
    for end, resume in cuts + [(len(text), len(text))]:
        piece = text[begin:end]
        content = piece.strip()
        if content:
            first = begin + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(content)))
        begin = max(begin, resume)
    return np.asarray(spans, np.int64).reshape(-1, 2), terminated


@dataclasses.dataclass(frozen=True)
class SentenceWindows:
    """One text's sentences as windows of seq_len inputs: where each starts in the ids, how
    many of its characters the window holds, and what was cut or left out."""

    starts: np.ndarray  # int32[n]: each kept sentence's first character
    lengths: np.ndarray  # int32[n]: its characters inside the window, 2 ≤ length ≤ seq_len + 1
    seq_len: int
    num_cut: int  # sentences longer than seq_len + 1 characters, cut to that
    chars_cut: int  # the characters those cuts dropped
    num_too_short: int  # sentences of one character: nothing to predict
    num_at_end: int  # sentences starting too close to the end for a window

    @classmethod
    def from_text(cls, text: str, seq_len: int, *, what: str = "training") -> SentenceWindows:
        """The sentences of `text`, whose characters are the ids one for one; `what` names
        the text in errors ("training", "held-out")."""
        if int(seq_len) != seq_len or seq_len < 1:
            raise DataError(f"seq_len must be a positive integer; got {seq_len!r}")
        spans, terminated = _split(text)
        if terminated == 0:
            raise DataError(f"objective 'sentences': the {len(text):,}-character {what} text has no "
                            f"sentence terminator ('.', '!' or '?' before whitespace or a closing quote)")
        starts, lengths = spans[:, 0], spans[:, 1] - spans[:, 0]
        long_enough = lengths >= 2
        if not long_enough.any():
            raise DataError(f"objective 'sentences': every sentence of the {what} text is shorter than "
                            "2 characters, so none has a character to predict")
        fits = starts + seq_len + 1 <= len(text)
        keep = long_enough & fits
        if not keep.any():
            raise DataError(f"objective 'sentences': every sentence of the {len(text):,}-character {what} "
                            f"text starts within {seq_len + 1} characters of its end; shorten data.seq_len")
        window = seq_len + 1
        cut = keep & (lengths > window)
        return cls(starts=starts[keep].astype(np.int32),
                   lengths=np.minimum(lengths[keep], window).astype(np.int32), seq_len=int(seq_len),
                   num_cut=int(cut.sum()), chars_cut=int((lengths[cut] - window).sum()),
                   num_too_short=int((~long_enough).sum()), num_at_end=int((long_enough & ~fits).sum()))

    def __len__(self) -> int:
        return len(self.starts)

    def position_weights(self, rows) -> np.ndarray:
        """float32[len(rows), seq_len]: 1 where the target is the row's sentence's own character."""
        scored = self.lengths[np.asarray(rows)] - 1
        return (np.arange(self.seq_len) < scored[:, None]).astype(np.float32)

    def describe(self) -> str:
        predicted = int((self.lengths - 1).sum())
        return (f"{len(self):,} sentences, {predicted:,} characters predicted; {self.num_cut:,} cut to "
                f"{self.seq_len + 1} characters ({self.chars_cut:,} characters dropped), "
                f"{self.num_too_short:,} of one character and {self.num_at_end:,} too close to the end "
                "left out")
