"""Smoke runs of scripts/benchmark.py (tiny shapes, seconds) so the script cannot rot, and the
FLOP count behind its GFLOP/s column checked against a count written out by hand. No test
asserts a timing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm.bench import train_step as bench_train
from lstm.bench.peers import TrainShape

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_flops_match_a_hand_count_of_the_bigger_model():
    shape = TrainShape(name="bigger", batch=64, seq_len=100, vocab=45, hidden_sizes=(256, 256),
                       encoding="scaled", embed_dim=64, objective="last", dropout=0.2)
    layer1 = 2 * 64 * 100 * (1 + 256) * 1024  # x_t W_x (1 feature) + h_{t-1} W_h, every step
    layer2 = 2 * 64 * 100 * (256 + 256) * 1024
    head = 2 * 64 * 256 * 45  # the last position only
    assert bench_train.flops_per_step(shape) == 3 * (layer1 + layer2 + head)
    embedded_all = TrainShape(name="x", batch=2, seq_len=3, vocab=5, hidden_sizes=(4,), encoding="embed",
                              embed_dim=6, objective="all", dropout=0.0)
    assert bench_train.flops_per_step(embedded_all) == 3 * (2 * 2 * 3 * (6 + 4) * 16 + 2 * 2 * 3 * 4 * 5)


def test_train_section_smoke_reports_every_contestant_or_why_not():
    result = run_benchmark("train", "--shapes=tiny", "--rounds=1", "--batch=4", "--seq_len=8",
                           "--unrolls=2", "--matmul_dtypes=float32,bfloat16", "--cells=lstm,layernorm", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["section"] == "train" and record["ceiling_gflops"] > 0
    rows = record["rows"]
    assert {row["peer"] for row in rows} == {"ours", "pytorch", "flax", "keras", "jax-cudnn"}
    ours = {(row["matmul_dtype"], row["cell"], row["note"].rsplit(" ", 1)[-1]) for row in rows if row["peer"] == "ours"}
    assert ours == {(dtype, cell, "2") for dtype in ("float32", "bfloat16") for cell in ("lstm", "layernorm")}
    for row in rows:
        if row["skipped"]:  # an optional peer that is not installed here
            assert row["peer"] in ("pytorch", "keras", "jax-cudnn") and "s_per_step" not in row
            continue
        assert row["s_per_step"] > 0 and row["batch"] == 4 and row["seq_len"] == 8
        assert row["windows_per_s"] == pytest.approx(4 / row["s_per_step"])
        assert row["target_chars_per_s"] == pytest.approx(4 * 8 / row["s_per_step"])  # tiny is `all`
    table = bench_train.format_train_rows(record, "title")  # what the script prints without --json
    assert "floor" in table
    assert ("skipped" in table) == any(row["skipped"] for row in rows)
    assert table.count("tiny ") == len(rows)


def test_sample_section_smoke():
    result = run_benchmark("sample", "--length=16", "--batch_sizes=1,2", "--encodings=embed",
                           "--baseline_chars=2", "--repeats=1", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["batch"] for row in record["rows"]] == [1, 2, 1]
    # the machine comes with the numbers, down to the cores this process was allowed
    assert record["environment"]["cpu"]["cores_usable"] == len(os.sched_getaffinity(0))
    assert f"{len(os.sched_getaffinity(0))} cores" in record["machine"]
    assert all(row["chars_per_s"] > 0 for row in record["rows"])


def test_iteration_section_smoke_times_every_part_per_iteration():
    result = run_benchmark("iteration", "--shapes=tiny,small", "--rounds=1", "--batch=4", "--seq_len=6", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["section"] == "iteration"
    parts = ["loop", "matmul", "forward", "forward + 1 output", "forward + 2 outputs", "forward + 6 outputs",
             "backward", "dW_h"]
    assert [(r["shape"], r["part"]) for r in record["rows"]] == [(s, p) for s in ("tiny", "small") for p in parts]
    for row in record["rows"]:  # the shape's width, the overridden batch and length
        assert (row["batch"], row["hidden"], row["steps"]) == (4, 64 if row["shape"] == "tiny" else 256, 6)
        assert 0 < row["us_min"] <= row["us_per_iteration"] <= row["us_max"]


@pytest.mark.parametrize("args, message", [
    (["nonsense"], "usage"),
    (["train", "--peers=tensorflow"], "unknown peer 'tensorflow'"),
    (["train", "--shapes=huge"], "unknown shape 'huge'"),
    (["train", "--rounds=0"], "must be >= 1"),
    (["train", "--matmul_dtypes=float16"], "unknown --matmul_dtypes value 'float16'"),
    (["train", "--cells=bogus"], "unknown --cells value 'bogus'"),
    (["iteration", "--shapes=huge"], "unknown shape 'huge'"),
    (["iteration", "--batch=0"], "must be >= 1"),
])
def test_bad_arguments_fail_in_one_line(args, message):
    result = run_benchmark(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_profile_self_times_subtract_nested_events_per_thread():
    """A scan's while holding two body ops, and an op on another thread overlapping it: self
    time is the event's duration less what nests inside it on its own thread."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "scripts" / "research" / "profile_step.py")
    profile_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_step)
    op = lambda name, ts, dur, tid=1: {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name,
                                       "args": {"hlo_op": name}}
    events = [op("while.3", 0, 100), op("fusion.1", 10, 30), op("dot.2", 50, 40), op("fusion.1", 60, 20, tid=2),
              {"ph": "X", "pid": 1, "tid": 1, "ts": 95, "dur": 2, "name": "host work"},  # no hlo_op
              {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "xla"}}]
    assert profile_step.self_times(events) == {"while.3": [100 - 30 - 40 - 2, 1], "fusion.1": [50, 2],
                                               "dot.2": [40, 1]}
    assert profile_step.kind("fusion.12") == "fusion" and profile_step.kind("ynn_fusion") == "ynn_fusion"
