"""scripts/device_check.sh, the prepared GPU call, in its CPU smoke mode: every stage runs, and
what it returns unpacks into workdirs that the results tools can read. Without this the
script would first be exercised on a GPU, whose minutes are too few to debug plumbing in."""
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ALICE, ROOT

SCRIPT = ROOT / "scripts" / "device_check.sh"


def _run(env_extra, **kwargs):
    # WHEELS: a checkout may hold the wheels carried to the GPU (.whl); this CPU must not install them.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PY": sys.executable, "WHEELS": "no-wheels", **env_extra}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_refuses_to_run_without_an_out_folder():
    result = _run({"OUT": ""})
    assert result.returncode != 0
    assert "set OUT" in result.stderr


def test_a_failed_stage_fails_the_call_after_the_others_ran(tmp_path):
    result = _run({"OUT": str(tmp_path), "SMOKE": "1", "PY": "false"})
    assert result.returncode == 1
    assert "stages that failed: devices bench shakespeare_probe shakespeare_gpu bigger_val" in result.stderr


@pytest.mark.skipif(not ALICE.exists(), reason="needs data/wonderland.txt (make data)")
def test_smoke_runs_every_stage_and_returns_unpackable_workdirs(tmp_path):
    out = tmp_path / "out"
    result = _run({"OUT": str(out), "SMOKE": "1"})
    assert result.returncode == 0, result.stderr
    log = (out / "device_check.log").read_text()
    stages = [line for line in log.splitlines() if line.startswith("== ") and ": exit " in line]
    assert [line.split(":")[0] for line in stages] == [
        "== devices", "== bench", "== shakespeare_probe", "== shakespeare_gpu", "== bigger_val"]
    assert all(line.endswith(": exit 0") for line in stages), stages
    # The race's cosine is sized from the timing run's steps after compilation (a positive count).
    assert int(log.split("the race's cosine runs over ")[1].split()[0]) > 0

    bench = json.loads((out / "bench.json").read_text())
    assert bench["section"] == "train" and bench["rows"]

    # Only files one or two folders down come back from the device machine.
    returned = sorted(p.name for p in out.iterdir() if p.is_file())
    assert returned == ["bench.json", "device_check.log", "runs.tgz.aa", "samples.txt"]
    assert (out / "samples.txt").read_text().count("## best checkpoint") == 3
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with open(out / "runs.tgz.aa", "rb") as part, tarfile.open(fileobj=part, mode="r:gz") as archive:
        archive.extractall(unpacked, filter="data")
    for run in ("shakespeare_gpu", "bigger_val"):
        records = [json.loads(line) for line in (unpacked / run / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("event") == "eval" for r in records)
        assert (unpacked / run / "checkpoints" / "config.json").exists()
    # The bigger runs come back resumable: their latest checkpoint travels with them.
    assert any(p.name.isdigit() for p in (unpacked / "bigger_val" / "checkpoints").iterdir())
