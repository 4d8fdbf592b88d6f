"""lstm.results and scripts/make_results.py on synthetic workdirs: no training, expectations
worked out by hand (times, best epochs) or independently (bits = nats / ln 2)."""
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lstm.analysis import results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_results.py"
SPE = 10  # steps per epoch of the synthetic runs


def make_run(path, records, *, num_epochs=3, max_steps=0, name="synthetic", config=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config:
        meta = {"name": name, "seed": 7,
                "data": {"objective": "last", "seq_len": 100, "val_fraction": 0.1, "stride": 1,
                         "path": str(path / "no-such-corpus.txt")},  # epoch length from metrics only
                "model": {"encoding": "scaled", "hidden_sizes": [256, 256]},
                "train": {"batch_size": 64, "num_epochs": num_epochs, "max_steps": max_steps}}
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "config.json").write_text(json.dumps(meta))
    return path


def train(step, wall, elapsed, loss=2.0):
    return {"wall_time": wall, "event": "train", "step": step, "epoch": (step - 1) // SPE + 1,
            "loss": loss, "elapsed_s": elapsed}


def epoch(step, wall, elapsed, loss, complete=True):
    return {"wall_time": wall, "event": "epoch", "step": step, "epoch": (step - 1) // SPE + 1,
            "train_loss": loss, "epoch_complete": complete, "elapsed_s": elapsed}


def evaluation(step, wall, val_loss):
    # val_bpc deliberately wrong: the summary must derive bits from nats itself
    return {"wall_time": wall, "event": "eval", "step": step, "epoch": (step - 1) // SPE + 1,
            "val_loss": val_loss, "val_bpc": -1.0}


def three_epochs():
    """Epoch means 2.5, 2.1, 2.2 (best: epoch 2), validation 2.4, 2.0, 2.3 (best: step 20)."""
    return [train(5, 1005.0, 5.0, 2.9), train(10, 1010.0, 10.0, 2.6), epoch(10, 1010.0, 10.0, 2.5),
            evaluation(10, 1012.0, 2.4), train(20, 1022.0, 22.0, 2.2), epoch(20, 1022.0, 22.0, 2.1),
            evaluation(20, 1024.0, 2.0), train(30, 1034.0, 34.0, 2.3), epoch(30, 1034.0, 34.0, 2.2),
            evaluation(30, 1036.0, 2.3)]


# ------------------------------------------------------------------------------ time rule
def test_single_lifetime_counts_startup_then_the_gaps():
    seconds, lifetimes = results.training_time(three_epochs())
    assert lifetimes == 1
    assert seconds == pytest.approx(5.0 + (1036.0 - 1005.0))  # first elapsed_s + last - first wall


def test_resume_skips_the_downtime_when_elapsed_restarts():
    first = [train(10, 1000.0, 100.0), epoch(10, 1000.0, 100.0, 2.5), evaluation(10, 1003.0, 2.4),
             {"wall_time": 1004.0, "event": "sample", "step": 10, "seed": "ab", "sample": "cd",
              "temperature": 0.5}]
    second = [train(20, 9000.0, 30.0), train(30, 9040.0, 70.0)]  # 2 h later, clock restarted
    seconds, lifetimes = results.training_time(first + second)
    assert lifetimes == 2
    assert seconds == pytest.approx((100.0 + 4.0) + (30.0 + 40.0))


def test_resume_is_found_even_when_elapsed_does_not_go_down():
    # the new process's first record is at elapsed 150 s, past the old one's 100 s: only the
    # disagreement between wall and elapsed differences (8000 vs 50) reveals the restart
    records = [train(10, 1000.0, 100.0), train(20, 9000.0, 150.0), train(30, 9010.0, 160.0)]
    assert results.training_time(records) == (pytest.approx(100.0 + 150.0 + 10.0), 2)


def test_environment_records_start_their_process_without_adding_the_downtime():
    # train.py writes one at every (re)start, at the step it starts from, elapsed ~0
    def environment(step, wall):
        return {"wall_time": wall, "event": "environment", "step": step, "environment": {}, "elapsed_s": 0.0}
    records = [environment(0, 990.0), train(10, 1000.0, 10.0), environment(10, 9000.0),
               train(20, 9030.0, 30.0)]
    assert results.training_time(records) == (pytest.approx(10.0 + 30.0), 2)


