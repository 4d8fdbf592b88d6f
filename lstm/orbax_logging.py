"""Orbax's logging, quietened for the length of a call into it and no longer.

Orbax logs through absl, whose logger is the process's: a dozen INFO lines per save, a warning
for every save without a metric (latest-only checkpoints are saved so on purpose), and errors
about damage that lstm/checkpoint.py's restore() reports itself, on one line. `quieted()`
filters those on absl's logger while a call into Orbax runs and removes the filter when the
outermost call returns, so no library call leaves the process's logging changed.
"""
from __future__ import annotations

import contextlib
import functools
import logging as std_logging
import os
import threading

from absl import logging

# Orbax logs these when a step's _CHECKPOINT_METADATA is missing or damaged (the last with the
# whole file's content), then carries on; restore() reports that damage itself, on one line.
_REPORTED_BY_RESTORE = ("Metadata file does not exist", "Failed to read Metadata file",
                        "Failed to json parse Metadata file")


class _QuietOrbax(std_logging.Filter):
    """Drops Orbax's INFO chatter (a dozen lines per save), its warning that a save carried
    no metric, which is how latest-only checkpoints are saved on purpose, and its errors about
    damage that restore() reports; other warnings pass."""

    def filter(self, record):
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        message = record.getMessage()
        return (
            record.levelno >= std_logging.WARNING
            and "provide metrics" not in message
            and not message.startswith(_REPORTED_BY_RESTORE)
        )


_QUIET_ORBAX = _QuietOrbax()
_quiet_depth, _quiet_lock = 0, threading.Lock()


@contextlib.contextmanager
def quieted():
    """_QuietOrbax on absl's logger (where Orbax logs) for the duration of a call into Orbax
    only: the process's logging is as it was once the call returns. Nested calls share it."""
    global _quiet_depth
    with _quiet_lock:
        if _quiet_depth == 0:
            logging.get_absl_logger().addFilter(_QUIET_ORBAX)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logging.get_absl_logger().removeFilter(_QUIET_ORBAX)


class Quietly:
    """An Orbax object whose every method call runs `quieted`."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def quietly(*args, **kwargs):
            with quieted():
                return value(*args, **kwargs)
        return quietly
