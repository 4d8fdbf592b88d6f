"""The loss split by target character, against a second path: the model's full-sequence
logits, a float64 NumPy log-softmax at each window's last position, and a Python loop."""
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import lstm
from lstm import cleaning, data, schedules
from lstm.analysis import char_loss

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "research" / "loss_by_character.py"


def reference_losses(model, ids, seq_len, max_windows):
    """−log p(ids[s+T] | ids[s:s+T]) per window, from every-position logits of windows sliced
    in NumPy (no on-device gather, no last_only shortcut, no padding)."""
    starts = schedules.tutorial_eval_starts(len(ids), seq_len, max_windows)
    windows = np.stack([np.asarray(ids[s:s + seq_len], np.int32) for s in starts])
    logits, _ = model(windows)
    losses, targets = [], []
    for row, start in zip(np.asarray(logits[:, -1], np.float64), starts):
        log_norm = np.log(np.exp(row - row.max()).sum()) + row.max()
        target = int(ids[start + seq_len])
        losses.append(log_norm - row[target])
        targets.append(target)
    return np.array(losses), np.array(targets)


@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_window_losses_match_per_window_log_softmax(encoding):
    vocab = data.Vocab.from_text("abcdefg\n")
    ids = np.random.default_rng(0).integers(0, len(vocab), 80).astype(np.uint8)
    model = lstm.CharLSTM(len(vocab), hidden_sizes=(8, 6), encoding=encoding, embed_dim=3,
                          rngs=nnx.Rngs(1))
    # 13 windows in batches of 5: the last batch is padded, and the padding must not leak in
    losses, targets = char_loss.window_losses(model, ids, seq_len=7, max_windows=13, batch_size=5)
    want_losses, want_targets = reference_losses(model, ids, 7, 13)
    assert len(losses) == 13 and losses.dtype == np.float64
    np.testing.assert_array_equal(targets, want_targets)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-6)


def test_by_character_groups_like_a_python_loop():
    vocab = data.Vocab.from_text("abcd")
    rng = np.random.default_rng(2)
    targets = rng.choice([0, 1, 3], size=200)  # "c" never occurs
    losses = rng.uniform(0, 4, size=200)
    groups = defaultdict(list)
    for loss, target in zip(losses, targets):
        groups[vocab.chars[target]].append(loss)
    rows = char_loss.by_character(losses, targets, vocab)
    assert {row.character for row in rows} == set(groups) == {"a", "b", "d"}
    for row in rows:
        assert row.count == len(groups[row.character])
        assert row.mean_loss == pytest.approx(sum(groups[row.character]) / row.count)
        assert row.share == pytest.approx(sum(groups[row.character]) / losses.sum())
    assert [row.share for row in rows] == sorted((row.share for row in rows), reverse=True)
    assert sum(row.share for row in rows) == pytest.approx(1.0)


def test_compare_splits_each_mean_by_character_like_a_python_loop():
    vocab = data.Vocab.from_text("abcd")
    rng = np.random.default_rng(3)
    targets = rng.choice([0, 2, 3], size=300)  # "b" never occurs
    runs = [(rng.uniform(0, 4, size=300), targets) for _ in range(3)]
    rows = char_loss.compare(runs, vocab)
    assert {row.character for row in rows} == {"a", "c", "d"}
    for row in rows:
        mask = targets == vocab.chars.index(row.character)
        assert row.count == mask.sum()
        for r, (losses, _) in enumerate(runs):
            assert row.mean_loss[r] == pytest.approx(losses[mask].mean())
            assert row.part[r] == pytest.approx(losses[mask].sum() / 300)
    for r, (losses, _) in enumerate(runs):  # the parts add up to each run's mean
        assert sum(row.part[r] for row in rows) == pytest.approx(losses.mean())
    spreads = [max(row.part) - min(row.part) for row in rows]
    assert spreads == sorted(spreads, reverse=True)
    with pytest.raises(cleaning.DataError, match="same windows"):
        char_loss.compare([runs[0], (runs[1][0], np.roll(targets, 1))], vocab)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus_path):
    from configs import tiny
    from lstm import train
    root = tmp_path_factory.mktemp("char_loss")
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.data.val_fraction = 0.0
    config.checkpoint.monitor = "train_loss"
    config.train.max_steps = 4
    config.checkpoint.every_steps = 2  # steps 2 and 4 kept, for --which=2,latest
    config.checkpoint.keep_best = 3
    config.eval.max_windows = 16
    train.train_and_evaluate(config, root / "run")
    return root / "run"


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_script_table_json_and_bad_input(workdir):
    result = run_script(f"--workdir={workdir}", "--windows=50", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["windows"] == 50 and report["split"] == "train"
    rows = report["characters"]
    assert sum(row["count"] for row in rows) == 50
    assert report["mean_loss"] == pytest.approx(sum(r["mean_loss"] * r["count"] for r in rows) / 50)
    table = run_script(f"--workdir={workdir}", "--windows=50", "--rows=3")
    assert table.returncode == 0 and "mean loss" in table.stdout
    assert len(table.stdout.strip().splitlines()) == 3 + 3  # title, header, rule, 3 rows
    no_val = run_script(f"--workdir={workdir}", "--split=val")
    assert no_val.returncode == 1 and no_val.stderr.count("\n") == 1 and "held nothing out" in no_val.stderr


def test_script_compares_checkpoints_against_a_numpy_recount(workdir):
    done = run_script(f"--workdir={workdir}", "--which=2,latest", "--windows=50", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [2, 4] and report["windows"] == 50
    from lstm import state
    for index, step in enumerate([2, 4]):
        model, vocab, config = state.load_model(workdir, step)
        ids = data.load_corpus(config.data).train
        losses, targets = reference_losses(model, ids, config.data.seq_len, 50)
        assert report["checkpoints"][index]["mean_loss"] == pytest.approx(losses.mean(), rel=1e-5)
        for row in report["characters"]:
            mask = targets == vocab.chars.index(row["character"])
            assert row["count"] == mask.sum()
            assert row["part"][index] == pytest.approx(losses[mask].sum() / 50, rel=1e-4, abs=1e-6)
    table = run_script(f"--workdir={workdir}", "--which=2,4", "--windows=50", "--rows=2")
    assert table.returncode == 0 and f"{workdir}@2" in table.stdout and f"{workdir}@4" in table.stdout
    assert len(table.stdout.strip().splitlines()) == 3 + 2 + 1  # title, header, rule, 2 rows, all
    for args, message in [(("--which=first",), "--which takes latest, best"),
                          (("--which=3",), "no checkpoint for step 3")]:
        bad = run_script(f"--workdir={workdir}", *args)
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
