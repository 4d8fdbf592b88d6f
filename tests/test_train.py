"""The training loop end to end on the tiny config: loss falls, resume is exact (also after a
SIGKILL), non-finite loss stops cleanly, and bad input gets one line and a non-zero exit."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from lstm import checkpoint, environment, logger, state, train

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(corpus_path, **train_overrides):
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.train.max_steps = 40
    config.train.log_every_steps = 10
    config.train.eval_every_steps = 20
    config.checkpoint.every_steps = 10
    config.eval.max_windows = 32
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return config


def final_params(workdir, config):
    _, flat = restore_latest(workdir, config)
    return {k: np.asarray(v) for k, v in flat.items() if k.startswith(".params")}


def restore_latest(workdir, config):
    corpus_vocab = json.loads((Path(workdir) / "checkpoints" / "vocab.json").read_text())
    _, _, target = state.init_train_state(config, len(corpus_vocab["chars"]))
    saver = checkpoint.Checkpointer(workdir)
    try:
        step, flat, _ = saver.restore(state.flatten_state(target))
    finally:
        saver.close()
    return step, flat


WALL_CLOCK_KEYS = ("wall_time", "elapsed_s", "eval_s", "save_s")
PER_PROCESS_EVENTS = (environment.EVENT, "best")  # written at each process's start and end


def replayable(records):
    """Every logged number a resumed run must reproduce: all but the wall-clock ones and the
    records each process writes at its start (environment) and end (best so far)."""
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS}
            for r in records if r["event"] not in PER_PROCESS_EVENTS]


def losses(workdir):
    """`replayable` records, less the partial-epoch summary a run stopped by max_steps writes
    (the uninterrupted run has no such stop)."""
    return replayable(r for r in logger.read_metrics(workdir) if r.get("epoch_complete", True))


def test_tiny_run_learns_and_writes_its_outputs(corpus_path, tmp_path):
    summary = train.train_and_evaluate(tiny_config(corpus_path, max_steps=100), tmp_path)
    records = logger.read_metrics(tmp_path)
    train_losses = [r["loss"] for r in records if r["event"] == "train"]
    assert train_losses[-1] < train_losses[0] - 0.2, train_losses
    # A uniform guess over the slice's 43 symbols scores ln(43) ≈ 3.76 nats/char.
    assert summary["val_loss"] < 2.9
    assert abs(summary["val_bpc"] - summary["val_loss"] / np.log(2)) < 1e-9
    for name in ("metrics.jsonl", "loss.png", "checkpoints/config.json", "checkpoints/vocab.json"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # The machine is recorded first, so a later run of the command can be compared with it.
    assert records[0]["event"] == environment.EVENT and records[0]["step"] == 0
    assert records[0]["environment"]["jax"] == jax.__version__


def test_resume_from_a_middle_checkpoint_is_exact(corpus_path, tmp_path):
    config = tiny_config(corpus_path)
    train.train_and_evaluate(config, tmp_path / "whole")
    config_half = tiny_config(corpus_path, max_steps=20)
    train.train_and_evaluate(config_half, tmp_path / "split")
    train.train_and_evaluate(config, tmp_path / "split")  # the same command again resumes
    whole, split = final_params(tmp_path / "whole", config), final_params(tmp_path / "split", config)
    assert whole.keys() == split.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key], split[key], err_msg=key)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    # One environment record per process: the resumed one says where it took over.
    assert [r["step"] for r in logger.read_metrics(tmp_path / "split") if r["event"] == environment.EVENT] == [0, 20]


def test_auto_matmul_dtype_is_recorded_as_the_one_used_and_kept_on_resume(corpus_path, tmp_path, monkeypatch):
    # "auto" resolves per machine; the run's record must name the dtype it trained with, and a
    # resume on a CPU that would choose the other one continues in the first.
    config = tiny_config(corpus_path, max_steps=10)
    config.model.matmul_dtype = "auto"
    recorded = lambda run: json.loads((run / "checkpoints" / "config.json").read_text())["model"]["matmul_dtype"]
    monkeypatch.setattr(environment, "native_bfloat16", lambda: True)
    train.train_and_evaluate(config, tmp_path / "run")
    assert recorded(tmp_path / "run") == "bfloat16"
    monkeypatch.setattr(environment, "native_bfloat16", lambda: False)
    config.train.max_steps = 20
    assert train.train_and_evaluate(config, tmp_path / "run")["step"] == 20
    assert recorded(tmp_path / "run") == "bfloat16"
    assert state.load_model(tmp_path / "run")[0].matmul_dtype == "bfloat16"
    train.train_and_evaluate(config, tmp_path / "fresh")
    assert recorded(tmp_path / "fresh") == "float32"


def test_sigkilled_run_resumes_to_identical_parameters_and_metrics(corpus_path, tmp_path):
    overrides = [f"--config.data.path={corpus_path}", "--config.train.max_steps=60",
                 "--config.train.log_every_steps=5", "--config.checkpoint.every_steps=5",
                 "--config.train.eval_every_steps=30", "--config.eval.max_windows=32"]
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config=configs/tiny.py", *overrides]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    reference = subprocess.run(command + [f"--workdir={tmp_path / 'reference'}"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr

    killed_dir = tmp_path / "killed"
    victim = subprocess.Popen(command + [f"--workdir={killed_dir}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # Kill as soon as a second checkpoint appears: saves happen every 5 steps, so the kill
    # lands at an arbitrary point of training or of the next save.
    while time.time() < deadline and victim.poll() is None:
        steps = [p for p in (killed_dir / "checkpoints").glob("[0-9]*")] if killed_dir.exists() else []
        if len(steps) >= 2:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = subprocess.run(command + [f"--workdir={killed_dir}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stderr

    config = tiny.get_config()
    config.data.path = str(corpus_path)
    a, b = final_params(tmp_path / "reference", config), final_params(killed_dir, config)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert losses(tmp_path / "reference") == losses(killed_dir)


def test_non_finite_loss_stops_with_the_step_range_and_keeps_the_last_good_checkpoint(
        corpus_path, tmp_path, monkeypatch):
    config = tiny_config(corpus_path, max_steps=20)
    train.train_and_evaluate(config, tmp_path)
    good_step, good = restore_latest(tmp_path, config)

    def poisoned_loss(*args):
        loss_sum, weight = sequence_loss(*args)
        return loss_sum * float("nan"), weight

    sequence_loss = train.sequence_loss
    monkeypatch.setattr(train, "sequence_loss", poisoned_loss)
    exploding = tiny_config(corpus_path, max_steps=40)
    with pytest.raises(train.TrainingError, match=r"non-finite between steps 20 and \d+") as error:
        train.train_and_evaluate(exploding, tmp_path)
    assert "\n" not in str(error.value)
    step, after = restore_latest(tmp_path, config)
    assert step == good_step == 20
    for key in good:
        np.testing.assert_array_equal(np.asarray(good[key]), np.asarray(after[key]))


def run_script(*args, cwd=ROOT):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/tiny.py", "--config.train.widht=3"], "widht"),
    (["--config=configs/tiny.py", "--config.train.batch_size=abc"], "batch_size"),
    (["--config=configs/tiny.py", "--no_such_flag=1"], "no_such_flag"),
    (["--config=configs/no_such_config.py"], "no_such_config.py"),
    (["--config=configs/tiny.py", "--config.data.path=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    (["--config=configs/tiny.py", "--config.data.objective=middle"], "data.objective"),
    (["--config=configs/tiny.py", "--config.train.learning_rate=-1"], "learning_rate"),
    (["--config=configs/tiny.py", "--config.model.gate_activation=relu"], "gate_activation"),
])
def test_bad_input_gets_one_line_and_a_nonzero_exit(args, message, tmp_path):
    result = run_script(*args, f"--workdir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


def test_bad_corpus_files_are_refused_without_touching_the_workdir(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"hello \xff world")
    for path, message in ((empty, "empty"), (binary, "offset")):
        result = run_script("--config=configs/tiny.py", f"--config.data.path={path}",
                            f"--workdir={tmp_path / 'run'}")
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_a_workdir_of_another_model_is_refused(corpus_path, tmp_path):
    train.train_and_evaluate(tiny_config(corpus_path, max_steps=10), tmp_path)
    other = tiny_config(corpus_path, max_steps=10)
    other.model.hidden_sizes = (16,)
    with pytest.raises(checkpoint.CheckpointError, match="hidden_sizes"):
        train.train_and_evaluate(other, tmp_path)


def test_load_model_rebuilds_the_trained_model_from_the_workdir_alone(corpus_path, tmp_path):
    config = tiny_config(corpus_path, max_steps=10)
    train.train_and_evaluate(config, tmp_path)
    model, vocab, restored_config = state.load_model(tmp_path, which="latest")
    assert tuple(restored_config.model.hidden_sizes) == config.model.hidden_sizes
    params = final_params(tmp_path, config)
    np.testing.assert_array_equal(model.head_W[...], params[".params['head_W'].value"])
    logits, _ = model(np.zeros((1, 5), np.int32))
    assert logits.shape == (1, 5, len(vocab))
    assert jax.numpy.isfinite(logits).all()


@pytest.mark.parametrize("every_epoch", [True, False])
def test_epoch_end_evaluation_can_be_left_to_the_end_of_a_race(corpus_path, tmp_path, every_epoch):
    config = tiny_config(corpus_path, max_steps=45, eval_every_steps=0, num_epochs=10)
    config.data.stride = 32  # ~16 steps per epoch: the run crosses two epoch ends
    config.eval.every_epoch = every_epoch
    train.train_and_evaluate(config, tmp_path)
    records = logger.read_metrics(tmp_path)
    epoch_ends = [r["step"] for r in records if r["event"] == "epoch" and r["epoch_complete"]]
    evaluated = [r["step"] for r in records if r["event"] == "eval"]
    assert len(epoch_ends) == 2 and epoch_ends[-1] < 45
    assert evaluated == (epoch_ends + [45] if every_epoch else [45])


def test_a_time_budget_stops_at_the_first_step_finished_past_it(corpus_path, tmp_path):
    # Dispatch is asynchronous: a clock read right after dispatch times queued steps, and the
    # run would go on computing long past its budget. No log point syncs this run early.
    budget = 15.0  # compilation, inside the budget, takes several seconds
    config = tiny_config(corpus_path, max_steps=0, num_epochs=1000, time_budget_s=budget,
                         log_every_steps=100_000, eval_every_steps=0, batch_size=256)
    config.data.stride = 1  # epoch ends sync too: keep them ~70 steps apart
    config.checkpoint.every_steps = 100_000
    config.eval.every_epoch = False
    train.train_and_evaluate(config, tmp_path)
    last = [r for r in logger.read_metrics(tmp_path) if r["event"] == "train"][-1]
    assert last["step"] > 10
    step_time = budget / last["step"]  # an upper bound: compilation is inside the budget
    assert budget <= last["elapsed_s"] < budget + 0.25 + 3 * step_time, last
