"""Where a run's numbers go: a progress line, metrics.jsonl, TensorBoard events and loss.png.

metrics.jsonl is the record of truth (one JSON object per event, with `step`, `event` and
`wall_time`); the plot and the curves in docs are made from it, never from console text.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from lstm import curves, files

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def read_metrics(workdir) -> list[dict]:
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill mid-write; nothing after it is trustworthy
    return records


class MetricLogger:
    """Writes every record to metrics.jsonl and TensorBoard; prints progress to the terminal.

    On resume, records past the restored step are dropped first: they came from the part of
    the interrupted run that is about to be recomputed, and would otherwise appear twice.
    """

    def __init__(self, workdir, *, total_steps: int, resume_step: int = 0, stream=None,
                 primary: bool = True):
        # In a multi-process job every process runs the loop; only the primary one writes.
        self.primary = primary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.stream = stream or sys.stderr
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._start = time.time()
        self._start_step = resume_step
        self._file = self._tensorboard = None
        if not primary:
            return
        kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
        path = self.workdir / METRICS_FILE
        files.write_atomically(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a")
        self._tensorboard = None
        try:
            from tensorboardX import SummaryWriter
            self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:  # TensorBoard events are a convenience; the JSONL is the record
            pass

    def write(self, record: dict) -> None:
        if not self.primary:
            return
        record = {"wall_time": round(time.time(), 3), **record}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "wall_time") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"{record.get('event', 'train')}/{key}", value, record["step"])
            if "sample" in record:
                self._tensorboard.add_text("sample", record["sample"], record["step"])

    def progress(self, step: int, loss: float, chars_per_step: int) -> None:
        if not self.primary:
            return
        elapsed = max(time.time() - self._start, 1e-9)
        steps_per_s = (step - self._start_step) / elapsed
        eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else math.inf
        line = (f"step {step}/{self.total_steps} loss {loss:.4f} {steps_per_s:.2f} steps/s "
                f"{steps_per_s * chars_per_step:,.0f} chars/s ETA {clock_time(eta)}")
        if self.is_tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.primary:
            return
        self.stream.write(("\n" if self.is_tty else "") + text + "\n")
        self.stream.flush()

    def plot(self) -> None:
        if not self.primary:
            return
        records = read_metrics(self.workdir)
        figure = curves.loss_figure([curves.RunRecords(records)], title=self.workdir.name)
        curves.save_png(figure, self.workdir / PLOT_FILE, dpi=80)

    def close(self) -> None:
        if not self.primary:
            return
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self.is_tty:
            self.stream.write("\n")


def clock_time(seconds: float) -> str:
    """h:mm:ss, rounded to the second; "?" when unknown (infinite or NaN)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
