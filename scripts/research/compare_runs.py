"""Where two runs of one command part: the first logged step whose training loss differs in
any bit, the largest difference over the steps both logged, the completed epochs' mean losses
and the evaluations side by side, and what each run recorded about the machine it ran on.

    python scripts/research/compare_runs.py --workdir=docs/runs/small_keras1_seed1,runs/small_keras1_seed1
    python scripts/research/compare_runs.py --workdir=runs/a,runs/b --json

A seed fixes the numbers for one CPU, core count and build (lstm/provenance.py); this says how
far apart two runs drift when one of those changes. Runs from before training recorded its
environment show "not recorded".
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIRS = flags.DEFINE_list("workdir", None, "The two workdirs to compare (metrics.jsonl).", required=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of tables.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if len(_WORKDIRS.value) != 2:
        cli.fail(f"--workdir takes two workdirs separated by a comma, not {len(_WORKDIRS.value)}")
    from lstm.analysis import provenance, results
    with cli.one_line_errors(results.ResultsError):
        records = [results.load_run(workdir)[0] for workdir in _WORKDIRS.value]
        comparison = provenance.compare(*records)
        environments = [provenance.environments(r) for r in records]
    if _JSON.value:
        print(json.dumps({"workdirs": _WORKDIRS.value, **comparison._asdict(),
                          "environments": [[e["environment"] for e in envs] for envs in environments]},
                         indent=1))
        return
    print(_report(comparison, environments))


def _describe(environment: dict) -> str:
    cpu = environment.get("cpu", {})
    return (f"{cpu.get('model', '?')} (family {cpu.get('family', '?')}, model {cpu.get('model_number', '?')}; "
            f"{' '.join(cpu.get('vector_extensions', [])) or 'no listed extensions'}; "
            f"{_count(cpu.get('cores_usable'), 'core')} usable), "
            f"{_count(environment.get('devices'), environment.get('backend', '?') + ' device')}, "
            f"jax {environment.get('jax', '?')}")


def _count(number, noun: str) -> str:
    return f"{'?' if number is None else number} {noun}{'' if number == 1 else 's'}"


def _report(comparison, environments) -> str:
    from lstm.analysis import provenance
    from lstm.analysis.tables import text_table
    labels = ("A", "B")
    lines = [f"{label} = {workdir}" for label, workdir in zip(labels, _WORKDIRS.value)]
    for label, envs in zip(labels, environments):
        if not envs:
            lines.append(f"{label} ran on: not recorded")
        for record in envs:
            lines.append(f"{label} ran from step {record['step']:,} on {_describe(record['environment'])}")
    if environments[0] and environments[1]:
        differences = provenance.environment_differences(environments[0][-1]["environment"],
                                                         environments[1][-1]["environment"])
        lines += [f"  differs: {key}: {a!r} vs {b!r}" for key, a, b in differences] or ["  same environment"]
    if comparison.first_different_step is None:
        lines.append(f"training loss: identical at all {comparison.common_train_steps:,} logged steps both runs have")
    else:
        lines.append(f"training loss: first differs at step {comparison.first_different_step:,} of "
                     f"{comparison.common_train_steps:,} logged steps both have; largest difference "
                     f"{comparison.max_train_difference:.3g}")
    for title, rows, key in (("epoch-mean training loss", comparison.epochs, "epoch"),
                             ("validation loss", comparison.evals, "step")):
        if rows:
            table = [[f"{k:,}", f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"] for k, a, b in rows]
            lines += ["", text_table(title, [key, "A", "B", "B − A"], table, left=set())]
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
