"""Where two runs of one command part, and on what machines (their `environment` records).

Why this matters, and what was measured: lstm/environment.py and docs/investigations.md,
"Reproducibility"."""
from __future__ import annotations

from typing import NamedTuple

from lstm.environment import EVENT


def environment_differences(first: dict, second: dict, prefix="") -> list[tuple[str, object, object]]:
    """(key, first's value, second's value) for every leaf that differs, nested keys dotted."""
    differences = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key), second.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += environment_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append((f"{prefix}{key}", a, b))
    return differences


class Comparison(NamedTuple):
    common_train_steps: int        # logged training steps both runs have
    first_different_step: int | None   # the first of them whose loss differs in any bit
    max_train_difference: float    # largest |loss_b − loss_a| over them
    epochs: list                   # (epoch, loss_a, loss_b) for epochs both completed
    evals: list                    # (step, val_loss_a, val_loss_b) for steps both evaluated


def _by_step(records, event, key) -> dict:
    # The last record wins: after a resume, a step logged again replaces the earlier one.
    return {r["step"]: r[key] for r in records if r.get("event") == event and key in r}


def compare(first_records, second_records) -> Comparison:
    """Where two runs' metrics.jsonl records part: the logged training losses compared bit for
    bit at the steps both logged, and the completed epochs' mean losses and the evaluations
    side by side."""
    train_a, train_b = (_by_step(r, "train", "loss") for r in (first_records, second_records))
    steps = sorted(set(train_a) & set(train_b))
    first_different = next((s for s in steps if train_a[s] != train_b[s]), None)
    largest = max((abs(train_b[s] - train_a[s]) for s in steps), default=0.0)
    epochs_a, epochs_b = ({r["epoch"]: r["train_loss"] for r in records
                           if r.get("event") == "epoch" and r.get("epoch_complete", True)}
                          for records in (first_records, second_records))
    evals_a, evals_b = (_by_step(r, "eval", "val_loss") for r in (first_records, second_records))
    return Comparison(len(steps), first_different, largest,
                      [(e, epochs_a[e], epochs_b[e]) for e in sorted(set(epochs_a) & set(epochs_b))],
                      [(s, evals_a[s], evals_b[s]) for s in sorted(set(evals_a) & set(evals_b))])


def environments(records) -> list[dict]:
    """The environment records of a run, one per process start, oldest first."""
    return [r for r in records if r.get("event") == EVENT]
