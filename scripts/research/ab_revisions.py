"""Interleaved A/B of our training step between two revisions of this repository: did a change
make the default step slower?

    python scripts/research/ab_revisions.py --baseline=32e4616          # vs the working tree
    python scripts/research/ab_revisions.py --baseline=HEAD~3 --pairs=4 --shapes=bigger
    python scripts/research/ab_revisions.py --baseline=main --cells=lstm,peephole,layernorm

The baseline is checked out into a temporary git worktree. Then, `--pairs` times, each tree runs
`scripts/benchmark.py train --peers= --json` in its own process, the order alternating from pair
to pair so that drift in the machine's load falls on both; each process compiles once and
reports the median of its `--rounds`. The table gives, per shape, the median over pairs of each
tree's s/step, the spread (min–max) and the ratio; the ratio's own spread across pairs is the
run's noise. Both trees use the installed packages of the Python running this script.
"""
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import flags

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lstm import cli  # noqa: E402

_BASELINE = flags.DEFINE_string("baseline", None, "The git revision to compare the working tree with.",
                                required=True)
_PAIRS = flags.DEFINE_integer("pairs", 3, "Benchmark processes per tree, alternating.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timing rounds inside each process (its median is kept).")
_SHAPES = flags.DEFINE_list("shapes", ["small", "bigger", "shakespeare"], "Shapes to time.")
_CELLS = flags.DEFINE_list("cells", ["lstm"], "Cells to time at every shape (model.cell names both trees know).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")


def time_tree(tree: Path) -> dict:
    """{"shape" or "shape cell": s/step} of our step, from one benchmark process run in `tree`."""
    command = [sys.executable, str(tree / "scripts" / "benchmark.py"), "train", "--peers=", "--json",
               f"--rounds={_ROUNDS.value}", f"--shapes={','.join(_SHAPES.value)}", f"--cells={','.join(_CELLS.value)}"]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        cli.fail(f"the benchmark in {tree} failed: {last}")
    rows = json.loads(done.stdout)["rows"]
    return {row_name(row["shape"], row.get("cell", "lstm")): row["s_per_step"]
            for row in rows if row.get("s_per_step") is not None}


def row_name(shape: str, cell: str) -> str:
    return shape if _CELLS.value == ["lstm"] else f"{shape} {cell}"


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _PAIRS.value < 1:
        cli.fail(f"--pairs must be at least 1, not {_PAIRS.value}")
    revision = subprocess.run(["git", "rev-parse", "--short", _BASELINE.value], cwd=ROOT, capture_output=True,
                              text=True)
    if revision.returncode:
        cli.fail(f"--baseline={_BASELINE.value} is not a revision of this repository")
    revision = revision.stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        baseline = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), revision], cwd=ROOT, check=True)
        try:
            times = {"baseline": [], "working tree": []}
            for pair in range(_PAIRS.value):
                order = [("baseline", baseline), ("working tree", ROOT)]
                for name, tree in (order if pair % 2 == 0 else order[::-1]):
                    times[name].append(time_tree(tree))
                    print(f"pair {pair + 1}, {name}: {times[name][-1]}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
    result = {"baseline": revision, "pairs": _PAIRS.value, "rounds": _ROUNDS.value, "shapes": {}}
    for shape in [row_name(shape, cell) for shape in _SHAPES.value for cell in _CELLS.value]:
        a = [t[shape] for t in times["baseline"]]
        b = [t[shape] for t in times["working tree"]]
        ratios = [y / x for x, y in zip(a, b)]
        result["shapes"][shape] = {"baseline_s": a, "working_tree_s": b, "ratios": ratios,
                                   "ratio_median": statistics.median(ratios)}
    if _JSON.value:
        print(json.dumps(result, indent=1))
        return
    from lstm.analysis.tables import text_table
    from lstm.environment import describe_machine
    lines = []
    for shape, r in result["shapes"].items():
        a, b = r["baseline_s"], r["working_tree_s"]
        lines.append([shape, f"{statistics.median(a):.4f} ({min(a):.4f}–{max(a):.4f})",
                      f"{statistics.median(b):.4f} ({min(b):.4f}–{max(b):.4f})",
                      f"{r['ratio_median']:.3f} ({min(r['ratios']):.3f}–{max(r['ratios']):.3f})"])
    print(text_table(f"s/step, {revision} vs the working tree, {_PAIRS.value} pairs × {_ROUNDS.value} rounds; "
                     f"{describe_machine()}",
                     ["shape", f"{revision}", "working tree", "ratio"], lines, left={0}))


if __name__ == "__main__":
    cli.run(main)
