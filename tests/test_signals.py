"""Ctrl-C and SIGTERM, sent as real signals to real runs of scripts/train.py on the tiny config:
the run saves the step it is at, says so on one line and exits 130 or 143; the same command
then resumes it to exactly what an uninterrupted run reaches. A second signal stops it at once
with the checkpoints on disk readable. Streaming generation stops on one line too. In-process:
the handlers are the caller's again once training returns."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from configs import tiny
from lstm import checkpoint, interrupt, logger, state, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 300  # ~1.5 epochs of the corpus slice: a stop early in the run is mid-epoch
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def command(corpus_path, workdir, *extra):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--config=configs/tiny.py",
            f"--config.data.path={corpus_path}", f"--config.train.max_steps={STEPS}",
            "--config.train.num_epochs=10", "--config.train.log_every_steps=5",
            "--config.train.eval_every_steps=100", "--config.checkpoint.every_steps=100",
            "--config.eval.max_windows=16", "--config.eval.sample_length=0", *extra,
            f"--workdir={workdir}"]


def records(workdir):
    return list(logger.read_metrics(workdir))


def replayable(workdir, stopped_at=None):
    """The numbers a resumed run must reproduce: every record but the wall-clock fields, the
    ones each process writes at its start and end, and what the stop itself added at its step
    (its train record, its partial epoch, the stop), which an uninterrupted run has not."""
    keep = []
    for r in records(workdir):
        if r["event"] in ("environment", "best", "stopped"):
            continue
        if r["event"] == "epoch" and not r["epoch_complete"] and r["step"] != STEPS:
            continue  # the stop's partial epoch; both runs end in a partial one at STEPS
        if r["event"] == "train" and r["step"] == stopped_at and stopped_at % 5:
            continue  # logged because of the stop, between two log steps
        keep.append({k: v for k, v in r.items() if k not in ("wall_time", "elapsed_s", "eval_s", "save_s")})
    return keep


def params(workdir):
    vocab = json.loads((Path(workdir) / "checkpoints" / "vocab.json").read_text())
    _, _, target = state.init_train_state(tiny.get_config(), len(vocab["chars"]))
    saver = checkpoint.Checkpointer(workdir)
    try:
        _, flat, _ = saver.restore(state.flatten_state(target))
    finally:
        saver.close()
    return {k: np.asarray(v) for k, v in flat.items() if k.startswith(".params")}


def start_and_wait_for_training(argv, workdir, first_step=5, timeout=240):
    """Starts a run and returns it once its metrics show step `first_step` trained (so the
    stop lands inside the training loop, not in start-up)."""
    run = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = Path(workdir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and run.poll() is None:
        if metrics.exists() and any(json.loads(line).get("event") == "train"
                                    for line in metrics.read_text().splitlines() if line.strip()):
            return run
        time.sleep(0.01)
    run.kill()
    pytest.fail(f"the run did not reach step {first_step} in time: {run.communicate()[1][-2000:]}")


@pytest.fixture(scope="module")
def reference(corpus_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("signals") / "reference"
    done = subprocess.run(command(corpus_path, workdir), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return workdir


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_and_the_same_command_resumes_exactly(signum, corpus_path, reference, tmp_path):
    workdir = tmp_path / "stopped"
    run = start_and_wait_for_training(command(corpus_path, workdir), workdir)
    sent = time.time()
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)
    took = time.time() - sent

    assert run.returncode == 128 + signum  # what a shell reports for a process the signal ended
    assert took < 10, f"{took:.1f} s from the signal to the exit"
    assert "Traceback" not in stderr
    stopped = [r for r in records(workdir) if r["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == signum
    step = stopped[0]["step"]
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines()[-1] == f"stopped at step {step} ({name}); run the same command to resume"
    assert 5 <= step < STEPS
    steps_per_epoch = int(stderr.split(" steps/epoch")[0].rsplit(", ", 1)[1])
    assert step % steps_per_epoch, "stopped at an epoch's end: the test meant mid-epoch"
    saver = checkpoint.Checkpointer(workdir)
    try:
        assert saver.latest_step() == step  # saved at the step it stopped at
    finally:
        saver.close()
    # The step's training loss and its partial epoch's mean are on record too.
    assert {"train", "epoch", "stopped"} <= {r["event"] for r in records(workdir) if r["step"] == step}

    resumed = subprocess.run(command(corpus_path, workdir), cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step}" in resumed.stderr
    expected, got = params(reference), params(workdir)
    for key in expected:
        np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
    assert replayable(reference) == replayable(workdir, stopped_at=step)


def test_a_second_signal_stops_at_once_and_the_checkpoints_stay_readable(corpus_path, tmp_path):
    # An evaluation at every step, of the whole held-out tail one window per call,
    # makes each step long and made of short calls: the second Ctrl-C arrives, and is handled,
    # before the first has been acted on (two signals within one long call would be one).
    workdir = tmp_path / "insisted"
    argv = command(corpus_path, workdir, "--config.train.eval_every_steps=1", "--config.eval.max_windows=4096",
                   "--config.eval.batch_size=1", "--config.checkpoint.every_steps=1")
    run = start_and_wait_for_training(argv, workdir)
    deadline = time.time() + 120
    while not list((workdir / "checkpoints").glob("[0-9]*")) and time.time() < deadline:
        time.sleep(0.01)  # a checkpoint to keep whole
    run.send_signal(signal.SIGINT)
    time.sleep(0.05)
    sent = time.time()
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    took = time.time() - sent

    assert run.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("stopped at once by a second SIGINT; run the same command "
                                               "to resume from the latest checkpoint")
    assert took < 5, f"{took:.1f} s from the second signal to the exit"
    saver = checkpoint.Checkpointer(workdir)
    try:
        steps = saver.all_steps()
        assert steps
        vocab = json.loads((workdir / "checkpoints" / "vocab.json").read_text())
        _, _, target = state.init_train_state(tiny.get_config(), len(vocab["chars"]))
        for step in steps:  # every step on disk verifies against its checksums and loads
            assert saver.restore(state.flatten_state(target), step)[0] == step
    finally:
        saver.close()


def test_streaming_generation_stops_on_ctrl_c_with_one_line(reference):
    run = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "generate.py"), f"--workdir={reference}",
                            "--seed_text=alice", "--length=100000000"], cwd=ROOT, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout.read(20)  # it is streaming
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130
    assert stderr.decode().strip().splitlines()[-1] == "interrupted"
    assert b"Traceback" not in stderr


def test_handlers_are_installed_for_the_call_only_and_restored():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        stop = interrupt.StopOnSignals()
        stop.install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs handlers between bytecodes; give it some
        assert stop.signum == signal.SIGTERM and not seen  # recorded, not passed on
        with pytest.raises(interrupt.TrainingInterrupted) as second:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        assert second.value.exit_code == 130 and second.value.step is None
        assert isinstance(second.value, KeyboardInterrupt)
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal handed the handlers back
        time.sleep(0.01)
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is previous_int
        stop.restore()  # again: nothing left to restore, no error
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_nothing_is_installed_outside_the_main_thread():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    during = []
    stop = interrupt.StopOnSignals()

    def worker():
        stop.install()
        during.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
        stop.restore()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert during == [before]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_training_in_process_leaves_the_callers_handlers_as_they_were(corpus_path, tmp_path):
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.train.max_steps = 4
    config.eval.max_windows = 16
    config.eval.sample_length = 0
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train.train_and_evaluate(config, tmp_path / "run")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