def test_backwards_wall_time_or_step_starts_a_lifetime_without_elapsed():
    records = [{"wall_time": 500.0, "step": 1}, {"wall_time": 510.0, "step": 2},
               {"wall_time": 100.0, "step": 3}, {"wall_time": 120.0, "step": 4},  # clock back
               {"wall_time": 130.0, "step": 1}, {"wall_time": 135.0, "step": 2}]  # step back
    assert results.training_time(records) == (pytest.approx(10.0 + 20.0 + 5.0), 3)


# ------------------------------------------------------------------------------- summary
def test_summary_picks_best_whole_epoch_and_converts_nats_to_bits(tmp_path):
    records = three_epochs() + [train(33, 1040.0, 40.0), epoch(33, 1040.0, 40.0, 1.9, complete=False)]
    s = results.summarize_run(make_run(tmp_path / "run", records, num_epochs=4))
    assert (s["best_train_loss"], s["best_train_epoch"], s["best_train_partial"]) == (2.1, 2, False)
    assert (s["last_train_loss"], s["last_train_epoch"]) == (1.9, 4)  # the partial one is last
    assert s["epochs"] == 3 and s["steps"] == 33 and s["steps_per_epoch"] == SPE
    assert (s["best_val_loss"], s["best_val_step"], s["last_val_loss"]) == (2.0, 20, 2.3)
    assert s["best_val_bpc"] == pytest.approx(2.0 * math.log2(math.e))
    assert s["last_val_bpc"] == pytest.approx(2.3 / math.log(2))
    assert (s["config"], s["hidden_sizes"], s["batch_size"], s["seed"]) == ("synthetic", [256, 256], 64, 7)
    assert s["wall_time_s"] == pytest.approx(5.0 + 35.0)


def test_only_partial_epochs_fall_back_to_them(tmp_path):
    s = results.summarize_run(make_run(tmp_path / "run", [train(4, 10.0, 1.0),
                                                          epoch(4, 10.0, 1.0, 3.0, complete=False)]))
    assert (s["best_train_loss"], s["best_train_partial"], s["epochs"]) == (3.0, True, 0)
    assert s["best_val_loss"] is None and s["best_val_bpc"] is None


@pytest.mark.parametrize("records, kwargs, finished, total", [
    (three_epochs(), dict(num_epochs=3), True, 30),
    (three_epochs(), dict(num_epochs=5), False, 50),
    (three_epochs(), dict(num_epochs=5, max_steps=30), True, 30),
    # no whole epoch and no corpus: the epoch length is unknown, but max_steps caps the plan
    ([train(7, 10.0, 1.0)], dict(max_steps=7), True, None),
    ([train(7, 10.0, 1.0)], dict(max_steps=0), None, None),
    (three_epochs(), dict(config=False), None, None),
])
def test_finished_flag(tmp_path, records, kwargs, finished, total):
    s = results.summarize_run(make_run(tmp_path / "run", records, **kwargs))
    assert (s["finished"], s["total_steps"]) == (finished, total)


def test_samples_are_collected_in_order(tmp_path):
    records = [{"wall_time": 1.0 + i, "event": "sample", "step": 10 * i, "seed": "the ",
                "sample": f"text {i}", "temperature": 0.5} for i in range(1, 4)]
    workdir = make_run(tmp_path / "run", [train(5, 0.5, 0.5)] + records)
    assert [s["text"] for s in results.collect_samples(workdir)] == ["text 1", "text 2", "text 3"]
    latest = results.collect_samples(workdir, last=1)
    assert latest == [{"step": 30, "seed": "the ", "text": "text 3", "temperature": 0.5}]
    assert "```text\ntext 3\n```" in results.samples_markdown("run", latest)


