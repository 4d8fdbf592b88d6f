"""The large-corpus measurement of docs/scaling.md, and the per-step all-reduce sizes.

    python scripts/research/make_corpus.py --chars=500000000 --out=/tmp/lstm_scaling/corpus_500M.txt
    python scripts/research/measure_scaling.py --corpus=/tmp/lstm_scaling/corpus_500M.txt

Sections (--sections, default all three):
  encode     load_corpus on the large file, first with its cache removed, then the cache hit;
  train      train_and_evaluate for --steps steps of each --configs config, on the small corpus
             (the model's own baseline) and on the large one, alternating, --repeats times;
  allreduce  parameters of each config's model and the bytes of its gradient all-reduce.

Every encode/train measurement runs in a fresh subprocess, so its peak RSS (VmHWM, which
counts file-backed pages of memory maps too) is that of the whole process and nothing else. A
thread samples /proc/self/status every 20 ms to split the peak into anonymous and file-backed
memory. Steady-state steps/s come from the run's own metrics.jsonl, from its first logged step
(after compilation) to its last. The CPU is shared: each run also reports how many cores other
processes kept busy while it ran (from /proc/stat, less the run's own CPU time).

Runs on whatever JAX_PLATFORMS selects (set JAX_PLATFORMS=cpu on a CPU-only machine; on a GPU
machine leave it unset to measure the GPU). Prints a table, then one JSON object on the last
line (also written to --json if given).
"""
from __future__ import annotations

import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lstm import cli  # noqa: E402

_CORPUS = flags.DEFINE_string("corpus", "/tmp/lstm_scaling/corpus_500M.txt",
                              "The large corpus (scripts/research/make_corpus.py makes one).")
_SMALL = flags.DEFINE_string("small", str(ROOT / "data" / "wonderland.txt"),
                             "The small corpus whose run is the model's own baseline.")
_SECTIONS = flags.DEFINE_list("sections", ["encode", "train", "allreduce"], "The measurements to make.")
_CONFIGS = flags.DEFINE_list("configs", ["small"], "Names under configs/ (encode uses the first).")
_STEPS = flags.DEFINE_integer("steps", 300, "train: steps of each run.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 25, "train: steps between logged steps, the rate's intervals.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "train: runs of each config on each corpus.")
_COLLECTIVE_DEVICES = flags.DEFINE_integer(
    "collective_devices", 4, "allreduce: simulated CPU devices the step is compiled for (1: skip).")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None, "train: where the runs go (default: a new folder in /tmp).")
_JSON = flags.DEFINE_string("json", None, "Also write the JSON record to this file.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: one measurement's JSON spec; the script runs "
                              "itself with it in a fresh process for each measurement.")

RESULT_PREFIX = "MEASURE_SCALING_RESULT "
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
ALLREDUCE_CONFIGS = ("tiny", "small", "bigger", "shakespeare")
MIB = 1 << 20


