"""Where our training step's time goes, op by op: a `jax.profiler` trace of a few steps of the
benchmark's step (lstm.train's jitted program, as `scripts/benchmark.py train` times it),
summed per XLA op.

    python scripts/research/profile_step.py                         # bigger shape, lstm, 3 steps
    python scripts/research/profile_step.py --shape=shakespeare --cell=layernorm --top=40
    python scripts/research/profile_step.py --trace_dir=runs/profile  # keep the Perfetto trace

Each op's *self* time is counted: an event's duration minus the events nested inside it on the
same thread, so a `while` (a scan) shows only its own overhead and its body's ops show their
work. Times are per step (the sum over the traced steps, divided by their number). The trace
itself (`perfetto_trace.json.gz`) opens in ui.perfetto.dev.
"""
import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lstm import cli  # noqa: E402

_SHAPE = flags.DEFINE_string("shape", "bigger", "Config whose shape is profiled (small, bigger, shakespeare).")
_CELL = flags.DEFINE_string("cell", "lstm", "Cell (lstm/cells/).")
_MATMUL_DTYPE = flags.DEFINE_string("matmul_dtype", "float32", "float32 or bfloat16 matmul operands.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps traced (after two warm-up steps).")
_TOP = flags.DEFINE_integer("top", 25, "Ops listed, by self time.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Keep the trace here (default: a temporary folder).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the tables.")
_KEEP_FREED_MEMORY = flags.DEFINE_bool("keep_freed_memory", True,
                                       "Keep freed host buffers for reuse (lstm/host_memory.py), as training does.")


def self_times(events) -> dict:
    """{hlo_op: [self µs, count]} over the complete ('X') events that name an XLA op."""
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            by_thread[(event.get("pid"), event.get("tid"))].append(event)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, time of its children]
        for event in thread_events + [None]:
            while stack and (event is None or event["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"]):
                done, children = stack.pop()
                op = (done.get("args") or {}).get("hlo_op")
                if op:
                    totals[op][0] += done["dur"] - children
                    totals[op][1] += 1
                if stack:
                    stack[-1][1] += done["dur"]
            if event is not None:
                stack.append([event, 0.0])
    return dict(totals)


def kind(op: str) -> str:
    """An op's family: its name without the numeric suffix XLA appends (fusion.12 → fusion)."""
    return re.sub(r"[._]?\d+$", "", op)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _STEPS.value < 1 or _TOP.value < 1:
        cli.fail("--steps and --top must be >= 1")
    from lstm import host_memory
    if _KEEP_FREED_MEMORY.value:
        host_memory.keep_freed_memory()
    import jax

    from lstm import environment
    from lstm.analysis.tables import text_table
    from lstm.bench import train_step as bench_train

    with cli.one_line_errors(ValueError):
        config = cli.load_config_file(ROOT / "configs" / f"{_SHAPE.value}.py")
        shape = bench_train.shape_of(_SHAPE.value, config)
        step, _ = bench_train.make_our_step(config, shape, unroll=1, matmul_dtype=_MATMUL_DTYPE.value,
                                            cell=_CELL.value)
    for _ in range(2):
        step()
    trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="profile_step_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(_STEPS.value):
            step()
    traces = sorted(Path(trace_dir).glob("**/perfetto_trace.json.gz"), key=os.path.getmtime)
    if not traces:
        cli.fail(f"the profiler wrote no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(traces[-1], "rt", encoding="utf-8") as file:
        trace = json.load(file)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ops = self_times(events)
    steps = _STEPS.value
    per_step = {op: (us / steps / 1e3, count / steps) for op, (us, count) in ops.items()}
    families = collections.defaultdict(lambda: [0.0, 0.0])
    for op, (ms, calls) in per_step.items():
        families[kind(op)][0] += ms
        families[kind(op)][1] += calls
    total = sum(ms for ms, _ in per_step.values())
    machine = environment.describe_machine()
    if _JSON.value:
        print(json.dumps({"shape": _SHAPE.value, "cell": _CELL.value, "matmul_dtype": _MATMUL_DTYPE.value,
                          "steps": steps, "machine": machine, "trace": str(traces[-1]), "total_ms_per_step": total,
                          "ops": {op: {"ms_per_step": ms, "calls_per_step": calls}
                                  for op, (ms, calls) in per_step.items()}}, indent=1))
        return
    title = (f"{_SHAPE.value}, {_CELL.value} cell, {_MATMUL_DTYPE.value} matmuls: self time per step over "
             f"{steps} traced steps, {total:.1f} ms of XLA ops per step\non {machine}")
    top = sorted(per_step.items(), key=lambda item: -item[1][0])[:_TOP.value]
    print(text_table(title, ("op", "ms/step", "share", "calls/step"),
                     [[op, f"{ms:.2f}", f"{100 * ms / total:.1f}%", f"{calls:g}"] for op, (ms, calls) in top],
                     left={0}))
    print()
    print(text_table("by family", ("family", "ms/step", "share", "calls/step"),
                     [[name, f"{ms:.2f}", f"{100 * ms / total:.1f}%", f"{calls:g}"]
                      for name, (ms, calls) in sorted(families.items(), key=lambda item: -item[1][0])],
                     left={0}))
    print(f"\ntrace: {traces[-1]}")


if __name__ == "__main__":
    cli.run(main)
