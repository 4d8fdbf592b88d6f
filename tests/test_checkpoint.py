"""Checkpoints: bit-exact round trips, best-k-plus-latest retention, a save killed mid-write, and
the one-line errors a user sees for wrong, missing or corrupt checkpoints."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm import checkpoint
from lstm.checkpoint import Checkpointer, CheckpointError


class TrainState(NamedTuple):
    step: jax.Array
    params: dict
    opt_state: tuple
    rng: jax.Array
    carry: tuple  # empty unless stateful: empty nodes must not shift the name/leaf pairing


def make_state(vocab=5, hidden=6, seed=0):
    """Shaped like the trainer's state: nested float32 params, optax Adam state (NamedTuples,
    an EmptyState), an int32 step, a raw uint32 PRNG key, an empty carry."""
    rng = np.random.default_rng(seed)
    params = {
        "embed": rng.standard_normal((vocab, 4 * hidden), np.float32),
        "layers": [
            {
                "W_h": rng.standard_normal((hidden, 4 * hidden), np.float32),
                "b": rng.standard_normal(4 * hidden, np.float32),
            }
        ],
    }
    params = jax.tree.map(jnp.asarray, params)
    opt_state = optax.adam(1e-3).init(params)
    return TrainState(
        step=jnp.int32(3 + seed),
        params=params,
        opt_state=opt_state,
        rng=jax.random.key_data(jax.random.key(seed)),
        carry=(),
    )


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())


def test_round_trip_is_bit_exact_and_keeps_extra(tmp_path):
    state = make_state()
    extra = {"epoch": 2, "position": [3, 17], "history": {"val_loss": [2.5, 2.25]}}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(3, state, metric=1.5, extra=extra)
    with Checkpointer(tmp_path) as ckpt:  # a new process's view: nothing cached
        step, restored, restored_extra = ckpt.restore(jax.eval_shape(lambda: state))
    assert step == 3 and restored_extra == extra
    assert restored.rng.dtype == np.uint32 and isinstance(restored, TrainState)
    assert_bitwise_equal(restored, state)


def test_latest_survives_while_best_k_prunes(tmp_path):
    states = {}
    with Checkpointer(tmp_path, keep_best=2, best_mode="min") as ckpt:
        for step, metric in zip([10, 20, 30, 40, 50], [5.0, 1.0, 4.0, 3.0, 6.0]):
            states[step] = make_state(seed=step)
            ckpt.save(step, states[step], metric=metric, extra={"metric": metric})
        assert ckpt.all_steps() == [20, 40, 50]  # the best two (1.0, 3.0) and the latest (6.0)
        assert (ckpt.latest_step(), ckpt.best_step()) == (50, 20)
    with Checkpointer(tmp_path, keep_best=2) as ckpt:
        step, restored, extra = ckpt.restore(make_state(), which="best")
        assert (step, extra) == (20, {"metric": 1.0})
        assert_bitwise_equal(restored, states[20])
        assert ckpt.restore(make_state())[0] == 50
        ckpt.save(60, make_state())  # no metric: kept only while it is the latest
        ckpt.save(70, make_state(), metric=2.0)
        assert ckpt.all_steps() == [20, 70]


def test_save_refuses_a_step_that_is_not_newer(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, make_state())
        with pytest.raises(CheckpointError, match="already holds step 5"):
            ckpt.save(5, make_state())


def test_nothing_to_restore(tmp_path):
    with Checkpointer(tmp_path / "typo") as ckpt:
        assert ckpt.latest_step() is None and ckpt.best_step() is None
        with pytest.raises(CheckpointError, match="no latest checkpoint"):
            ckpt.restore(make_state())
        with pytest.raises(CheckpointError, match="no best checkpoint"):
            ckpt.restore(make_state(), which="best")
    assert not (tmp_path / "typo").exists()  # reading must not create the workdir


@pytest.mark.parametrize(
    "other, expected",
    [
        (
            make_state(vocab=7),
            "has params.embed with shape (5, 24) where the config expects (7, 24)",
        ),
        (make_state()._replace(carry=(jnp.zeros(6),)), "lacks carry.0, which the training state"),
        (make_state()._replace(rng=None), "has rng, which the training state does not expect"),
        (make_state()._replace(step=jnp.float32(0)), "has step as int32 where the config expects"),
    ],
)
def test_mismatched_target_is_one_clear_line(tmp_path, other, expected):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state())
        with pytest.raises(CheckpointError) as error:
            ckpt.restore(other)
    assert expected in str(error.value) and "\n" not in str(error.value)


# Orbax's event loop may report its own teardown after a failed read; harmless and not ours.
ORBAX_TEARDOWN_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ORBAX_TEARDOWN_NOISE
def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state())
    for data_file in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if data_file.is_file() and data_file.parent.name == "d":  # OCDBT's data and b-tree nodes
            data_file.write_bytes(b"\0garbage" * 4)
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError) as error:
        ckpt.restore(make_state())
    assert "unreadable" in str(error.value) and "\n" not in str(error.value)


@ORBAX_TEARDOWN_NOISE
def test_corrupt_metadata_is_a_checkpoint_error(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state())
    (tmp_path / "checkpoints" / "1" / "state" / "_METADATA").write_text("{not json")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointError, match="unreadable"):
        ckpt.restore(make_state())


_KILLED_MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import async_path
    from lstm.checkpoint import Checkpointer

    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"w": jnp.full((64, 64), 1.0)}, metric=2.0)
    rename = async_path.rename
    async def die_before_commit(source, target):
        if os.path.basename(str(target)) == "2":  # all of step 2 written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
        return await rename(source, target)
    async_path.rename = die_before_commit
    ckpt.save(2, {"w": jnp.full((64, 64), 2.0)}, metric=1.0)
""")


