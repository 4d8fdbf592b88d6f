"""Data pipeline against hand-written expectations: cleaning, vocabulary, the memory-mapped
cache, the split and the download (urllib faked: tests never touch the network). The batch
schedules are tested in test_schedules.py."""
import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lstm import cleaning, data, files

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

GUTENBERG = (
    "The Project Gutenberg EBook of Tiny Tale\r\n"
    "Licence words.\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK TINY TALE ***\r\n"
    "\r\n"
    "TINY TALE\r\n"
    "Once upon a time.\r\n"
    "\r\n"
    "THE END\r\n"
    "\r\n\r\n"
    "End of Project Gutenberg's Tiny Tale, by Nobody\r\n"
    "\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK TINY TALE ***\r\n"
    "More licence.\r\n"
    "*** START: FULL LICENSE ***\r\n"
)
GUTENBERG_BODY = "\nTINY TALE\nOnce upon a time.\n\nTHE END"


def write(tmp_path, content, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------- read_text
@pytest.mark.parametrize("article", ["THIS", "THE"])
def test_gutenberg_header_and_footer_are_dropped(tmp_path, article):
    path = write(tmp_path, GUTENBERG.replace("THIS PROJECT", f"{article} PROJECT"))
    assert cleaning.read_text(path) == GUTENBERG_BODY


def test_text_without_markers_is_kept_whole(tmp_path):
    path = write(tmp_path, "no markers here\n\n*** START: FULL LICENSE ***\n")
    assert cleaning.read_text(path) == "no markers here\n\n*** START: FULL LICENSE ***\n"
    raw = cleaning.read_text(write(tmp_path, GUTENBERG), strip_gutenberg=False)
    assert raw.startswith("The Project") and raw.endswith("*** START: FULL LICENSE ***\n")


def test_bom_crlf_and_lone_cr_become_plain_lf(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfone\r\ntwo\rthree\n\r\n")
    assert cleaning.read_text(path) == "one\ntwo\nthree\n\n"


def test_crlf_option_restores_windows_line_endings_everywhere(tmp_path, monkeypatch):
    path = write(tmp_path, b"\xef\xbb\xbfOne\r\ntwo\rthree\n\r\n")
    expected = "one\r\ntwo\r\nthree\r\n\r\n"
    assert cleaning.read_text(path, lowercase=True, crlf=True) == expected
    # "\r" is added after the allowed-characters filter, so the filter need not list it
    assert cleaning.read_text(path, allowed_chars="entw\n", crlf=True) == "ne\r\ntw\r\ntee\r\n\r\n"
    assert cleaning.clean_text("A\nb\r\n", lowercase=True, crlf=True) == "a\r\nb\r\n"
    monkeypatch.setattr(cleaning, "_MAX_CARRIED_CHARS", 0)
    for chunk_bytes in (1, 2, 3, 64):  # a streamed CRLF pair cut anywhere still becomes one pair
        vocab, ids = data.encode_file(path, None, cache_dir=tmp_path / f"c{chunk_bytes}",
                                      lowercase=True, crlf=True, chunk_bytes=chunk_bytes)
        assert vocab.decode(ids) == expected


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    path = write(tmp_path, b"abc\n\xc3\xa9\xffdef")  # é is fine, 0xff at offset 6 is not
    with pytest.raises(cleaning.DataError, match=r"corpus\.txt.*0xff.*offset 6") as info:
        cleaning.read_text(path)
    assert "\n" not in str(info.value)


def test_missing_empty_and_emptied_files_raise(tmp_path):
    with pytest.raises(cleaning.DataError, match="nothere.txt"):
        cleaning.read_text(tmp_path / "nothere.txt")
    with pytest.raises(cleaning.DataError, match="empty"):
        cleaning.read_text(write(tmp_path, b""))
    with pytest.raises(cleaning.DataError, match="no text left"):
        cleaning.read_text(write(tmp_path, "abc"), allowed_chars="xyz")


def test_lowercase_ascii_only_and_allowed_chars(tmp_path):
    path = write(tmp_path, "Héllo, World!\n")
    assert cleaning.read_text(path, lowercase=True) == "héllo, world!\n"
    assert cleaning.read_text(path, ascii_only=True) == "Hllo, World!\n"
    letters = "abcdefghijklmnopqrstuvwxyz \n"
    assert cleaning.read_text(path, lowercase=True, allowed_chars=letters) == "hllo world\n"
    assert cleaning.read_text(path, allowed_chars="") == "Héllo, World!\n"  # "" means keep all


@pytest.mark.skipif(not (SHARED_DATA / "wonderland.txt").exists(), reason="no ../shared/data")
def test_wonderland_matches_the_reference_count():
    text = cleaning.read_text(SHARED_DATA / "wonderland.txt", lowercase=True)
    assert len(text) == 144_440 and len(set(text)) == 45  # data/README.md
    assert text.lstrip("\n").startswith("alice's adventures in wonderland")
    assert text.endswith("the end")
    # The tutorial's Windows copy: one "\r" more per line (3,348 lines) and a 46th symbol
    windows = cleaning.read_text(SHARED_DATA / "wonderland.txt", lowercase=True, crlf=True)
    assert len(windows) == 144_440 + 3_348 and len(set(windows)) == 46
    assert windows.count("\r\n") == windows.count("\n") == 3_348


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare.txt").exists(), reason="no ../shared/data")
def test_tiny_shakespeare_split_matches_nanogpt():
    cfg = ml_collections.ConfigDict(dict(
        path=str(SHARED_DATA / "tinyshakespeare.txt"), strip_gutenberg=True, lowercase=False,
        allowed_chars="", ascii_only=False, val_fraction=0.1, download=False))
    corpus = data.load_corpus(cfg)
    assert (len(corpus.train), len(corpus.val), len(corpus.vocab)) == (1_003_854, 111_540, 65)


# -------------------------------------------------------------------------------- Vocab
def test_vocab_maps_sorted_characters_to_their_rank():
    vocab = data.Vocab.from_text("hello world")
    assert vocab.chars == (" ", "d", "e", "h", "l", "o", "r", "w") and len(vocab) == 8
    ids = vocab.encode("hello")
    assert ids.dtype == np.uint8 and ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello" and vocab.decode(jnp.array([7, 5])) == "wo"


def test_vocab_names_unknown_characters_or_skips_them():
    vocab = data.Vocab.from_text("abc")
    with pytest.raises(cleaning.DataError, match=r"2 characters .* 'z', 'é'") as info:
        vocab.encode("abzcé")
    assert "\n" not in str(info.value)
    with pytest.raises(cleaning.DataError, match=r"'\\r'"):  # invisible characters show as repr
        vocab.encode("a\r")
    assert vocab.encode("abzcé", unknown="skip").tolist() == [0, 1, 2]


def test_vocab_json_round_trip_keeps_any_unicode(tmp_path):
    vocab = data.Vocab.from_text("naïve 🙂 日本\n\"\\")
    assert data.Vocab.from_json(vocab.to_json()) == vocab
    vocab.save(tmp_path / "vocab.json")
    assert data.Vocab.load(tmp_path / "vocab.json") == vocab
    assert json.loads(vocab.to_json())["chars"] == sorted(set("naïve 🙂 日本\n\"\\"))
    with pytest.raises(cleaning.DataError):
        data.Vocab.from_json("{}")


def test_large_vocabularies_get_wider_ids():
    vocab = data.Vocab.from_text("".join(map(chr, range(0x4E00, 0x4E00 + 300))))
    ids = vocab.encode(chr(0x4E00 + 299))
    assert ids.dtype == np.uint16 and ids.tolist() == [299]


# ----------------------------------------------------------------- memory-mapped corpora
def test_streamed_encoding_equals_in_memory_and_is_reused(tmp_path, monkeypatch):
    # Multi-byte UTF-8, CRLF, lone CR, and a final sigma whose lower case depends on context.
    body = "Çà et là, naïve 🙂 日本語\r\nline two\rline three ΟΔΟΣ ΟΔΟΣ\r\n" * 7
    path = write(tmp_path, "\ufeff" + GUTENBERG.replace("Once upon a time.", body))
    expected = cleaning.read_text(path, lowercase=True)
    vocab = data.Vocab.from_text(expected)
    for chunk_bytes in (1, 2, 3, 5, 7, 64):  # cuts every UTF-8 sequence and CRLF somewhere
        cache = tmp_path / f"cache{chunk_bytes}"
        got_vocab, ids = data.encode_file(path, None, cache_dir=cache, lowercase=True,
                                          chunk_bytes=chunk_bytes)
        assert got_vocab == vocab and isinstance(ids, np.memmap) and not ids.flags.writeable
        np.testing.assert_array_equal(ids, vocab.encode(expected))
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".bin") and files[1].endswith(".json")

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(cleaning, "clean_pieces", no_second_pass)
    again_vocab, again = data.encode_file(path, None, cache_dir=cache, lowercase=True)
    assert again_vocab == vocab and np.array_equal(again, vocab.encode(expected))


def test_lines_longer_than_the_carry_limit_still_keep_crlf_whole(tmp_path, monkeypatch):
    path = write(tmp_path, "ab\r\ncé\r\r\n🙂d\re\r\n" * 5)
    expected = cleaning.read_text(path)
    assert expected == "ab\ncé\n\n🙂d\ne\n" * 5
    monkeypatch.setattr(cleaning, "_MAX_CARRIED_CHARS", 0)  # every chunk is cut where it ends
    for chunk_bytes in (1, 2, 3, 4, 5):
        vocab, ids = data.encode_file(path, None, cache_dir=tmp_path / f"c{chunk_bytes}",
                                      chunk_bytes=chunk_bytes)
        assert vocab.decode(ids) == expected


def test_streamed_encoding_reports_bad_bytes_and_unknown_characters(tmp_path):
    path = write(tmp_path, b"abcdef\xe9gh")  # 0xe9 opens a sequence that 'g' does not continue
    for chunk_bytes in (4, 7, 64):  # 7: the bad byte is carried over into the next chunk
        with pytest.raises(cleaning.DataError, match="offset 6"):
            data.encode_file(path, None, cache_dir=tmp_path / "c", chunk_bytes=chunk_bytes)
    with pytest.raises(cleaning.DataError, match="'x'"):
        data.encode_file(write(tmp_path, "abx"), data.Vocab(("a", "b")), cache_dir=tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix in (".bin", ".tmp")]


def config(path, **overrides):
    fields = dict(path=str(path), strip_gutenberg=True, lowercase=True, allowed_chars=None,
                  ascii_only=False, val_fraction=0.25, download=False)
    return ml_collections.ConfigDict({**fields, **overrides})


def test_load_corpus_large_file_path_matches_small_file_path(tmp_path, monkeypatch):
    path = write(tmp_path, GUTENBERG)
    small = data.load_corpus(config(path))
    monkeypatch.setattr(data, "IN_MEMORY_LIMIT_BYTES", 0)
    large = data.load_corpus(config(path), cache_dir=tmp_path / "cache")
    assert isinstance(large.train, np.memmap) and large.vocab == small.vocab
    np.testing.assert_array_equal(large.train, small.train)
    np.testing.assert_array_equal(large.val, small.val)
    assert small.vocab.decode(np.concatenate([small.train, small.val])) == GUTENBERG_BODY.lower()


# -------------------------------------------------------------------------------- split
def test_split_holds_out_a_contiguous_tail():
    ids = np.arange(10)
    train, val = data.split_tail(ids, 0.2)
    assert train.tolist() == list(range(8)) and val.tolist() == [8, 9]
    train, val = data.split_tail(ids, 0.0)
    assert train.tolist() == list(range(10)) and val is None
    for bad in (1.0, -0.1, float("nan"), "0.1"):
        with pytest.raises(cleaning.DataError, match="val_fraction"):
            data.split_tail(ids, bad)
    with pytest.raises(cleaning.DataError, match="empty"):
        data.split_tail(ids, 0.95)  # int(10 * 0.05) = 0 training tokens


def test_load_corpus_rejects_bad_fraction_and_missing_file(tmp_path):
    with pytest.raises(cleaning.DataError, match="val_fraction"):
        data.load_corpus(config(write(tmp_path, "abc"), val_fraction=1.5))
    with pytest.raises(cleaning.DataError, match="other.txt"):
        data.load_corpus(config(tmp_path / "other.txt", download=True))
    with pytest.raises(cleaning.DataError, match="wonderland.txt not found"):
        data.load_corpus(config(tmp_path / "wonderland.txt"))


# ----------------------------------------------------------------------------- download
def fake_urlopen(responses):
    """urlopen that answers each URL from `responses` (bytes, or an exception to raise)."""
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        answer = responses[url]
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer)

    return urlopen, calls


