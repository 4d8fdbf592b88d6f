"""Benchmarks, one subcommand per section:

    python scripts/benchmark.py sample [--json]    chars/s of generation vs the tutorial's loop

Every number is taken after compilation (compile time is its own column) and is the best of
--repeats runs. `--json` prints one JSON object instead of the table.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement; the best is reported.")
_LENGTH = flags.DEFINE_integer("length", 1000, "sample: characters generated per stream.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "sample: numbers of streams generated at once.")
_ENCODINGS = flags.DEFINE_list("encodings", ["scaled", "embed"], "sample: input encodings of the model.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "sample: sampling temperature (0 is greedy).")
_UNROLL = flags.DEFINE_integer("unroll", None, "sample: unroll of the generation scan (default: the library's).")
_BASELINE_CHARS = flags.DEFINE_integer("baseline_chars", 100, "sample: characters the tutorial's loop is timed over (0: skip it).")


def sample_section():
    from lstm import bench, sample
    unroll = _UNROLL.value or sample.DEFAULT_UNROLL
    rows = bench.sampling_rows(length=_LENGTH.value, batch_sizes=[int(b) for b in _BATCH_SIZES.value],
                               encodings=_ENCODINGS.value, temperature=_TEMPERATURE.value, unroll=unroll,
                               baseline_chars=_BASELINE_CHARS.value, repeats=_REPEATS.value)
    title = (f"sampling {_LENGTH.value:,} characters per stream, CharLSTM V={bench.BIGGER_VOCAB} "
             f"hidden {bench.BIGGER_HIDDEN}, temperature {_TEMPERATURE.value}\non {bench.machine()}")
    return {"section": "sample", "machine": bench.machine(), "length": _LENGTH.value,
            "temperature": _TEMPERATURE.value, "rows": rows}, bench.format_rows(rows, title)


# A later section (`train`) registers here.
SECTIONS = {"sample": sample_section}


def main(argv):
    if len(argv) != 2 or argv[1] not in SECTIONS:
        cli.fail(f"usage: benchmark.py {{{'|'.join(SECTIONS)}}} [--json]; got {' '.join(argv[1:]) or 'nothing'}")
    for name in ("repeats", "length"):
        if flags.FLAGS[name].value < 1:
            cli.fail(f"--{name} must be >= 1")
    try:
        record, table = SECTIONS[argv[1]]()
    except ValueError as error:  # a bad --encodings or --batch_sizes value
        cli.fail(str(error).strip().splitlines()[0])
    print(json.dumps(record) if _JSON.value else table)


if __name__ == "__main__":
    cli.run(main)
