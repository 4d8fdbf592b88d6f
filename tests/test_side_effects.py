"""Library calls leave the process as they found it (issue 42, item 6): training in a notebook
does not set glibc's allocator, JAX's CPU device count, jax.distributed, absl's logging or the
signal handlers; `train.prepare_process`, which scripts/train.py calls, is where the first three
happen, on request. Each case runs in a fresh process, as a notebook kernel would."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent("""
    import json, signal, sys
    from absl import logging
    from configs import tiny
    from lstm import host_memory, train
    import jax
    config = tiny.get_config()
    config.data.path = sys.argv[1]
    config.train.max_steps, config.checkpoint.every_steps, config.eval.max_windows = 4, 2, 8
    config.eval.sample_length = 0
    if sys.argv[3] == "prepared":
        config.train.cpu_devices = 2
        train.prepare_process(config)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    filters = list(logging.get_absl_logger().filters)
    train.train_and_evaluate(config, sys.argv[2])
    print(json.dumps({"host_memory": host_memory.state(), "cpu_devices": len(jax.devices("cpu")),
                      "distributed": jax.distributed.is_initialized(),
                      "filters_kept": list(logging.get_absl_logger().filters) == filters,
                      "handlers_kept": handlers == {s: signal.getsignal(s) for s in handlers}}))
""")


def run(corpus_path, workdir, how):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(corpus_path), str(workdir), how], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_changes_nothing_process_wide_unless_prepared(corpus_path, tmp_path):
    plain = run(corpus_path, tmp_path / "plain", "plain")
    assert plain == {"host_memory": "system", "cpu_devices": 1, "distributed": False, "filters_kept": True,
                     "handlers_kept": True}
    prepared = run(corpus_path, tmp_path / "prepared", "prepared")
    assert prepared["host_memory"] in ("kept", "system")  # "system" where the C library is not glibc
    assert prepared["cpu_devices"] == 2 and prepared["filters_kept"] and prepared["handlers_kept"]