def test_download_saves_verified_bytes_trying_the_fallback(tmp_path, monkeypatch):
    book = GUTENBERG.encode()
    monkeypatch.setattr(data, "WONDERLAND_SHA256", hashlib.sha256(book).hexdigest())
    first, fallback = data.WONDERLAND_URLS
    urlopen, calls = fake_urlopen({first: urllib.error.URLError("offline"), fallback: book})
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    corpus = data.load_corpus(config(tmp_path / "data" / "wonderland.txt", download=True,
                                     val_fraction=0.0))
    assert calls == [first, fallback]
    assert (tmp_path / "data" / "wonderland.txt").read_bytes() == book
    assert corpus.val is None and corpus.vocab.decode(corpus.train) == GUTENBERG_BODY.lower()


def test_download_with_wrong_checksum_writes_nothing(tmp_path, monkeypatch):
    urlopen, _ = fake_urlopen({url: b"not the book" for url in data.WONDERLAND_URLS})
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    dest = tmp_path / "data" / "wonderland.txt"
    with pytest.raises(cleaning.DataError, match="wonderland.txt not found and download fail") as info:
        data.load_corpus(config(dest, download=True))
    assert "sha256" in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists()
    assert not dest.parent.exists() or not any(dest.parent.iterdir())  # no temp file left either


# --------------------------------------------------------------------------- atomic writes
def test_saved_files_appear_whole_or_not_at_all(tmp_path):
    target = tmp_path / "new" / "vocab.json"
    data.Vocab(("a", "b")).save(target)  # the vocabulary, the cache and the download share the writer
    assert data.Vocab.load(target) == data.Vocab(("a", "b"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not mkstemp's 0600
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_writer(target) as file:
            file.write(b"half a vocabulary")
            raise RuntimeError("killed mid-write")
    assert data.Vocab.load(target) == data.Vocab(("a", "b"))
    assert [p.name for p in target.parent.iterdir()] == ["vocab.json"]  # no temporary left