# --------------------------------------------------------------------------- table, plot
def test_markdown_table_has_the_header_and_one_row_per_run(tmp_path):
    a = results.summarize_run(make_run(tmp_path / "a", three_epochs(), num_epochs=3))
    b = results.summarize_run(make_run(tmp_path / "b", three_epochs(), num_epochs=5), label="b|x")
    lines = results.markdown_table([a, b], ["run", "model", "steps", "finished", "best_train",
                                            "best_val_bpc", "seed"]).splitlines()
    assert lines[0] == "| run | model | steps | finished | best train loss | best val (bits/char) | seed |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    bits = f"{2.0 / math.log(2):.3f}"
    assert lines[2] == f"| a | 2×256 scaled | 30 / 30 | yes | 2.1000 (epoch 2) | {bits} | 7 |"
    assert lines[3] == f"| b\\|x | 2×256 scaled | 30 / 50 | no | 2.1000 (epoch 2) | {bits} | 7 |"
    assert len(lines) == 4
    with pytest.raises(results.ResultsError, match="unknown column 'nope'"):
        results.markdown_table([a], ["nope"])


def test_plot_writes_a_small_valid_png(tmp_path):
    runs = [make_run(tmp_path / "a", three_epochs()), make_run(tmp_path / "b", three_epochs()[:6])]
    out = results.plot_curves(runs, tmp_path / "images" / "curves.png", "two runs",
                              reference=[(3, 1.9, "reference")])
    payload = out.read_bytes()
    assert payload[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", payload[16:24]) == (640, 400)  # IHDR: 6.4 x 4 in at 100 dpi
    assert 5_000 < len(payload) < 100_000
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary left


def test_missing_or_empty_workdir_is_a_results_error(tmp_path):
    with pytest.raises(results.ResultsError, match="not found"):
        results.summarize_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.ResultsError, match="holds no records"):
        results.summarize_run(tmp_path / "empty")


