"""The notebooks are committed without outputs and run top to bottom, headless, at tiny size;
the README's notebook example runs as written.

Policy: outputs are stripped in git (every code cell has no outputs and no execution count),
so diffs show only code and text. Execution uses nbclient with a kernel on this interpreter,
from notebooks/ as Jupyter would start it.
"""
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALICE = ROOT / "data" / "wonderland.txt"
CELL_TIMEOUT_S = 300  # per cell; each notebook takes well under a minute on the 2-core CPU


def test_there_are_notebooks():
    assert {path.name for path in NOTEBOOKS} >= {"explore.ipynb", "gates.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    dirty = [index for index, cell in enumerate(notebook["cells"])
             if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} keep outputs or execution counts; clear them "
                       "(Jupyter: Edit > Clear All Outputs; or jupyter nbconvert --clear-output --inplace)")
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name}: widget state in metadata"


@pytest.fixture
def python_kernel(tmp_path, monkeypatch):
    """A `python3` kernel spec that runs this interpreter, ahead of any user-wide one."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (lstm tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    return "python3"


def needs_corpus():
    if not ALICE.exists():
        pytest.skip("data/wonderland.txt missing (make test seeds it from ../shared/data)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless(path, python_kernel):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    if path.name == "explore.ipynb":
        needs_corpus()
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=python_kernel,
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - started
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells
                 for output in cell.get("outputs", []))
    if path.name == "explore.ipynb":
        assert images >= 8  # curves, regularisation pair, three text heat maps, gate heat maps, two saturation plots


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from a notebook", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_notebook_example_runs_as_written(tmp_path, monkeypatch):
    """Train runs/tiny with the tiny config (fewer steps), then run the README block verbatim
    from a folder laid out as the repository root it assumes (data/ beside runs/)."""
    needs_corpus()
    from configs import tiny
    from lstm import train

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ALICE.name).symlink_to(ALICE)
    monkeypatch.chdir(tmp_path)
    config = tiny.get_config()
    config.train.max_steps = 20
    train.train_and_evaluate(config, tmp_path / "runs" / "tiny")
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "unit.png").stat().st_size > 0
