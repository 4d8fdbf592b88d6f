"""Every script answers --help and -h with its docstring and its own flags, without importing
JAX; train.py's --config_help lists each config field with its value and the reason its config
file gives; an unknown flag is still a one-line error. Expectations are read from the scripts'
and configs' source text here, not from lstm/usage.py."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("scripts/*.py"), *ROOT.glob("scripts/research/*.py")])
ABSL_OWN = ("--verbosity", "--logtostderr", "--flagfile", "--helpfull")


def run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def defined_flags(script: str) -> list[str]:
    source = (ROOT / script).read_text(encoding="utf-8")
    names = re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)
    if "define_config_flag(" in source:
        names += ["config", "config_help"]
    return names


def test_every_script_is_covered():
    assert {"scripts/train.py", "scripts/generate.py", "scripts/research/measure_scaling.py"} <= set(SCRIPTS)
    assert all(defined_flags(script) for script in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_the_docstring_and_the_scripts_own_flags(script):
    # -X importtime lists every module imported on stderr: JAX must not be among them.
    long = run("-X", "importtime", script, "--help")
    assert long.returncode == 0, long.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in long.stderr.splitlines() if line.startswith("import time:")}
    assert "jax" not in imported and "flax" not in imported
    summary = ast.get_docstring(ast.parse((ROOT / script).read_text(encoding="utf-8"))).splitlines()[0]
    assert summary in long.stdout
    for name in defined_flags(script):
        assert re.search(rf"--(\[no\])?{name}\b", long.stdout), f"--{name} missing from {script} --help"
    assert not any(flag in long.stdout for flag in ABSL_OWN), long.stdout
    short = run(script, "-h")
    assert (short.returncode, short.stdout, short.stderr) == (0, long.stdout, "")


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unknown_flag_is_a_one_line_error(script):
    result = run(script, "--no_such_flag=1")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("error:") and "no_such_flag" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_train_help_names_its_flags_and_how_to_list_the_config():
    result = run("scripts/train.py", "--help")
    assert "--workdir" in result.stdout and "--config_help" in result.stdout
    assert "configs/default.py" in result.stdout  # --config's default


def comment(config_file: str, field: str) -> str:
    """The trailing comment of `field`'s assignment in `config_file`, read with a regex."""
    text = (ROOT / config_file).read_text(encoding="utf-8")
    match = re.search(rf"^\s*(?:config\.)?{re.escape(field)} = [^#\n]*#\s*(.+)$", text, re.M)
    assert match, f"{field} has no trailing comment in {config_file}"
    return match.group(1).strip()


def field_line(output: str, field: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(f"{field} = ")]
    assert len(lines) == 1, f"{field} listed {len(lines)} times"
    return lines[0]


def test_config_help_lists_fields_with_defaults_and_reasons():
    result = run("scripts/train.py", "--config_help")
    assert result.returncode == 0, result.stderr
    for field, value in (("train.eps", "1e-07"), ("data.seq_len", "100"), ("model.encoding", "'scaled'")):
        line = field_line(result.stdout, field)
        assert line.startswith(f"{field} = {value}") and line.endswith("# " + comment("configs/default.py", field))
    assert field_line(result.stdout, "train.batch_size").startswith("train.batch_size = 128")
    assert field_line(result.stdout, "checkpoint.every_steps").startswith("checkpoint.every_steps = 500")


def test_config_help_shows_the_chosen_config_and_its_overrides():
    result = run("scripts/train.py", "--config=configs/small.py", "--config.train.num_epochs=3", "--config_help")
    assert result.returncode == 0, result.stderr
    assert "configs/small.py" in result.stdout.splitlines()[0]
    # small.py's own comment where it gives one, default.py's where it only changes the value.
    line = field_line(result.stdout, "data.val_fraction")
    assert line.startswith("data.val_fraction = 0.0")
    assert line.endswith(comment("configs/small.py", "data.val_fraction"))
    assert field_line(result.stdout, "train.batch_size").endswith(comment("configs/small.py", "train.batch_size"))
    assert field_line(result.stdout, "data.seq_len").endswith(comment("configs/default.py", "data.seq_len"))
    assert field_line(result.stdout, "train.num_epochs").startswith("train.num_epochs = 3")
    assert field_line(result.stdout, "name").startswith("name = 'small'")


def test_a_typo_in_an_override_of_the_default_config_is_a_one_line_error():
    # Without --config=, config_flags loads the default file while the flag is being defined.
    result = run("scripts/train.py", "--config.train.batch_sise=3", "--config_help")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: bad config override --config.train.batch_sise")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
