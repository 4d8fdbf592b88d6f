"""Prints the count-model yardstick for a config: Kneser-Ney character n-grams on its split.

    python scripts/baseline.py --config=configs/shakespeare.py

Interpolated modified Kneser-Ney (lstm/ngram.py), orders 1 to --max_order, fitted on exactly
the training split that `--config` trains on and scored on exactly its held-out split (the
same cleaning and split point, through lstm.data.load_corpus), in nats/char and bits/char.
A model that does not beat the best row has learnt less than counting does. Seconds for a
1 MB corpus; needs no JAX.
"""
import json
import math
import os
import sys
import time

# Config files import their base as `configs.default`, so the repository root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_CONFIG = cli.define_config_flag("configs/default.py", "The training config whose split to score.")
_MAX_ORDER = flags.DEFINE_integer("max_order", 8, "Highest n-gram order (1 to 16).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not 1 <= _MAX_ORDER.value <= 16:
        cli.fail(f"--max_order must be in 1..16; got {_MAX_ORDER.value}")
    import ml_collections

    from lstm import data, ngram
    config = _CONFIG.value
    with cli.one_line_errors():
        corpus = data.load_corpus(ml_collections.ConfigDict({**config.data.to_dict(), "download": False}))
        if corpus.val is None:
            cli.fail("the config holds nothing out (data.val_fraction=0); set e.g. "
                     "--config.data.val_fraction=0.1")
        started = time.perf_counter()
        losses = ngram.baseline(corpus.train, corpus.val, len(corpus.vocab), _MAX_ORDER.value)
        seconds = time.perf_counter() - started
    order, loss = ngram.best(losses)
    if _JSON.value:
        print(json.dumps({"config": config.name, "path": corpus.path, "train_chars": len(corpus.train),
                          "val_chars": len(corpus.val), "vocab": len(corpus.vocab),
                          "losses": losses, "best_order": order, "best_loss": loss, "seconds": seconds}))
        return
    print(f"{config.name}: {corpus.path}, {len(corpus.train):,} training / {len(corpus.val):,} held-out "
          f"characters, vocabulary {len(corpus.vocab)}; fitted and scored in {seconds:.1f} s")
    print(ngram.table(losses))
    print(f"beat this: {loss:.4f} nats/char ({loss / math.log(2):.3f} bits/char), order {order}")


if __name__ == "__main__":
    cli.run(main)
