"""scripts/research/gate_saturation.py against a second path: the checkpoint's model recomputed layer by
layer in float64 NumPy (tests/numpy_reference.py), and its gates counted there."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm import data, schedules, state, train
from tests.test_model import reference_forward

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "research" / "gate_saturation.py"
WINDOWS = 40
H = 64  # configs/tiny.py's units per layer


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory, corpus_path):
    """A tiny hard-sigmoid run whose huge steps push many gates past the clip."""
    from configs import tiny
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.data.val_fraction = 0.0  # like the faithful configs: --split=val has nothing to read
    config.model.gate_activation = "hard_sigmoid"
    config.train.learning_rate = 1.0  # absurd on purpose: four steps pin some units for good
    config.train.max_steps = 4
    config.checkpoint.every_steps = 2
    config.checkpoint.keep_best = 3
    config.checkpoint.monitor = "train_loss"
    config.eval.max_windows = 16
    workdir = tmp_path_factory.mktemp("saturation") / "run"
    train.train_and_evaluate(config, workdir)
    return workdir


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def reference_fractions(workdir, which):
    model, vocab, config = state.load_model(workdir, which)
    ids = data.load_corpus(config.data).train
    starts = schedules.tutorial_eval_starts(len(ids), config.data.seq_len, WINDOWS)
    windows = np.stack([np.asarray(ids[s:s + config.data.seq_len]) for s in starts])
    _, layers = reference_forward(model, windows, model.initial_state(len(windows)), "hard_sigmoid")
    return {(layer, gate): {"near_zero": np.mean(steps[gate] < 0.1), "near_one": np.mean(steps[gate] > 0.9),
                            "exactly_zero": np.mean(steps[gate] == 0), "exactly_one": np.mean(steps[gate] == 1),
                            "stuck_at_zero": sum(np.all(steps[gate][..., u] == 0) for u in range(H)),
                            "stuck_at_one": sum(np.all(steps[gate][..., u] == 1) for u in range(H))}
            for layer, steps in enumerate(layers, start=1) for gate in "ifo"}


def test_fractions_match_a_float64_numpy_recount(hard_run):
    done = run_script(f"--workdir={hard_run}", "--which=2,latest", f"--windows={WINDOWS}", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["step"], r["layer"], r["gate"]) for r in rows] == [
        (step, layer, gate) for step in (2, 4) for layer in (1, 2) for gate in "ifo"]
    exact_seen, stuck_seen = 0, 0
    for step in (2, 4):
        expected = reference_fractions(hard_run, step)
        for row in (r for r in rows if r["step"] == step):
            want = expected[row["layer"], row["gate"]]
            for key, value in want.items():
                # float32 against float64: a pre-activation within rounding of a threshold may
                # land on either side, a handful among the 40 * 32 * 64 values.
                tolerance = 1 if key.startswith("stuck") else 2e-3
                assert row[key] == pytest.approx(value, abs=tolerance), (step, row["layer"], row["gate"], key)
            exact_seen += want["exactly_zero"] + want["exactly_one"] > 0.05
            stuck_seen += want["stuck_at_zero"] + want["stuck_at_one"]
    # The run did clip gates, and pinned some units for good, so every count was exercised.
    assert exact_seen >= 3 and stuck_seen >= 1


def test_table_and_one_line_errors(hard_run, tmp_path):
    table = run_script(f"--workdir={hard_run}", "--which=latest", f"--windows={WINDOWS}")
    assert table.returncode == 0, table.stderr
    assert "= 0" in table.stdout and len([l for l in table.stdout.splitlines() if " f " in l]) == 2
    for args, message in [((f"--workdir={hard_run}", "--which=7"), "no checkpoint for step 7"),
                          ((f"--workdir={hard_run}", "--which=first"), "--which takes latest, best"),
                          ((f"--workdir={hard_run}", "--split=val"), "held nothing out"),
                          ((f"--workdir={tmp_path / 'missing'}",), "missing")]:
        done = run_script(*args)
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
