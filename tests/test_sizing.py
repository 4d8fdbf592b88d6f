"""configs/mytext.py and lstm/sizing.py: rates of -1 become the measured recipes' rates for
the passes a run makes over its text, overrides stay, the run records plain numbers; and every
shipped config with held-out text keeps its best held-out checkpoint."""
import importlib
import json
from pathlib import Path

import pytest

from configs import alice_30min, mytext, shakespeare_30min
from lstm import cleaning, sizing, train

ROOT = Path(__file__).resolve().parents[1]
RATES = ("dropout", "input_dropout", "embed_dropout", "weight_drop")


def rates(config):
    return {name: config.model[name] for name in RATES}


def test_passes_is_positions_trained_over_training_characters():
    config = shakespeare_30min.get_config()
    # 14,000 steps × 64 windows × 64 positions over Tiny Shakespeare's 1,003,854 training characters
    assert sizing.passes(config, 1_003_854) == pytest.approx(14_000 * 64 * 64 / 1_003_854)
    config.data.objective = "last"  # one target per window
    assert sizing.passes(config, 1_000) == pytest.approx(14_000 * 64 / 1_000)


@pytest.mark.parametrize("module, train_characters", [(shakespeare_30min, 1_003_854), (alice_30min, 129_996)],
                         ids=["shakespeare_30min", "alice_30min"])
def test_the_bands_give_the_rates_of_the_runs_they_come_from(module, train_characters):
    """At the passes of the two measured 30-minute runs (docs/results.md), the sizing picks
    exactly those runs' regularisers."""
    config = module.get_config()
    assert sizing.rates_for(sizing.passes(config, train_characters)) == rates(config)


def test_few_passes_get_the_ablations_one_gain_only():
    # The 2,000-step ablation (~8 passes): locked output dropout 0.2 helped, the rest cost.
    assert sizing.rates_for(8.2) == dict(dropout=0.2, input_dropout=0.0, embed_dropout=0.0, weight_drop=0.0)


def own_text(tmp_path, characters):
    """A text that is not in the repository: Cyrillic, Greek and emoji among ASCII."""
    line = "Съешь же ещё этих мягких французских булок, да выпей чаю. Ξεσκεπάζω 🙂 the lazy dog.\n"
    path = tmp_path / "mine.txt"
    path.write_text((line * (characters // len(line) + 1))[:characters], encoding="utf-8")
    return path


def test_mytext_sizes_its_rates_from_the_file_and_keeps_overrides(tmp_path):
    config = mytext.get_config()
    config.data.path = str(own_text(tmp_path, 200_000))  # 180,000 training characters
    config.model.embed_dropout = 0.05  # set by hand: kept
    sized, message = sizing.fit_to_corpus(config)
    expected_passes = 14_000 * 64 * 64 / 180_000  # ~319: Alice's band
    assert expected_passes >= 150
    assert rates(sized) == dict(dropout=0.3, input_dropout=0.1, embed_dropout=0.05, weight_drop=0.5)
    assert message == ("sized for 180,000 training characters (319 passes in 14,000 steps): dropout 0.3, "
                       "input_dropout 0.1, weight_drop 0.5 (lstm/sizing.py)")
    assert config.model.dropout == sizing.AUTO  # the caller's config is left alone

    config.data.path = str(own_text(tmp_path, 4_000_000))  # ~16 passes
    assert rates(sizing.fit_to_corpus(config)[0])["weight_drop"] == 0.0


def test_a_config_without_auto_rates_is_returned_as_it_is_without_reading_the_text(tmp_path):
    config = shakespeare_30min.get_config()
    config.data.path = str(tmp_path / "absent.txt")
    assert sizing.fit_to_corpus(config) == (config, None)


@pytest.mark.parametrize("change, error, message", [
    (dict(path=""), sizing.SizingError, "data.path is empty: pass --config.data.path=FILE"),
    (dict(path="/nonexistent/mine.txt"), cleaning.DataError, "/nonexistent/mine.txt"),
    (dict(max_steps=0), sizing.SizingError, "needs train.max_steps > 0"),
])
def test_what_cannot_be_sized_is_one_line(change, error, message, tmp_path):
    config = mytext.get_config()
    config.data.path = change.get("path", str(own_text(tmp_path, 10_000)))
    config.train.max_steps = change.get("max_steps", 100)
    with pytest.raises(error, match=message) as raised:
        sizing.fit_to_corpus(config)
    assert "\n" not in str(raised.value)


def test_evaluation_follows_max_steps():
    config = mytext.get_config()
    assert config.train.eval_every_steps == 700  # twenty evaluations in the 14,000 steps
    config.train.max_steps = 4700  # as --config.train.max_steps=4700 sets it
    assert config.train.eval_every_steps == 235


def test_a_mytext_run_records_the_sized_rates_and_resumes(tmp_path):
    config = mytext.get_config()
    config.data.path = str(own_text(tmp_path, 30_000))
    config.model.hidden_sizes = (16,)
    config.model.embed_dim = 8
    config.train.max_steps = 6
    config.train.time_budget_s = 0.0
    config.eval.max_windows = 16
    config.eval.sample_length = 0
    workdir = tmp_path / "run"
    summary = train.train_and_evaluate(config, workdir)
    assert summary["step"] == 6 and "best_val_loss" in summary
    recorded = json.loads((workdir / "checkpoints" / "config.json").read_text())["model"]
    # 6 × 64 × 64 / 27,000 ≈ 0.9 passes: the fewest-passes band, written as plain numbers
    assert {name: recorded[name] for name in RATES} == dict(dropout=0.2, input_dropout=0.0,
                                                             embed_dropout=0.0, weight_drop=0.0)
    assert any(r["event"] == "train" for r in map(json.loads, (workdir / "metrics.jsonl").open()))
    config.train.max_steps = 8  # the same command, longer: sizes alike, so the workdir is compatible
    assert train.train_and_evaluate(config, workdir)["step"] == 8


def shipped_configs():
    return sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "default"))


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_with_held_out_text_keeps_its_best(name):
    """A run with held-out text must evaluate before its end, on a schedule, and keep the best
    step; evaluating only after the budget keeps whatever the end holds, overfitted or not."""
    config = importlib.import_module(f"configs.{name}").get_config()
    if config.data.val_fraction == 0:
        pytest.skip(f"{name} holds no text out (the tutorial's setup); --config.data.val_fraction "
                    "turns on the defaults: every epoch")
    assert config.checkpoint.monitor == "val_loss" and config.checkpoint.keep_best >= 1
    assert config.eval.every_epoch or config.train.eval_every_steps > 0