# ------------------------------------------------------------------------- in the subprocess
def read_status() -> dict:
    """The memory lines of /proc/self/status, in bytes."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in STATUS_FIELDS:
                values[key] = int(rest.split()[0]) * 1024
    return values


class PeakSampler:
    """Largest value of each /proc/self/status memory field, sampled every `interval` s."""

    def __init__(self, interval=0.02):
        self.interval, self.peak = interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        for key, value in read_status().items():
            self.peak[key] = max(self.peak.get(key, 0), value)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}


def collective_bytes(hlo_text: str) -> dict:
    """{op: [count, bytes]} of the cross-device collectives in a compiled HLO module (bytes of
    each op's result; for an all-reduce that is what every device contributes and receives)."""
    pattern = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
    found = {}
    for line in hlo_text.splitlines():
        match = pattern.search(line)
        if match:
            nbytes = sum(_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
                         for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", match.group(1))
                         if dtype in _DTYPE_BYTES)
            entry = found.setdefault(match.group(2), [0, 0])
            entry[0] += 1
            entry[1] += nbytes
    return found


def collectives_worker(spec: dict) -> dict:
    """Compiles one training step of each config for all the (simulated) devices and reads off
    what crosses between them."""
    import jax
    import numpy as np

    from lstm import distributed, train
    from lstm import state as run_state
    mesh = distributed.data_mesh()
    by_batch, everywhere = distributed.batch_sharding(mesh, batch_axis=1), distributed.replicated(mesh)
    out = {"devices": jax.device_count(), "configs": {}}
    for name, vocab_size in spec["configs"].items():
        config = cli.load_config_file(ROOT / "configs" / f"{name}.py")
        batch = config.train.batch_size
        graphdef, optimizer, state = run_state.init_train_state(config, vocab_size)
        state = train.place_state(state, mesh)
        steps = train.make_train_steps(graphdef, optimizer, config)
        args = (state, distributed.global_array(np.zeros(4096, np.uint8), everywhere),
                distributed.global_array(np.zeros((1, batch), np.int32), by_batch),
                distributed.global_array(np.ones((1, batch), np.float32), by_batch),
                distributed.global_array(np.array([True]), everywhere))
        out["configs"][name] = collective_bytes(steps.lower(*args).compile().as_text())
    return out


def worker(spec: dict) -> dict:
    if spec["kind"] == "collectives":
        return collectives_worker(spec)
    import jax
    jax.devices()  # start the backend first: its memory is part of the baseline
    from lstm import data, train
    result = {"after_import": read_status()}
    config = cli.load_config_file(ROOT / "configs" / f"{spec['config']}.py", spec.get("overrides", {}))
    with PeakSampler() as sampler:
        started = time.perf_counter()
        if spec["kind"] == "encode":
            corpus = data.load_corpus(config.data)
            result.update(num_tokens=len(corpus.train) + (len(corpus.val) if corpus.val is not None else 0),
                          vocab_size=len(corpus.vocab), memmap=type(corpus.train).__name__ == "memmap")
        else:
            summary = train.train_and_evaluate(config, spec["workdir"])
            result["summary"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        result["seconds"] = time.perf_counter() - started
    result.update(peak=sampler.peak, final=read_status(),
                  ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  devices=jax.device_count())
    return result


# ---------------------------------------------------------------------------- in the parent
def cpu_busy_seconds() -> float:
    """Seconds of CPU time the whole machine has spent busy (not idle/iowait) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_worker(spec: dict, extra_env=None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(extra_env or {})}
    busy0, wall0 = cpu_busy_seconds(), time.perf_counter()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    wall = time.perf_counter() - wall0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    if process.returncode != 0:
        raise SystemExit(f"error: worker {spec} failed:\n{process.stderr[-3000:]}")
    line = next(l for l in reversed(process.stdout.splitlines()) if l.startswith(RESULT_PREFIX))
    result = json.loads(line[len(RESULT_PREFIX):])
    result.update(wall_s=wall, own_cpu_s=own,
                  others_cores=max(cpu_busy_seconds() - busy0 - own, 0.0) / wall,
                  loadavg_1m_after=os.getloadavg()[0])
    return result


def steady_rate(workdir) -> tuple[float, int, float, float]:
    """(steps/s, steps, seconds) between the first and last logged training step (the first
    log point comes after compilation), and the best steps/s of one log interval: on a shared
    CPU the least disturbed stretch is the closest to what the code itself can do."""
    from lstm.logger import read_metrics
    logged = [r for r in read_metrics(workdir) if r.get("event") == "train"]
    if len(logged) < 2:
        raise SystemExit(f"error: {workdir} logged fewer than two training steps; raise --steps")
    first, last = logged[0], logged[-1]
    steps, seconds = last["step"] - first["step"], last["elapsed_s"] - first["elapsed_s"]
    best = max((b["step"] - a["step"]) / (b["elapsed_s"] - a["elapsed_s"]) for a, b in zip(logged, logged[1:]))
    return steps / seconds, steps, seconds, best


def drop_cache_of(corpus: Path) -> list[str]:
    """Removes the encoded caches (beside the corpus, where load_corpus puts them) built from
    `corpus`, found by the source recorded in their metadata; returns what it removed."""
    cache, removed = corpus.parent / ".cache", []
    for meta in cache.glob("*.json") if cache.is_dir() else ():
        try:
            source = Path(json.loads(meta.read_text())["source"]).resolve()
        except (OSError, ValueError, KeyError):
            continue
        if source == corpus.resolve():
            for path in (meta, meta.with_suffix(".bin")):
                path.unlink(missing_ok=True)
                removed.append(str(path))
    return removed


def encode_section() -> list[dict]:
    corpus = Path(_CORPUS.value).resolve()
    spec = {"kind": "encode", "config": _CONFIGS.value[0], "overrides": {"data.path": str(corpus)}}
    removed = drop_cache_of(corpus)
    rows = []
    for label in ("first call (encodes)", "second call (cache hit)"):
        result = run_worker(spec)
        rows.append({"section": "encode", "run": label, "corpus": str(corpus),
                     "corpus_bytes": corpus.stat().st_size, "removed_cache": removed if not rows else [],
                     **result})
    return rows


def train_section() -> list[dict]:
    import tempfile
    workdir_root = _WORKDIR_ROOT.value or tempfile.mkdtemp(prefix="lstm_scaling_runs_")
    rows = []
    for name in _CONFIGS.value:
        for repeat in range(_REPEATS.value):
            for label, path in (("small", _SMALL.value), ("large", _CORPUS.value)):
                workdir = Path(workdir_root) / f"{name}_{label}_{repeat}"
                if workdir.exists():  # a leftover run would be resumed, not measured
                    raise SystemExit(f"error: {workdir} exists; remove it or pick --workdir_root")
                overrides = {"data.path": str(Path(path).resolve()), "train.max_steps": _STEPS.value,
                             "train.log_every_steps": _LOG_EVERY.value, "train.eval_every_steps": 0,
                             "checkpoint.every_steps": 10**9}
                result = run_worker({"kind": "train", "config": name, "overrides": overrides,
                                     "workdir": str(workdir)})
                rate, steps, seconds, best = steady_rate(workdir)
                rows.append({"section": "train", "config": name, "corpus": label, "repeat": repeat,
                             "path": str(path), "steps_per_s": rate, "best_interval_steps_per_s": best,
                             "timed_steps": steps, "timed_s": seconds, **result})
    return rows


def allreduce_section() -> list[dict]:
    """Parameter count of each config's model on its own corpus's vocabulary, the bytes of the
    one gradient all-reduce per data-parallel step (gradients are float32, like params), and
    what the compiled step on --collective_devices simulated CPU devices actually exchanges."""
    import jax
    import numpy as np
    from flax import nnx

    from lstm import data, state
    rows = []
    for name in ALLREDUCE_CONFIGS:
        config = cli.load_config_file(ROOT / "configs" / f"{name}.py")
        vocab_size = len(data.load_corpus(config.data).vocab)
        _, params = nnx.split(state.build_model(config, vocab_size))
        leaves = jax.tree.leaves(params)
        count = sum(int(np.prod(x.shape)) for x in leaves)
        nbytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
        rows.append({"section": "allreduce", "config": name, "vocab_size": vocab_size,
                     "hidden_sizes": list(config.model.hidden_sizes), "encoding": config.model.encoding,
                     "parameters": count, "gradient_bytes": nbytes,
                     "global_batch": config.train.batch_size, "tensors": len(leaves)})
    if _COLLECTIVE_DEVICES.value > 1:
        xla_flags = f"--xla_force_host_platform_device_count={_COLLECTIVE_DEVICES.value}"
        compiled = run_worker({"kind": "collectives", "configs": {r["config"]: r["vocab_size"] for r in rows}},
                              {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + xla_flags).strip(),
                               "JAX_PLATFORMS": "cpu"})  # simulated devices, whatever the machine has
        for row in rows:
            row["compiled_devices"] = compiled["devices"]
            row["compiled_collectives"] = compiled["configs"][row["config"]]
    return rows


def mib(value) -> str:
    return f"{value / MIB:,.0f}"


def peak_rss(peak: dict) -> str:
    """Peak resident MiB, then its anonymous and file-backed parts."""
    return f"{mib(peak['VmHWM']):>6} ({mib(peak['RssAnon'])} / {mib(peak['RssFile'])})"


def format_table(record: dict) -> str:
    out = [f"machine: {record['machine']}; {record['date']}"]
    rows = record["rows"]
    enc = [r for r in rows if r["section"] == "encode"]
    if enc:
        out.append("\nencode (load_corpus of the large file)      seconds  peak RSS MiB "
                   "(anon / file)  tokens       vocab  others' cores")
        out += [f"  {r['run']:<40} {r['seconds']:8.1f}  {peak_rss(r['peak'])}      {r['num_tokens']:>11,}  "
                f"{r['vocab_size']:>5}  {r['others_cores']:.2f}" for r in enc]
    tr = [r for r in rows if r["section"] == "train"]
    if tr:
        out.append("\ntrain                     steps/s  best interval  (timed)            "
                   "peak RSS MiB (anon / file)  wall s  others' cores")
        out += [f"  {r['config']:<8} {r['corpus']:<6} #{r['repeat']}  {r['steps_per_s']:7.2f}  "
                f"{r['best_interval_steps_per_s']:13.2f}  ({r['timed_steps']} in {r['timed_s']:.1f} s)  "
                f"{peak_rss(r['peak'])}  {r['wall_s']:6.1f}  {r['others_cores']:.2f}" for r in tr]
        for name in dict.fromkeys(r["config"] for r in tr):
            small = [r for r in tr if r["config"] == name and r["corpus"] == "small"]
            large = [r for r in tr if r["config"] == name and r["corpus"] == "large"]
            hwm = max(r["peak"]["VmHWM"] for r in large) - max(r["peak"]["VmHWM"] for r in small)
            anon = max(r["peak"]["RssAnon"] for r in large) - max(r["peak"]["RssAnon"] for r in small)
            speed = max(r["steps_per_s"] for r in large) / max(r["steps_per_s"] for r in small)
            interval = (max(r["best_interval_steps_per_s"] for r in large)
                        / max(r["best_interval_steps_per_s"] for r in small))
            out.append(f"  {name}: data path costs {mib(hwm)} MiB of peak RSS ({mib(anon)} MiB anonymous) "
                       f"beyond the small-corpus run; large/small steps/s: best run {speed:.3f}, "
                       f"best interval {interval:.3f}")
    ar = [r for r in rows if r["section"] == "allreduce"]
    if ar:
        out.append("\nall-reduce per step   vocab  hidden       parameters  gradient bytes")
        for r in ar:
            out.append(f"  {r['config']:<18} {r['vocab_size']:>5}  {'x'.join(map(str, r['hidden_sizes'])):<10} "
                       f"{r['parameters']:>12,}  {r['gradient_bytes']:>14,} ({r['gradient_bytes'] / MIB:.2f} MiB)")
        if "compiled_collectives" in ar[0]:
            out.append(f"\ncollectives in the compiled step on {ar[0]['compiled_devices']} CPU devices "
                       "(ops, bytes of their results)")
            for r in ar:
                found = ", ".join(f"{op} {count} op(s) {nbytes:,} B"
                                  for op, (count, nbytes) in r["compiled_collectives"].items())
                out.append(f"  {r['config']:<18} {found}")
    return "\n".join(out)


SECTIONS = {"encode": encode_section, "train": train_section, "allreduce": allreduce_section}


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _WORKER.value:
        print(RESULT_PREFIX + json.dumps(worker(json.loads(_WORKER.value))), flush=True)
        return
    unknown = set(_SECTIONS.value) - set(SECTIONS)
    if unknown:
        cli.fail(f"unknown section(s) {', '.join(sorted(unknown))}")
    if {"encode", "train"} & set(_SECTIONS.value) and not Path(_CORPUS.value).is_file():
        cli.fail(f"{_CORPUS.value} not found; make it with scripts/research/make_corpus.py")
    if {"encode", "train"} & set(_SECTIONS.value) and not _CONFIGS.value:
        cli.fail("--configs needs at least one name under configs/")
    from lstm import environment
    record = {"machine": environment.describe_machine(), "date": time.strftime("%Y-%m-%d"),
              "argv": sys.argv[1:], "rows": []}
    with cli.one_line_errors():
        for name, section in SECTIONS.items():
            if name in _SECTIONS.value:
                record["rows"] += section()
        print(format_table(record))
        if _JSON.value:
            Path(_JSON.value).write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    cli.run(main)
