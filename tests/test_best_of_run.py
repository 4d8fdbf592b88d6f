"""Best-of-run: every run with held-out text keeps the checkpoint of its best evaluation, even
when the save schedule would not have saved that step (a race), reports it in its summary and
metrics, and the sampler loads it by default; a resumed run remembers the best it had."""
import numpy as np
import pytest

from lstm import checkpoint, evaluation, logger, sample, state, train
from lstm.analysis import results
from tests.test_train import final_params, tiny_config

# Held-out losses an overfitting run would report at its evaluations, in order: the best
# (2.0) is the second evaluation, and the run ends worse than it.
SCRIPTED = [3.0, 2.0, 2.5, 2.7, 2.9, 3.1]


@pytest.fixture
def scripted_evaluations(monkeypatch):
    """train.evaluate with the real evaluation's keys and SCRIPTED's losses, so the best step
    is known in advance; the rest of the loop (saving, ranking, logging) is the real one."""
    real, calls = train.evaluate, []

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        loss = SCRIPTED[len(calls)]
        calls.append(loss)
        return {**result, "val_loss": loss, "val_bpc": loss * evaluation.LOG2E}

    monkeypatch.setattr(train, "evaluate", evaluate)
    return calls


def race_config(corpus_path, max_steps):
    """Evaluates every 10 steps and saves only at the end: a race's schedule."""
    config = tiny_config(corpus_path, max_steps=max_steps, eval_every_steps=10)
    config.checkpoint.every_steps = 100_000
    config.eval.every_epoch = False
    config.eval.sample_length = 0
    return config


def test_a_race_keeps_and_reports_its_best_evaluation(corpus_path, tmp_path, scripted_evaluations):
    summary = train.train_and_evaluate(race_config(corpus_path, 40), tmp_path / "race")
    assert scripted_evaluations == SCRIPTED[:4]  # steps 10, 20, 30, 40
    assert summary["best_step"] == 20 and summary["best_val_loss"] == 2.0
    assert summary["val_loss"] == 2.7  # the last evaluation stays reported beside the best
    assert summary["eval_s"] > 0 and summary["save_s"] > 0 and summary["eval_s"] < summary["elapsed_s"]

    records = logger.read_metrics(tmp_path / "race")
    assert [r["best"] for r in records if r["event"] == "eval"] == [True, True, False, False]
    best = [r for r in records if r["event"] == "best"]
    assert len(best) == 1 and best[0]["best_step"] == 20 and best[0]["val_loss"] == 2.0
    assert best[0]["step"] == 40  # the record sits at the end of the run
    assert results.training_time(records)[1] == 1  # one lifetime: no step goes back

    # The best step's parameters are those of an independent run stopped at step 20.
    short = tiny_config(corpus_path, max_steps=20, eval_every_steps=0)
    train.train_and_evaluate(short, tmp_path / "twenty")
    expected = final_params(tmp_path / "twenty", short)
    step, flat, _ = _load(tmp_path / "race", "best")
    assert step == 20
    for name, value in expected.items():
        np.testing.assert_array_equal(np.asarray(flat[name]), value, err_msg=name)
    generator = sample.Generator.from_workdir(tmp_path / "race")  # the default is the best
    np.testing.assert_array_equal(np.asarray(generator.params["head_W"][...]), expected[".params['head_W'].value"])


def _load(workdir, which):
    graphdef, loaded, vocab, config, step = state.load_state(workdir, which)
    return step, state.flatten_state(loaded), config


def test_a_resumed_run_remembers_its_best(corpus_path, tmp_path, scripted_evaluations):
    train.train_and_evaluate(race_config(corpus_path, 20), tmp_path)  # evaluations 3.0, 2.0
    summary = train.train_and_evaluate(race_config(corpus_path, 40), tmp_path)  # then 2.5, 2.7
    assert summary["best_step"] == 20 and summary["best_val_loss"] == 2.0
    evals = [r for r in logger.read_metrics(tmp_path) if r["event"] == "eval"]
    assert [r["best"] for r in evals] == [True, True, False, False]


def test_train_loss_monitoring_keeps_no_held_out_best(corpus_path, tmp_path, scripted_evaluations):
    config = race_config(corpus_path, 20)
    config.checkpoint.monitor = "train_loss"
    summary = train.train_and_evaluate(config, tmp_path)
    assert "best_step" not in summary
    assert not any(r.get("best") for r in logger.read_metrics(tmp_path))


@pytest.mark.parametrize("every_epoch", [True, False])
def test_epoch_end_saves_can_be_turned_off(corpus_path, tmp_path, monkeypatch, every_epoch):
    """checkpoint.every_epoch=False (a GPU race's short epochs and large checkpoints): saves
    come only from the step schedule, improving evaluations and the end."""
    saved, real_save = [], checkpoint.Checkpointer.save

    def save(self, step, *args, **kwargs):
        saved.append(step)
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    config = race_config(corpus_path, 40)
    config.data.stride = 64  # 9-step epochs: four end inside the 40 steps
    config.train.num_epochs = 10
    config.checkpoint.every_epoch = every_epoch
    train.train_and_evaluate(config, tmp_path)

    records = logger.read_metrics(tmp_path)
    epoch_ends = [r["step"] for r in records if r["event"] == "epoch" and r["epoch_complete"]]
    improved = [r["step"] for r in records if r["event"] == "eval" and r["best"]]
    assert epoch_ends == [9, 18, 27, 36]
    expected = set(improved) | {40} | (set(epoch_ends) if every_epoch else set())
    assert saved == sorted(expected)
