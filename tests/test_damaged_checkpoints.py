"""Damaged checkpoints on a real tiny run: random bytes over an array file of the latest step, a
truncated one, a flipped bit, a damaged metrics file. Sampling names the damaged step on one
line and tries no other; a resume falls back to the newest readable step, sets the damaged one
aside and ends where an uninterrupted run ends; with every step damaged it refuses on one line.

One run is trained per module and copied per test: training is most of this file's time."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from lstm import checkpoint, integrity, logger, state, train
from lstm.checkpoint import CheckpointError, UnreadableCheckpoint
from tests.test_train import replayable

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(corpus_path):
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.train.max_steps = 30
    config.train.log_every_steps = 10
    config.train.eval_every_steps = 10
    config.checkpoint.every_steps = 10  # steps 10, 20 and 30, each with a metric
    config.eval.max_windows = 32
    config.eval.sample_length = 0
    return config


@pytest.fixture(scope="module")
def trained(corpus_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train_and_evaluate(tiny_config(corpus_path), workdir)
    with checkpoint.Checkpointer(workdir) as saver:
        assert saver.all_steps() == [10, 20, 30]
    return workdir


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def array_file(workdir, step) -> Path:
    """The largest file of a step's OCDBT data: several arrays' chunks."""
    data = [p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*")
            if p.is_file() and p.parent.name == "d"]
    return max(data, key=lambda p: p.stat().st_size)


def damage(path: Path, how: str) -> bytes:
    """Random bytes over `path` (same size) or its first half only; returns what is left."""
    size = path.stat().st_size
    if how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(size))
    else:
        os.truncate(path, size // 2)
    return path.read_bytes()


def forget_checksums(workdir):
    """Makes `workdir` look like one saved before steps carried checksums."""
    for sums in (workdir / "checkpoints").glob(f"*/{integrity.CHECKSUMS_FILE}"):
        sums.unlink()


def assert_same_state(workdir_a, workdir_b, step):
    a, b = (state.load_state(w, step)[1] for w in (workdir_a, workdir_b))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def records(workdir):
    """Every logged number a resume must reproduce, partial epochs included."""
    return replayable(logger.read_metrics(workdir))


def script(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("how, checksums", [("random", True), ("truncate", False)])
def test_sampling_a_damaged_step_prints_one_line_and_tries_no_other(run, trained, how, checksums):
    # Without checksums (workdirs saved before them) the arrays are read through first: the
    # read Orbax runs would print "Event loop is closed" tracebacks after its error.
    if not checksums:
        forget_checksums(run)
    damage(array_file(run, 30), how)
    result = script("generate.py", f"--workdir={run}", "--which=latest", "--seed_text=alice",
                    "--length=5")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    here = run / "checkpoints"
    assert lines[0].startswith(f"error: checkpoint step 30 in {here} is unreadable: "), lines
    with pytest.raises(UnreadableCheckpoint) as error:
        state.load_state(run, "latest")
    assert error.value.step == 30 and "\n" not in str(error.value)
    assert_same_state(run, trained, 20)  # the step below is untouched and still loads


@pytest.mark.parametrize("how", ["random", "truncate"])
def test_resume_falls_back_to_the_newest_readable_step_and_sets_the_damaged_one_aside(
        corpus_path, run, trained, how, capsys):
    damaged_file = array_file(run, 30)
    left = damage(damaged_file, how)
    summary = train.train_and_evaluate(tiny_config(corpus_path), run)
    aside = run / "checkpoints" / checkpoint.UNREADABLE / "30"
    said = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    name = damaged_file.relative_to(run / "checkpoints" / "30").as_posix()
    assert len(said) == 1 and said[0].startswith(f"checkpoint step 30 is unreadable ({name} ")
    assert said[0].endswith(f"; moved it to {aside}, resuming from step 20")
    # Kept byte for byte for inspection, out of the way of the step 30 the resumed run saved.
    assert (aside / damaged_file.relative_to(run / "checkpoints" / "30")).read_bytes() == left
    assert summary["step"] == 30
    with checkpoint.Checkpointer(run) as saver:
        assert saver.all_steps() == [10, 20, 30]
    # Resuming from step 20 retraces the uninterrupted run exactly: same state, same records.
    assert_same_state(run, trained, 30)
    assert records(run) == records(trained)


def test_an_older_workdir_resumes_through_the_script(run, trained, corpus_path):
    forget_checksums(run)
    damage(array_file(run, 30), "random")
    result = script("train.py", "--config=configs/tiny.py", f"--workdir={run}",
                    f"--config.data.path={corpus_path}", "--config.train.max_steps=30",
                    "--config.train.log_every_steps=10", "--config.train.eval_every_steps=10",
                    "--config.checkpoint.every_steps=10", "--config.eval.max_windows=32",
                    "--config.eval.sample_length=0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Event loop" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "unreadable" in line]
    assert len(said) == 1 and said[0].startswith("checkpoint step 30 is unreadable (array ")
    assert "resuming at step 20" in result.stderr
    assert_same_state(run, trained, 30)
    # The step the resumed run saved carries checksums again.
    assert (run / "checkpoints" / "30" / integrity.CHECKSUMS_FILE).exists()


def test_with_every_step_damaged_the_resume_refuses_on_one_line(corpus_path, run):
    for step, how in ((10, "truncate"), (20, "random"), (30, "truncate")):
        damage(array_file(run, step), how)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    metrics = (run / logger.METRICS_FILE).read_bytes()
    with pytest.raises(CheckpointError) as error:
        train.train_and_evaluate(tiny_config(corpus_path), run)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot resume in {run}: checkpoint step 30 is unreadable (")
    assert "steps 20, 10 are unreadable too" in message
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing moved
    assert (run / logger.METRICS_FILE).read_bytes() == metrics


def test_a_flipped_bit_is_caught_by_the_checksum(run):
    # Orbax and TensorStore check no array's bytes: a bit flipped inside compressed data
    # restores as a wrong number unless the saved checksums are compared first.
    path = array_file(run, 30)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableCheckpoint, match="has changed since it was saved") as error:
        state.load_state(run, 30)
    assert error.value.step == 30


def test_a_damaged_metrics_file_names_its_step_and_is_set_aside_on_resume(
        corpus_path, run, trained, capsys):
    (run / "checkpoints" / "20" / "metrics" / "metrics").write_bytes(b"\xff{")
    # Orbax reads every step's metrics when it opens a workdir; one bad file must not make
    # the other steps unreachable, nor let "best" be ranked without it.
    assert_same_state(run, trained, 30)
    with pytest.raises(UnreadableCheckpoint, match="metrics/metrics") as error:
        state.load_state(run, "best")
    assert error.value.step == 20
    summary = train.train_and_evaluate(tiny_config(corpus_path), run)  # nothing left to train
    assert summary["step"] == 30
    said = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    assert len(said) == 1
    assert said[0].startswith("checkpoint step 20 is unreadable (metrics/metrics is damaged (")
    assert said[0].endswith(f"; moved it to {run / 'checkpoints' / checkpoint.UNREADABLE / '20'}, "
                            "resuming from step 30")
    with checkpoint.Checkpointer(run) as saver:
        assert saver.all_steps() == [10, 30] and saver.best_step() in (10, 30)
