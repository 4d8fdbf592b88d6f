"""lstm.host_memory: with its setting, a jitted program that frees a large buffer every call
stops faulting fresh pages in; without it, each call faults the buffer in again.

Page faults are counted by the kernel (getrusage), not by the code under test. Each case runs
in a fresh process, since the setting must precede the threads JAX starts."""
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A [4096, 8192] float32 product (128 MiB) that the second matmul must read back, so XLA
# allocates it as a temporary buffer and frees it when each call ends.
PROGRAM = textwrap.dedent("""
    import json, resource, statistics, sys
    from lstm import host_memory
    kept = host_memory.keep_freed_memory() if sys.argv[1] == "kept" else False
    import jax, jax.numpy as jnp
    from lstm import environment

    @jax.jit
    def program(x, w):
        return jnp.tanh(x @ w) @ jnp.ones((w.shape[1], 1))

    x, w = jnp.ones((4096, 8)), jnp.ones((8, 8192))
    for _ in range(10):  # the heap grows to its steady size
        program(x, w).block_until_ready()
    faults = []
    for _ in range(15):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        program(x, w).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # The median call: now and then a call's buffer is allocated before the last call's is
    # freed (they are on different threads), and the kept heap then grows by one more block.
    print(json.dumps({"kept": kept, "faults_per_call": statistics.median(faults),
                      "recorded": environment.environment()["host_memory"]}))
""")


def run(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the setting is glibc's")
def test_kept_memory_stops_the_page_faults_of_a_freed_buffer():
    system, kept = run("system"), run("kept")
    buffer_pages = 4096 * 8192 * 4 // 4096
    if system["faults_per_call"] < buffer_pages / 2:
        pytest.skip(f"this kernel faults the buffer in large pages already "
                    f"({system['faults_per_call']:.0f} faults a call)")
    assert kept["kept"] and kept["recorded"] == "kept" and system["recorded"] == "system"
    assert kept["faults_per_call"] < 0.02 * system["faults_per_call"], (system, kept)
