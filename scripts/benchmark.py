"""Benchmarks, one subcommand per section:

    python scripts/benchmark.py train [--json]     s/step of our training step vs PyTorch, Flax, Keras
    python scripts/benchmark.py sample [--json]    chars/s of generation vs the tutorial's loop
    python scripts/benchmark.py iteration [--json] µs per iteration of the recurrence, part by part

`train` times the peers installed from requirements-bench.txt and reports the others as skipped.

Every number is taken after compilation (compile time is its own column) and is the best of
--repeats runs. `--json` prints one JSON object instead of the table.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
sys.path.insert(0, ROOT)  # config files import their base as `configs.default`

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement; the best is reported.")
_LENGTH = flags.DEFINE_integer("length", 1000, "sample: characters generated per stream.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "sample: numbers of streams generated at once.")
_ENCODINGS = flags.DEFINE_list("encodings", ["scaled", "embed"], "sample: input encodings of the model.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "sample: sampling temperature (0 is greedy).")
_UNROLL = flags.DEFINE_integer("unroll", None, "sample: unroll of the generation scan (default: the library's).")
_SHAPES = flags.DEFINE_list("shapes", ["small", "bigger", "shakespeare"],
                            "train, iteration: configs whose shapes are timed.")
_PEERS = flags.DEFINE_list("peers", ["pytorch", "flax", "keras", "jax-cudnn"],
                           "train: peer implementations timed beside ours (jax-cudnn needs a GPU).")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "train, iteration: interleaved timing rounds (the median is reported).")
_UNROLLS = flags.DEFINE_list("unrolls", ["1"], "train: scan unrolls of our step to time.")
_MATMUL_DTYPES = flags.DEFINE_list("matmul_dtypes", ["float32"],
                                   "train: our step's matmul operand dtypes to time (float32, bfloat16).")
_CELLS = flags.DEFINE_list("cells", ["lstm"], "train: cell variants of our step to time (lstm/cells/), "
                           "e.g. lstm,peephole,cifg,layernorm.")
_BATCH = flags.DEFINE_integer("batch", None, "train, iteration: override every shape's batch size (smoke runs).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", None, "train, iteration: override every shape's window length (smoke runs).")
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    "keep_freed_memory", True, "Keep freed host buffers for reuse (lstm/host_memory.py), as training does; "
    "it holds for every contestant in the process.")
_BASELINE_CHARS = flags.DEFINE_integer("baseline_chars", 100,
                                       "sample: characters the tutorial's loop is timed over (0: skip it).")


def sample_section():
    from lstm import environment, sample
    from lstm.bench import sampling as bench
    unroll = _UNROLL.value or sample.DEFAULT_UNROLL
    rows = bench.sampling_rows(length=_LENGTH.value, batch_sizes=[int(b) for b in _BATCH_SIZES.value],
                               encodings=_ENCODINGS.value, temperature=_TEMPERATURE.value, unroll=unroll,
                               baseline_chars=_BASELINE_CHARS.value, repeats=_REPEATS.value)
    machine = environment.describe_machine()
    title = (f"sampling {_LENGTH.value:,} characters per stream, CharLSTM V={bench.BIGGER_VOCAB} "
             f"hidden {bench.BIGGER_HIDDEN}, temperature {_TEMPERATURE.value}\non {machine}")
    return {"section": "sample", "machine": machine, "environment": environment.environment(),
            "length": _LENGTH.value,
            "temperature": _TEMPERATURE.value, "rows": rows}, bench.format_rows(rows, title)


def train_section():
    from lstm import environment
    from lstm.bench import peers as bench_peers
    from lstm.bench import train_step as bench_train
    unknown = sorted(set(_PEERS.value) - set(bench_peers.PEERS))
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; choose from {', '.join(bench_peers.PEERS)}")
    shapes = sorted(set(_SHAPES.value) - set(bench_train.CONFIG_VOCAB))
    if shapes:  # before anything is timed
        raise ValueError(f"unknown shape {shapes[0]!r}; choose from {', '.join(bench_train.CONFIG_VOCAB)}")
    overrides = {key: value for key, value in (("train.batch_size", _BATCH.value),
                                               ("data.seq_len", _SEQ_LEN.value)) if value is not None}
    if any(value < 1 for value in overrides.values()) or _ROUNDS.value < 1:
        raise ValueError("--batch, --seq_len and --rounds must be >= 1")
    configs = {name: cli.load_config_file(os.path.join(CONFIGS, f"{name}.py"), overrides)
               for name in _SHAPES.value}
    from lstm.cells import CELLS
    bad_cells = sorted(set(_CELLS.value) - set(CELLS))
    if bad_cells:
        raise ValueError(f"unknown --cells value {bad_cells[0]!r}; choose from {', '.join(CELLS)}")
    bad_dtypes = sorted(set(_MATMUL_DTYPES.value) - {"float32", "bfloat16"})
    if bad_dtypes:
        raise ValueError(f"unknown --matmul_dtypes value {bad_dtypes[0]!r}; choose float32 or bfloat16")
    result = bench_train.train_rows(configs, _PEERS.value, rounds=_ROUNDS.value,
                                    unrolls=[int(u) for u in _UNROLLS.value],
                                    matmul_dtypes=_MATMUL_DTYPES.value, cells=_CELLS.value,
                                    log=lambda message: print(message, file=sys.stderr, flush=True))
    machine = environment.describe_machine()
    title = (f"training step (forward + backward + Adam), median of {_ROUNDS.value} interleaved rounds\n"
             f"on {machine}")
    return ({"section": "train", "machine": machine, "environment": environment.environment(),
             "rounds": _ROUNDS.value, **result},
            bench_train.format_train_rows(result, title))


def iteration_section():
    from lstm import environment
    from lstm.bench import iteration as bench
    from lstm.bench import train_step as bench_train
    unknown = sorted(set(_SHAPES.value) - set(bench_train.CONFIG_VOCAB))
    if unknown:
        raise ValueError(f"unknown shape {unknown[0]!r}; choose from {', '.join(bench_train.CONFIG_VOCAB)}")
    if _ROUNDS.value < 1:
        raise ValueError("--rounds must be >= 1")
    shapes = {}
    for name in _SHAPES.value:
        config = cli.load_config_file(os.path.join(CONFIGS, f"{name}.py"))
        batch = config.train.batch_size if _BATCH.value is None else _BATCH.value
        seq_len = config.data.seq_len if _SEQ_LEN.value is None else _SEQ_LEN.value
        shapes[name] = (batch, max(config.model.hidden_sizes), seq_len)
    if any(value < 1 for shape in shapes.values() for value in shape):
        raise ValueError("--batch and --seq_len must be >= 1")
    rows = bench.iteration_rows(shapes, rounds=_ROUNDS.value,
                                log=lambda message: print(message, file=sys.stderr, flush=True))
    machine = environment.describe_machine()
    title = f"one iteration of the recurrence, part by part, median of {_ROUNDS.value} rounds\non {machine}"
    return ({"section": "iteration", "machine": machine, "environment": environment.environment(),
             "rounds": _ROUNDS.value, "rows": rows}, bench.format_iteration_rows(rows, title))


SECTIONS = {"train": train_section, "sample": sample_section, "iteration": iteration_section}


def main(argv):
    if len(argv) != 2 or argv[1] not in SECTIONS:
        cli.fail(f"usage: benchmark.py {{{'|'.join(SECTIONS)}}} [--json]; got {' '.join(argv[1:]) or 'nothing'}")
    for name in ("repeats", "length"):
        if flags.FLAGS[name].value < 1:
            cli.fail(f"--{name} must be >= 1")
    if _KEEP_FREED_MEMORY.value:  # before any contestant starts its threads
        from lstm import host_memory
        host_memory.keep_freed_memory()
    with cli.one_line_errors(ValueError):  # ValueError: a bad --encodings or --batch_sizes value
        record, table = SECTIONS[argv[1]]()
    print(json.dumps(record) if _JSON.value else table)


if __name__ == "__main__":
    cli.run(main)