# ---------------------------------------------------------------------------------- CLI
def run_script(*args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_plots_and_prints_table_and_json(tmp_path):
    make_run(tmp_path / "runs" / "small", three_epochs(), name="small")
    make_run(tmp_path / "runs" / "other", three_epochs()[:6])
    args = ["--runs=runs/small,runs/other", "--out_dir=images", "--plot=curves:small+other",
            "--reference=curves:2:2.0:mine", "--json"]
    done = run_script(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert [s["run"] for s in record["runs"]] == ["small", "other"]
    assert (tmp_path / "images" / "curves.png").stat().st_size > 5_000
    table = run_script("--runs=runs/small", cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.splitlines()[2].startswith("| small | small |")


@pytest.mark.parametrize("setup, args, named", [
    (lambda root: None, ["--runs=runs/absent"], "runs/absent"),
    (lambda root: (root / "runs" / "empty").mkdir(parents=True), ["--runs=runs/empty"], "runs/empty"),
    (lambda root: None, ["--runs=runs/x", "--plot=bad:RUN"], "--plot"),
])
def test_cli_bad_input_is_one_line(tmp_path, setup, args, named):
    setup(tmp_path)
    done = run_script(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and named in done.stderr


def test_time_axis_plot_is_written_and_unknown_time_plot_is_refused(tmp_path):
    # Fixed-budget comparisons are drawn against seconds; a --time_plots typo is one line.
    run = tmp_path / "run"
    run.mkdir()
    records = [{"event": "train", "step": s, "loss": 3.0 - s / 100, "wall_time": 1000.0 + s,
                "elapsed_s": 5.0 + s} for s in (10, 20, 30)]
    records.append({"event": "eval", "step": 30, "val_loss": 2.5, "wall_time": 1032.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = results.plot_curves([run, run, run], tmp_path / "t.png", "t", labels=["a", "b", "c"], x_axis="time")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = subprocess.run([sys.executable, str(SCRIPT), f"--runs={run}", "--plot=p:run", "--time_plots=q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "--time_plots names 'q'" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- epoch table
def test_epoch_table_pairs_whole_epochs_and_differences_from_the_first(tmp_path):
    a = make_run(tmp_path / "a", three_epochs())  # epoch means 2.5, 2.1, 2.2
    # b: epochs 1 and 2 whole (2.4, 2.25), epoch 3 cut short: its mean is over other batches
    b = make_run(tmp_path / "b", [epoch(10, 10.0, 10.0, 2.4), epoch(20, 20.0, 20.0, 2.25),
                                  epoch(25, 25.0, 25.0, 1.0, complete=False)])
    assert results.epoch_losses(b) == {1: 2.4, 2: 2.25}
    lines = results.epoch_table([a, b], ["a", "b"]).splitlines()
    assert lines == ["| epoch | a | b | b − a |", "|---:|---:|---:|---:|",
                     "| 1 | 2.5000 | 2.4000 | -0.1000 |",
                     "| 2 | 2.1000 | 2.2500 | +0.1500 |",
                     "| 3 | 2.2000 | – | – |"]
    with pytest.raises(results.ResultsError, match="no whole epoch"):
        results.epoch_table([make_run(tmp_path / "c", [train(5, 1.0, 1.0)])])


def test_cli_prints_the_epoch_table_and_names_an_unknown_run(tmp_path):
    make_run(tmp_path / "runs" / "a", three_epochs())
    make_run(tmp_path / "runs" / "b", three_epochs()[:3])
    done = run_script("--runs=runs/a", "--epoch_table=a+runs/b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| 1 | 2.5000 | 2.5000 | +0.0000 |" in done.stdout.splitlines()
    record = json.loads(run_script("--runs=runs/a", "--epoch_table=a", "--json", cwd=tmp_path).stdout)
    assert record["epoch_losses"] == {"a": {"1": 2.5, "2": 2.1, "3": 2.2}}
    bad = run_script("--runs=runs/a", "--epoch_table=a+nope", cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --epoch_table=a+nope: 'nope' is neither a --runs name (a) nor a workdir"


# ------------------------------------------------------------------------------ step time
def test_step_time_leaves_out_compilation_and_the_gap_across_a_resume():
    # Process 1 starts at wall 1000: 8 s to step 10 (compilation), then 10 steps in 2 s and 10
    # in 3 s. Process 2 resumes at wall 2000: 9 s to step 40, then 20 steps in 4 s.
    records = [train(10, 1008.0, 8.0), train(20, 1010.0, 10.0), epoch(20, 1010.0, 10.0, 2.0),
               train(30, 1013.0, 13.0), train(40, 2009.0, 9.0), train(60, 2013.0, 13.0)]
    assert results.step_time(records) == pytest.approx((2 + 3 + 4) / (10 + 10 + 20))


def test_step_time_splits_processes_by_start_even_when_elapsed_rises():
    # A short first process (to elapsed 3 s) and a resume whose first log is at elapsed 8 s:
    # elapsed rises across the resume, but the processes started 100 s apart.
    records = [train(10, 1002.0, 2.0), train(20, 1003.0, 3.0), train(30, 1108.0, 8.0),
               train(40, 1110.0, 10.0)]
    assert results.step_time(records) == pytest.approx((1 + 2) / (10 + 10))
    assert results.step_time([train(10, 1002.0, 2.0)]) is None


def test_cli_step_time_column(tmp_path):
    make_run(tmp_path / "runs" / "a", three_epochs())
    done = run_script("--runs=runs/a", "--columns=run,step_ms", cwd=tmp_path)
    # gaps: 5 steps in 5 s, then 10 in 12 s twice (evaluations included): 29 s / 25 steps
    assert done.returncode == 0 and done.stdout.splitlines()[2] == "| a | 1160.0 |"


def test_validation_table_rows_per_evaluation_with_partial_epochs_and_the_best_in_bold(tmp_path):
    # three_epochs(), then a run stopped 1 step into epoch 4: a partial epoch mean of 1.9
    stopped = [*three_epochs(), epoch(31, 1040.0, 40.0, 1.9, complete=False), evaluation(31, 1041.0, 2.5)]
    lines = results.validation_table(make_run(tmp_path / "runs" / "a", stopped)).splitlines()
    ln2 = math.log(2)
    assert lines[2:] == [f"| 1 | 10 | 2.5000 | 2.4000 | {2.4 / ln2:.3f} |",
                         f"| 2 | 20 | 2.1000 | **2.0000** | **{2.0 / ln2:.3f}** |",
                         f"| 3 | 30 | 2.2000 | 2.3000 | {2.3 / ln2:.3f} |",
                         f"| 3.10 | 31 | 1.9000 (partial) | 2.5000 | {2.5 / ln2:.3f} |"]
    with pytest.raises(results.ResultsError, match="no validation loss"):
        results.validation_table(make_run(tmp_path / "b", three_epochs()[:3]))
    done = run_script("--runs=runs/a", "--val_table=runs/a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"| 3.10 | 31 | 1.9000 (partial) | 2.5000 | {2.5 / ln2:.3f} |" in done.stdout.splitlines()
