"""Is a checkpoint step still what was saved? Checksums written at save, checked at restore.

Orbax and TensorStore check no array's bytes, so a flipped bit restores silently as a wrong
number. Each step folder therefore gets a `checksums.json` (size and SHA-256 of every file) once
Orbax has committed it, and a restore compares the step with it before Orbax reads anything.
Steps saved without one (older workdirs, or a kill between the commit and the checksums) are
instead read through TensorStore synchronously first. Either way damage is reported in one line
before Orbax's own read can fail: that read runs its array reads concurrently on an event loop
it closes at the first error, and the reads still in flight then print "Event loop is closed"
tracebacks from TensorStore's threads.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import tensorstore as ts

from lstm import files

CHECKSUMS_FILE = "checksums.json"  # in each step folder


def describe_error(error) -> str:
    """One line for an Orbax/TensorStore error: the innermost cause (Orbax wraps TensorStore's
    message in one that only points at a 40-line spec), without the spec TensorStore appends."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text.split(" [tensorstore_spec=")[0][:300]


def verify_step(folder: Path, unreadable) -> None:
    """Raises `unreadable(reason)` unless every file of the step folder is as it was saved; a
    step saved without checksums is read through instead (see the module docstring)."""
    try:
        saved = json.loads((folder / CHECKSUMS_FILE).read_text(encoding="utf-8"))["files"]
        if not isinstance(saved, dict):
            raise TypeError("no table of files")
    except FileNotFoundError:
        read_through(folder, unreadable)
        return
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise unreadable(f"its {CHECKSUMS_FILE} is damaged ({describe_error(e)})") from None
    for name, expected in sorted(saved.items()):
        try:
            size, digest = size_and_digest(folder / name)
        except FileNotFoundError:
            raise unreadable(f"{name} is missing") from None
        except OSError as e:
            raise unreadable(f"{name} cannot be read ({e.strerror})") from None
        try:
            if size != expected["bytes"]:
                raise unreadable(f"{name} has {size:,} bytes where {expected['bytes']:,} "
                                 "were saved")
            if digest != expected["sha256"]:
                raise unreadable(f"{name} has changed since it was saved")
        except (KeyError, TypeError):
            raise unreadable(f"its {CHECKSUMS_FILE} is damaged (entry {name})") from None


def size_and_digest(path: Path) -> tuple[int, str]:
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        return file.tell(), digest


def write_checksums(folder: Path) -> None:
    """Writes `folder`/checksums.json: the size and SHA-256 of every file in the step."""
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != CHECKSUMS_FILE:
            size, digest = size_and_digest(path)
            sums[name] = {"bytes": size, "sha256": digest}
    files.write_atomically(folder / CHECKSUMS_FILE, json.dumps({"files": sums}, indent=1))


# The JSON files Orbax writes in a step; the arrays sit in an OCDBT database beside them.
_JSON_FILES = ("_CHECKPOINT_METADATA", "metrics/metrics", "extra/metadata", "state/_METADATA",
               "state/_sharding", "state/array_metadatas/*")


def read_through(folder: Path, unreadable) -> None:
    """For a step saved without checksums: parses its JSON files and reads every array through
    TensorStore, synchronously, so damage raises `unreadable(reason)` here (see the module
    docstring). Bit flips inside compressed array data can still pass unnoticed."""
    for pattern in _JSON_FILES:
        for path in sorted(folder.glob(pattern)):
            try:
                json.loads(path.read_bytes())
            except (OSError, ValueError) as e:
                name = path.relative_to(folder).as_posix()
                raise unreadable(f"{name} is damaged ({describe_error(e)})") from None
    state = folder / "state"
    if not (state / "manifest.ocdbt").exists():
        return  # not the layout Orbax writes today: leave the reading to Orbax
    base = {"driver": "ocdbt", "base": f"file://{state}/"}
    array = None
    try:
        keys = ts.KvStore.open(base).result().list().result()
        suffixes = {b"/.zarray": "zarr", b"/zarr.json": "zarr3"}
        for key in sorted(keys):
            for suffix, driver in suffixes.items():
                if key.endswith(suffix):
                    array = key[: -len(suffix)].decode()
                    spec = {"driver": driver, "kvstore": {**base, "path": f"{array}/"}}
                    ts.open(spec, open=True, read=True).result().read().result()
    except Exception as e:  # TensorStore raises ValueError for most damage, others for some
        where = f"array {array}" if array else "the array database"
        # The step's folder is already in the message, and the status code says nothing more.
        reason = re.sub(r'^[A-Z_]+: | in OCDBT database at local file "[^"]*"', "", describe_error(e))
        raise unreadable(f"{where} cannot be read ({reason})") from None