def test_save_killed_mid_write_leaves_previous_latest(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(checkpoint.__file__).parents[1]),
        "JAX_PLATFORMS": "cpu",
    }
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_SAVE, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    assert leftovers, "the child should have died with a half-committed step 2 on disk"
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [1]
        step, restored, _ = ckpt.restore({"w": jnp.zeros((64, 64))})
        assert step == 1 and float(restored["w"][0, 0]) == 1.0
        ckpt.save(2, {"w": jnp.zeros((64, 64))})  # the abandoned step number is free again
        assert ckpt.latest_step() == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()) == ["1", "2"]


def test_meta_round_trip_and_compatibility(tmp_path):
    config = {"model": {"hidden_sizes": (256, 256), "dropout": 0.2}, "data": {"seq_len": 100}}
    vocab = json.dumps({"chars": list("\n !abc")})
    with Checkpointer(tmp_path) as ckpt:
        ckpt.check_compatible(config, vocab)  # a fresh workdir: nothing to contradict
        ckpt.write_meta(config=config, vocab_json=vocab)
        assert checkpoint.read_meta(tmp_path) == (json.loads(json.dumps(config)), vocab)
        ckpt.check_compatible(config, vocab)
        ckpt.check_compatible({**config, "data": {"seq_len": 50}}, vocab)  # not model-shaping
        with pytest.raises(
            CheckpointError,
            match=r"vocabulary differs \(6 symbols, now 6; " r"adds 'A'; drops 'c'\)",
        ):
            ckpt.check_compatible(config, json.dumps({"chars": list("\n !Aab")}))
        bigger = {**config, "model": {"hidden_sizes": (512,), "dropout": 0.2}}
        with pytest.raises(CheckpointError) as error:
            ckpt.check_compatible(bigger, vocab)
        assert str(error.value) == (
            f"workdir {tmp_path} holds checkpoints for a different model: model.hidden_sizes was "
            "(256, 256), now (512,); use another --workdir or delete it"
        )
        with pytest.raises(CheckpointError, match="data.seq_len was 100, now 50"):
            ckpt.check_compatible(
                {**config, "data": {"seq_len": 50}}, vocab, keys=("model", "data")
            )
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_an_option_added_later_resumes_runs_saved_without_it(tmp_path):
    """Runs saved before model.matmul_dtype existed must still resume: absent counts as the
    value that reproduces them, and any other value is still refused."""
    saved = {"model": {"hidden_sizes": (256,)}}
    vocab = json.dumps({"chars": list("\n !abc")})
    upgrade = lambda config: {**config, "model": {"matmul_dtype": "float32", **config["model"]}}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.write_meta(config=saved, vocab_json=vocab)
        now = {"model": {"hidden_sizes": (256,), "matmul_dtype": "float32"}}
        with pytest.raises(CheckpointError, match="model.matmul_dtype was unset, now 'float32'"):
            ckpt.check_compatible(now, vocab)  # without the upgrade, absent is a difference
        ckpt.check_compatible(now, vocab, upgrade=upgrade)
        ckpt.check_compatible(upgrade(saved), vocab, upgrade=upgrade)
        bfloat16 = {"model": {"hidden_sizes": (256,), "matmul_dtype": "bfloat16"}}
        with pytest.raises(CheckpointError, match="model.matmul_dtype was 'float32', now 'bfloat16'"):
            ckpt.check_compatible(bfloat16, vocab, upgrade=upgrade)


def test_missing_meta_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        checkpoint.read_meta(tmp_path)


def test_the_private_orbax_hook_is_pinned_to_the_orbax_it_was_written_for():
    """lstm/checkpoint.py overrides CheckpointManager._get_metrics, a private method: another
    Orbax may rename or stop calling it, so the version is pinned everywhere it is installed
    from, and this fails the day the installed one differs."""
    import importlib.metadata
    import re

    import orbax.checkpoint as ocp
    root = Path(__file__).resolve().parents[1]
    pins = {name: re.search(r"orbax-checkpoint==([0-9.]+)", (root / name).read_text()).group(1)
            for name in ("pyproject.toml", "requirements.txt")}
    assert pins["pyproject.toml"] == pins["requirements.txt"] == importlib.metadata.version("orbax-checkpoint")
    assert callable(ocp.CheckpointManager._get_metrics)


def test_checkpoints_leave_absls_logger_as_they_found_it(tmp_path):
    """Orbax's chatter is filtered during calls into it only: no filter stays on absl's
    process-wide logger after a save, a restore or a close."""
    from absl import logging
    before = list(logging.get_absl_logger().filters)
    state = {"w": np.arange(3.0, dtype=np.float32)}
    with Checkpointer(tmp_path) as saver:
        saver.save(1, state, metric=1.0)
        assert list(logging.get_absl_logger().filters) == before
        saver.restore(state)
    assert list(logging.get_absl_logger().filters) == before
