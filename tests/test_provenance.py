"""What a run records about its machine, and compare_runs.py's account of where two runs part,
checked on hand-written metrics and fake /proc and /sys files whose answers are known."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lstm import environment
from lstm.analysis import provenance

ROOT = Path(__file__).resolve().parents[1]


def train(step, loss, epoch=1):
    return {"event": "train", "step": step, "epoch": epoch, "loss": loss}


def epoch(number, loss, complete=True):
    return {"event": "epoch", "step": 10 * number, "epoch": number, "train_loss": loss,
            "epoch_complete": complete}


def test_identical_runs_have_no_first_difference():
    records = [train(5, 3.0), train(10, 2.5), epoch(1, 2.75)]
    got = provenance.compare(records, [dict(r) for r in records])
    assert got.common_train_steps == 2
    assert got.first_different_step is None and got.max_train_difference == 0.0
    assert got.epochs == [(1, 2.75, 2.75)]


def test_first_difference_is_the_first_common_step_that_differs_in_any_bit():
    a = [train(5, 3.0), train(10, 2.5), train(15, 2.25), train(20, 2.0), epoch(1, 2.6), epoch(2, 2.1)]
    b = [train(5, 3.0), train(10, 2.5), train(15, 2.25 + 2 ** -20), train(20, 2.0 - 0.125),
         epoch(1, 2.6), epoch(2, 2.0, complete=False)]
    got = provenance.compare(a, b)
    assert got.first_different_step == 15
    assert got.max_train_difference == 0.125
    assert got.epochs == [(1, 2.6, 2.6)]  # b's epoch 2 is partial: not comparable


def test_steps_only_one_run_logged_are_left_out_and_a_resumed_step_counts_once():
    a = [train(5, 3.0), train(10, 2.5), train(20, 2.0)]
    # b was killed after step 10 and resumed from step 5: its second step-10 record replaces the first.
    b = [train(5, 3.0), train(10, 9.0), train(10, 2.5), train(15, 2.2), train(20, 2.0)]
    got = provenance.compare(a, b)
    assert (got.common_train_steps, got.first_different_step) == (3, None)


def test_evaluations_are_paired_by_step():
    a = [{"event": "eval", "step": 10, "val_loss": 2.0}, {"event": "eval", "step": 20, "val_loss": 1.8}]
    b = [{"event": "eval", "step": 20, "val_loss": 1.9}]
    assert provenance.compare(a, b).evals == [(20, 1.8, 1.9)]


def test_environment_differences_name_nested_keys():
    a = {"jax": "0.10.2", "cpu": {"cores_usable": 1, "caches": {"L2": "512K"}}}
    b = {"jax": "0.10.2", "cpu": {"cores_usable": 2, "caches": {"L2": "1024K"}}, "xla_flags": "-x"}
    assert provenance.environment_differences(a, b) == [
        ("cpu.caches.L2", "512K", "1024K"), ("cpu.cores_usable", 1, 2), ("xla_flags", None, "-x")]


def test_cpuinfo_reads_the_first_processor_only(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: First CPU\nflags\t\t: fpu avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: Second CPU\nflags\t\t: fpu\n")
    fields = environment._cpuinfo(path)
    assert fields["model name"] == "First CPU" and fields["flags"] == "fpu avx2 fma"
    assert environment._cpuinfo(tmp_path / "missing") == {}


def test_caches_are_named_by_level_and_kind(tmp_path):
    for index, (level, kind, size) in enumerate([("1", "Data", "32K"), ("1", "Instruction", "32K"),
                                                 ("2", "Unified", "512K"), ("3", "Unified", "32768K")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(value + "\n")
    assert environment._caches(tmp_path) == {"L1d": "32K", "L1i": "32K", "L2": "512K", "L3": "32768K"}


def test_environment_is_json_and_names_this_process():
    env = json.loads(json.dumps(environment.environment()))
    assert env["jax"] == jax.__version__ and env["devices"] == jax.device_count()
    if hasattr(os, "sched_getaffinity"):
        assert env["cpu"]["cores_usable"] == len(os.sched_getaffinity(0))
    assert set(env["cpu"]["vector_extensions"]) <= set(environment.VECTOR_EXTENSIONS)


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "research" / "compare_runs.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def write_run(path, records):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps({"wall_time": 1.0, **r}) + "\n" for r in records))
    return path


def test_script_reports_where_two_runs_part(tmp_path):
    env = {"event": "environment", "step": 0, "elapsed_s": 0.0,
           "environment": {"jax": "0.10.2", "devices": 1, "backend": "cpu",
                           "cpu": {"model": "Test CPU", "cores_usable": 1}}}
    other = json.loads(json.dumps(env))
    other["environment"]["cpu"]["cores_usable"] = 2
    a = write_run(tmp_path / "a", [env, train(5, 3.0), train(10, 2.5), epoch(1, 2.75)])
    b = write_run(tmp_path / "b", [other, train(5, 3.0), train(10, 2.25), epoch(1, 2.5)])
    result = run_script(f"--workdir={a},{b}")
    assert result.returncode == 0, result.stderr
    assert "differs: cpu.cores_usable: 1 vs 2" in result.stdout
    assert "first differs at step 10 of 2 logged steps both have; largest difference 0.25" in result.stdout
    assert "-0.2500" in result.stdout
    report = json.loads(run_script(f"--workdir={a},{b}", "--json").stdout)
    assert report["first_different_step"] == 10 and report["epochs"] == [[1, 2.75, 2.5]]


@pytest.mark.parametrize("args, message", [
    (["--workdir=only_one"], "--workdir takes two workdirs"),
    (["--workdir=missing_a,missing_b"], "workdir missing_a not found"),
])
def test_script_bad_input_is_one_line(args, message):
    result = run_script(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
