"""What a run ran on, and where two runs of one command part.

A seed fixes every number only for a given build of the software on a given CPU and core
count. Measured here (docs/results.md, "Reproducibility"): the same command pinned to one core
on two VMs differed in the last bit of the loss from step 100 on, and one core against two from
step 150. Which property of the machine moves the bits is not located (capping XLA's ISA and
turning off Eigen's threads changed nothing), so the record keeps every candidate: the vector
extensions and caches that code generation and matmul blocking may follow, and the cores. So training writes `environment()` into metrics.jsonl each time a
process starts or resumes, and `compare` says where two runs' numbers first differ and by how
much they drift, epoch by epoch.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import NamedTuple

# The extensions that can change XLA's CPU code generation, and so the order of float sums.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                     "avx512_vnni", "amx_tile", "asimd", "sve")
EVENT = "environment"


def _cpuinfo(path="/proc/cpuinfo") -> dict:
    """The first processor's fields from /proc/cpuinfo; empty off Linux."""
    fields = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _caches(root="/sys/devices/system/cpu/cpu0/cache") -> dict:
    """{"L1d": "32K", "L2": "1024K", ...} for the first CPU; empty where sysfs does not say."""
    caches = {}
    for index in sorted(Path(root).glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[f"L{level}{suffix}"] = size
    return caches


def cpu() -> dict:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"model": info.get("model name") or platform.processor() or platform.machine(),
            "family": info.get("cpu family", ""), "model_number": info.get("model", ""),
            "stepping": info.get("stepping", ""),
            "vector_extensions": [f for f in VECTOR_EXTENSIONS if f in flags],
            "caches": _caches(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def environment() -> dict:
    """Library versions, JAX's devices and the CPU, as one JSON-ready dict. Starts JAX's
    backend, so call it after any CPU-device split (lstm.distributed.split_cpu)."""
    import flax
    import jax
    import jaxlib
    import numpy
    import optax
    devices = jax.devices()
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "numpy": numpy.__version__,
            "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "devices": len(devices), "processes": jax.process_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu": cpu()}


def environment_differences(first: dict, second: dict, prefix="") -> list[tuple[str, object, object]]:
    """(key, first's value, second's value) for every leaf that differs, nested keys dotted."""
    differences = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += environment_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append((f"{prefix}{key}", a, b))
    return differences


class Comparison(NamedTuple):
    common_train_steps: int        # logged training steps both runs have
    first_different_step: int | None   # the first of them whose loss differs in any bit
    max_train_difference: float    # largest |loss_b − loss_a| over them
    epochs: list                   # (epoch, loss_a, loss_b) for epochs both completed
    evals: list                    # (step, val_loss_a, val_loss_b) for steps both evaluated


def _by_step(records, event, key) -> dict:
    # The last record wins: after a resume, a step logged again replaces the earlier one.
    return {r["step"]: r[key] for r in records if r.get("event") == event and key in r}


def compare(first_records, second_records) -> Comparison:
    """Where two runs' metrics.jsonl records part: the logged training losses compared bit for
    bit at the steps both logged, and the completed epochs' mean losses and the evaluations
    side by side."""
    train_a, train_b = (_by_step(r, "train", "loss") for r in (first_records, second_records))
    steps = sorted(set(train_a) & set(train_b))
    first_different = next((s for s in steps if train_a[s] != train_b[s]), None)
    largest = max((abs(train_b[s] - train_a[s]) for s in steps), default=0.0)
    epochs_a, epochs_b = ({r["epoch"]: r["train_loss"] for r in records
                           if r.get("event") == "epoch" and r.get("epoch_complete", True)}
                          for records in (first_records, second_records))
    evals_a, evals_b = (_by_step(r, "eval", "val_loss") for r in (first_records, second_records))
    return Comparison(len(steps), first_different, largest,
                      [(e, epochs_a[e], epochs_b[e]) for e in sorted(set(epochs_a) & set(epochs_b))],
                      [(s, evals_a[s], evals_b[s]) for s in sorted(set(evals_a) & set(evals_b))])


def environments(records) -> list[dict]:
    """The environment records of a run, one per process start, oldest first."""
    return [r for r in records if r.get("event") == EVENT]
