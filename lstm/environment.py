"""What a run ran on: recorded by every training process and benchmark.

A seed fixes every number only for a given build of the software on a given CPU and core
count. Measured here (docs/investigations.md, "Reproducibility"): the same command pinned to one core
on two VMs differed in the last bit of the loss from step 100 on, and one core against two from
step 150. Which property of the machine moves the bits is not located (capping XLA's ISA and
turning off Eigen's threads changed nothing), so the record keeps every candidate: the vector
extensions and caches that code generation and matmul blocking may follow, and the cores. So
training writes `environment()` into metrics.jsonl each time a process starts or resumes, and
`lstm.analysis.provenance` says where two runs' numbers first differ and by how much they drift,
epoch by epoch.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

from lstm import host_memory

# The extensions that can change XLA's CPU code generation, and so the order of float sums.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                     "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve")
# Either one multiplies bfloat16 in hardware (AVX-512 dot products, AMX tiles).
NATIVE_BFLOAT16 = ("avx512_bf16", "amx_bf16")
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
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "host_memory": host_memory.state(), "cpu": cpu()}


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware."""
    return any(extension in cpu()["vector_extensions"] for extension in NATIVE_BFLOAT16)


def describe_machine() -> str:
    """One line naming the device the numbers were taken on; on a CPU, the cores this process
    may use (what `taskset` leaves it), not the machine's count."""
    import jax
    device = jax.devices()[0]
    if device.platform == "cpu":
        this_cpu = cpu()
        return f"{this_cpu['model']}, {this_cpu['cores_usable']} cores (jax {jax.__version__}, CPU)"
    return f"{device.device_kind} (jax {jax.__version__}, {device.platform.upper()})"
