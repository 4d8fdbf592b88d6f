"""Writing a file so that no reader, and no process killed mid-write, ever sees half of it.

Everything the package writes for later (metrics, plots, checkpoints' config and vocabulary,
the encoded-corpus cache, a downloaded or generated corpus) goes through `atomic_writer`: the
bytes go to a temporary sibling that is renamed over the target only once complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

# Read once: os.umask can only be read by setting it, and setting it is process-wide, so
# doing it per write could race a thread that creates files meanwhile.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb") -> Iterator[IO]:
    """An open temporary sibling of `path` ("wb", or "w" for UTF-8 text) that replaces `path`
    when the block ends without an exception, and is deleted when it ends with one. Parent
    folders are created. The file gets the permissions a plain open() would give it."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w'; got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp's unique name keeps two threads or processes writing one target apart.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as file:
            yield file
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would surprise the next reader
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path, content: bytes | str) -> Path:
    """Writes `content` (bytes, or str as UTF-8) to `path` through `atomic_writer`."""
    with atomic_writer(path, "w" if isinstance(content, str) else "wb") as file:
        file.write(content)
    return Path(path)
