"""Data parallelism on CPU: 4 simulated devices (XLA_FLAGS) and 2 real processes on localhost.

Each case that needs a device count runs in a subprocess, because the count is fixed when JAX starts.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from configs import tiny
from lstm import state, train

ROOT = Path(__file__).resolve().parents[1]


def run_python(code, devices=4, extra_env=None, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(extra_env or {})}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_one_step_on_four_devices_equals_one_step_on_one_device(tmp_path):
    code = """
        import jax, numpy as np
        from configs import tiny
        from lstm import distributed, train
        from lstm import state as run_state
        assert jax.device_count() == 4
        config = tiny.get_config()
        config.train.batch_size = 8
        # float32: rounding operands to bfloat16 magnifies the sum-order drift to 4e-4 here.
        config.model.matmul_dtype = "float32"
        corpus = np.random.default_rng(0).integers(0, 45, 5000).astype(np.uint8)
        starts = np.random.default_rng(1).integers(0, 4900, (2, 8)).astype(np.int32)
        weights = np.ones((2, 8), np.float32)
        resets = np.array([True, False])
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = distributed.data_mesh(devices)
            graphdef, optimizer, state = run_state.init_train_state(config, 45)
            state = train.place_state(state, mesh)
            steps = train.make_train_steps(graphdef, optimizer, config)
            by_batch = distributed.batch_sharding(mesh, batch_axis=1)
            state, metrics = steps(state, distributed.global_array(corpus, distributed.replicated(mesh)),
                                   distributed.global_array(starts, by_batch),
                                   distributed.global_array(weights, by_batch),
                                   distributed.global_array(resets, distributed.replicated(mesh)))
            assert len(state.params['head_W'][...].sharding.device_set) == len(devices)
            results.append((run_state.flatten_state(state), np.asarray(metrics['loss'])))
        (one, loss_one), (four, loss_four) = results
        np.testing.assert_allclose(loss_four, loss_one, rtol=1e-6)
        np.testing.assert_allclose(results[1][0]['.epoch_loss_sum'], results[0][0]['.epoch_loss_sum'], rtol=1e-6)
        # Adam's first steps move each weight by about lr * g / |g|, which amplifies the last-bit
        # differences of a differently ordered gradient all-reduce where g is near zero; 1e-4
        # is 1% of one step at this learning rate (1e-2).
        # (The epoch's loss sum, ~10^3, is compared relatively above: one ulp of it exceeds 1e-4.)
        worst = max(float(np.max(np.abs(np.asarray(one[k], np.float64) - np.asarray(four[k], np.float64))))
                    for k in one if not k.startswith(".epoch_"))
        assert worst < 1e-4, worst
        print("max difference", worst)
    """
    run_python(code)


def test_sharded_run_and_its_resume_match_an_unsharded_run(corpus_path, tmp_path):
    code = """
        import jax, json, numpy as np
        from configs import tiny
        from lstm import train
        def config(steps):
            c = tiny.get_config()
            c.data.path = CORPUS
            c.train.max_steps = steps
            c.checkpoint.every_steps = 10
            c.train.eval_every_steps = 20
            c.eval.max_windows = 32
            return c
        root = ROOT_DIR + "/" + str(jax.device_count())
        result = {"devices": jax.device_count(),
                  "whole": train.train_and_evaluate(config(40), root + "/whole")["val_loss"]}
        if jax.device_count() > 1:  # the unsharded run is only the reference for "whole"
            train.train_and_evaluate(config(20), root + "/split")
            result["split"] = train.train_and_evaluate(config(40), root + "/split")["val_loss"]
        print(json.dumps(result))
    """.replace("CORPUS", repr(str(corpus_path))).replace("ROOT_DIR", repr(str(tmp_path)))
    four = json.loads(run_python(code, devices=4).stdout.strip().splitlines()[-1])
    one = json.loads(run_python(code, devices=1).stdout.strip().splitlines()[-1])
    assert four["devices"] == 4 and one["devices"] == 1
    assert four["whole"] == four["split"]  # resume under sharding is exact
    assert abs(four["whole"] - one["whole"]) < 1e-4  # only the reduction order differs


def test_batch_size_not_divisible_by_the_device_count_is_refused(corpus_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    result = subprocess.run([sys.executable, "scripts/train.py", "--config=configs/tiny.py",
                             f"--config.data.path={corpus_path}", "--workdir=/tmp/never_written"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not divisible by the 3 devices" in result.stderr.strip().splitlines()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_jax_distributed_run_on_localhost(corpus_path, tmp_path):
    port = free_port()
    command = [sys.executable, "scripts/train.py", "--config=configs/tiny.py",
               f"--config.data.path={corpus_path}", "--config.train.max_steps=20",
               "--config.eval.max_windows=32", f"--workdir={tmp_path / 'run'}"]
    processes = []
    for rank in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)}
        env.pop("XLA_FLAGS", None)
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    # Both processes report the same global result, and process 0 alone wrote the metrics.
    val_losses = [out.strip().splitlines()[-1].split("val_loss=")[1].split()[0] for out, _ in outputs]
    assert val_losses[0] == val_losses[1]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len([l for l in lines if '"event": "eval"' in l]) == 1
    assert (tmp_path / "run" / "checkpoints" / "20").exists()


def test_split_cpu_sets_the_device_count_before_jax_starts_and_refuses_after():
    result = run_python("""
        import jax
        from lstm import distributed
        distributed.split_cpu(2)  # wins over XLA_FLAGS' one device: JAX has not started yet
        assert jax.device_count() == 2, jax.devices()
        distributed.split_cpu(2)  # already so: nothing to do
        try:
            distributed.split_cpu(3)
        except RuntimeError as error:
            print(error)
    """, devices=1)
    assert result.stdout.strip() == "3 CPU devices need a fresh process: this one's JAX backend already started with 2"


def test_train_refuses_cpu_devices_it_can_no_longer_make(corpus_path, tmp_path):
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.train.cpu_devices = jax.device_count() + 1  # this test process's backend has started
    with pytest.raises(state.ConfigError, match=r"^train.cpu_devices: \d+ CPU devices need a fresh process"):
        train.prepare_process(config)
    # Left unprepared, training refuses to run on another device count than the config asks for.
    with pytest.raises(state.ConfigError, match=r"^train.cpu_devices=\d+, but this process has \d+ CPU devices: "
                                                r"call lstm.train.prepare_process\(config\) first"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
