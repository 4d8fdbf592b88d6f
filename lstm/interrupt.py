"""Ctrl-C and SIGTERM during training: finish the step, save it, stop (lstm/train.py uses this).

Ctrl-C is how a researcher stops a run, and SIGTERM how a cluster scheduler preempts one; both
used to lose every step since the last save. While `train_and_evaluate` runs, `StopOnSignals`
turns the first SIGINT or SIGTERM into a request the loop reads after each dispatch: it saves
that step and raises `TrainingInterrupted`. A second signal raises it at once, wherever the
loop is, except inside a checkpoint save, which it lets finish first: abandoned mid-write,
Orbax's writer thread aborts the interpreter at exit (measured: SIGABRT, "terminate called
after throwing"). Checkpoints are written into a temporary folder and renamed into place
(lstm/checkpoint.py), so the ones already on disk stay whole either way.

Nothing outlives the call: the previous handlers come back when it ends, and outside the main
thread (where Python cannot install handlers) nothing is installed at all.
"""
from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal. A KeyboardInterrupt, so code that handles Ctrl-C (a notebook,
    a caller's own `except KeyboardInterrupt`) still does; `exit_code` is the shell's 128 + the
    signal (130 for SIGINT, 143 for SIGTERM), and str(e) is one line for the terminal.

    `step` is the step saved before stopping, or None when a second signal stopped the run at
    once; resuming then starts from the latest checkpoint on disk."""

    def __init__(self, signum: int, step: int | None):
        self.signum, self.step = int(signum), step
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        if step is None:
            message = (f"stopped at once by a second {name}; run the same command to resume "
                       "from the latest checkpoint")
        else:
            message = f"stopped at step {step} ({name}); run the same command to resume"
        super().__init__(message)


class StopOnSignals:
    """Records the first SIGINT/SIGTERM (`signum`) between `install()` and `restore()`; the
    second raises TrainingInterrupted at once. `restore()` is safe to call whether or not
    `install()` ran, and more than once."""

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict = {}
        self._deferring = False
        self._insisted: int | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal would raise; the caller's own handling stays in charge
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            # None: a handler installed from C, which Python cannot reinstate; the default
            # is the nearest it can.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    @contextlib.contextmanager
    def deferred(self):
        """Holds a second signal back until the block ends (a checkpoint save), then raises."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._insisted is not None:
            self._insist(self._insisted)

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif self._deferring:
            self._insisted = signum
        else:
            self._insist(signum)

    def _insist(self, signum):
        # Hand the signals back first, so a third one does what it did before.
        self.restore()
        raise TrainingInterrupted(signum, None)
