"""scripts/research/variant_study.py grows a saved report: rows it has no runs for are kept."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "research" / "variant_study.py"
SAVED = ROOT / "docs" / "runs" / "variants" / "study.json"


def study(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), "--report_only", f"--root={cwd / 'none'}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_report_keeps_the_saved_variants_and_adds_the_new_one(tmp_path):
    out = tmp_path / "study.json"
    saved = json.loads(SAVED.read_text())
    saved["variants"] = [entry for entry in saved["variants"] if entry["cell"] != "fgr"]
    out.write_text(json.dumps(saved))
    result = study("--cells=lstm,fgr", f"--out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    by_cell = {entry["cell"]: entry for entry in report["variants"]}
    for entry in saved["variants"]:  # lstm has no runs here, so its saved row stays too
        assert by_cell[entry["cell"]] == entry
    assert by_cell["fgr"]["runs"] == []
    cells = [entry["cell"] for entry in report["variants"]]
    assert cells.index("cifg") < cells.index("fgr") < cells.index("layernorm")  # the study's order


def test_a_report_of_another_step_count_is_not_merged(tmp_path):
    out = tmp_path / "study.json"
    shutil.copy(SAVED, out)
    result = study("--cells=fgr", "--steps=7", f"--out={out}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "7 of configs/shakespeare.py" in result.stderr
    assert out.read_bytes() == SAVED.read_bytes()
