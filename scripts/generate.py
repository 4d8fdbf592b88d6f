"""Generates text from a trained workdir, printing characters as they are made.

    python scripts/generate.py --workdir=runs/bigger --seed_text="alice was" --length=1000 --temperature=0.8
    echo "alice was" | python scripts/generate.py --workdir=runs/tiny --seed_text=- --json

Without --seed_text the seed is, as in the tutorial, a random window of config.data.seq_len
characters of the training corpus (when the file the config names is still there). The seed is
cleaned the way the corpus was (the faithful configs lower-case). Everything the model needs
comes from the workdir's checkpoints. Bad input gets one line on stderr and exit status 1.
"""
import json
import os
import sys

# Config files import their base as `configs.default`, so the repository root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_string("which", "best", "Checkpoint to sample from: best, latest or a step.")
_SEED_TEXT = flags.DEFINE_string(
    "seed_text", None, "Text to continue; '-' reads standard input (one trailing newline dropped); "
    "unset or empty: a random window of the training corpus.")
_LENGTH = flags.DEFINE_integer("length", 1000, "Characters to generate (the tutorial: 1000).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature; 0 is greedy (the tutorial's argmax).")
_TOP_K = flags.DEFINE_integer("top_k", None, "Sample only among the k most likely characters.")
_TOP_P = flags.DEFINE_float("top_p", None, "Sample only within the nucleus of this probability mass, in (0, 1].")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Independent samples, generated as one batch.")
_RNG = flags.DEFINE_integer("rng", 0, "Random seed: picks the corpus window and the samples.")
_UNKNOWN = flags.DEFINE_enum("unknown", "error", ["error", "skip"],
                             "Seed characters outside the vocabulary: fail naming them, or drop them.")
_JSON = flags.DEFINE_bool("json", False,
                          "Print one JSON object (seed, text, settings, chars_per_s) instead of streaming.")


def corpus_window(config, rng: int) -> str:
    """A random seq_len window of the training text, like the tutorial's seed."""
    import ml_collections
    import numpy as np

    from lstm import cleaning, data
    cfg = config.data.to_dict()
    if not os.path.isfile(os.path.expanduser(cfg["path"])):
        raise cleaning.DataError(f"no --seed_text given and the training corpus {cfg['path']} is not "
                                 "here to pick a window from; pass --seed_text")
    corpus = data.load_corpus(ml_collections.ConfigDict({**cfg, "download": False}))
    length = min(int(cfg["seq_len"]), len(corpus.train))
    start = np.random.default_rng(rng).integers(0, len(corpus.train) - length + 1)
    return corpus.vocab.decode(corpus.train[start:start + length])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        _generate()
    except BrokenPipeError:  # `| head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no complaint at exit
        sys.exit(0)
    except KeyboardInterrupt:  # Ctrl-C while streaming: end the text's line, then say why
        sys.stdout.write("\n")
        sys.stdout.flush()
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except (ValueError, OSError) as error:  # DataError and CheckpointError are ValueErrors
        cli.fail(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


def _generate():
    from lstm import sample  # after flag parsing: --help stays fast
    which, = cli.checkpoint_choices([_WHICH.value])
    settings = dict(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
    sample.check_settings(_LENGTH.value, num_samples=_NUM_SAMPLES.value, **settings)
    seed_text = _SEED_TEXT.value
    if seed_text == "-":
        seed_text = sys.stdin.read()
        seed_text = seed_text[:-1] if seed_text.endswith("\n") else seed_text
    generator = sample.Generator.from_workdir(_WORKDIR.value, which)
    if not seed_text:
        seed_text = corpus_window(generator.config, _RNG.value)
    seed, _ = generator.prepare_seed(seed_text, _UNKNOWN.value)
    arguments = dict(length=_LENGTH.value, num_samples=_NUM_SAMPLES.value, rng=_RNG.value,
                     unknown=_UNKNOWN.value, **settings)
    if _JSON.value:
        text = generator.generate(seed_text, **arguments)
        timings = generator.timings  # chars/s of the generation itself, compile time apart
        print(json.dumps({"seed": seed, "text": text, "settings": arguments, "workdir": _WORKDIR.value,
                          "which": which, "chars_per_s": round(timings["chars_per_s"], 1),
                          "compile_s": round(timings["compile_s"], 3)}, ensure_ascii=False))
    elif _NUM_SAMPLES.value == 1:
        sys.stdout.write(seed)
        sys.stdout.flush()
        for piece in generator.stream(seed_text, **arguments):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:  # interleaved streams would be unreadable: print each sample whole
        for index, text in enumerate(generator.generate(seed_text, **arguments)):
            sys.stdout.write(f"--- sample {index + 1} ---\n{seed}{text}\n")


if __name__ == "__main__":
    cli.run(main)
