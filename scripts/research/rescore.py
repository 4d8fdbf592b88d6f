"""Scores a trained run's held-out text under several evaluation protocols, beside its count model.

    python scripts/research/rescore.py --workdir=runs/shakespeare --context=window,256,1024,continuous

Each protocol is an `eval.context` value (lstm/evaluation.py): window (the run's seq_len
windows, each from a zero state), a window length such as 256 (nanoGPT's), or continuous
(--streams stretches of the tail with the state carried). The held-out text is the one the
run's config names, cleaned and split as for training; every window is scored (no
eval.max_windows cap). The count model (lstm/ngram.py) is fitted on the same training split.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_string("which", "best", "Checkpoint: best, latest or a step.")
_CONTEXT = flags.DEFINE_list("context", ["window", "256", "continuous"], "Protocols, as eval.context values.")
_STREAMS = flags.DEFINE_integer("streams", 10, "Streams for the continuous protocol.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _STREAMS.value < 1:
        cli.fail(f"--streams must be >= 1; got {_STREAMS.value}")
    from lstm import evaluation
    for context in _CONTEXT.value:
        try:
            evaluation.context_length(context)
        except ValueError as error:
            cli.fail(str(error).replace("eval.context", "--context"))
    with cli.one_line_errors():
        rows, baseline = _rescore()
    if _JSON.value:
        print(json.dumps({"workdir": _WORKDIR.value, "which": _WHICH.value, "losses": rows, **baseline}))
        return
    order, loss = baseline["count_model_order"], baseline["count_model_loss"]
    print(f"{_WORKDIR.value} ({_WHICH.value}, step {baseline['step']}): held-out nats/char")
    print("| protocol | nats/char | bits/char |\n|---|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.4f} | {value * evaluation.LOG2E:.3f} |")
    print(f"| count model ({order}-gram, same split) | {loss:.4f} | {loss * evaluation.LOG2E:.3f} |")


def _rescore():
    import ml_collections
    import numpy as np
    from flax import nnx

    from lstm import data, distributed, evaluation, ngram
    which, = cli.checkpoint_choices([_WHICH.value])
    (run,) = cli.trained_checkpoints(_WORKDIR.value, [which], "val")
    corpus = data.load_corpus(ml_collections.ConfigDict({**run.config.data.to_dict(), "download": False}))
    graphdef, params = nnx.split(run.model)
    mesh = distributed.data_mesh()
    ids = distributed.global_array(np.asarray(run.ids), distributed.replicated(mesh))
    rows = {}
    for context in _CONTEXT.value:
        config = ml_collections.ConfigDict(run.config.to_dict())
        config.eval.context, config.eval.streams = context, _STREAMS.value
        config.eval.max_windows = len(run.ids)  # every window, so protocols compare over the whole tail
        evaluation.check_protocol(config, len(run.ids))
        result = evaluation.evaluate(evaluation.make_eval_steps(graphdef, config), params, ids, len(run.ids),
                                     config, mesh)
        rows[result["val_protocol"]] = float(result["val_loss"])
    _, yardstick = ngram.beat_this(corpus)
    return rows, {"step": run.step, **yardstick}


if __name__ == "__main__":
    cli.run(main)
