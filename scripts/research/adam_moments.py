"""How close Adam's ε comes to the scale it is added to: √v̂ of every parameter, from the
optimizer state stored in a checkpoint, and how many parameters have √v̂ under 10·ε for each
--eps (there, ε changes the step by more than ~10%).

    python scripts/research/adam_moments.py --workdir=runs/small --which=latest --eps=1e-7,1e-8
    python scripts/research/adam_moments.py --workdir=runs/small --which=2308 --json

√v̂ is v/(1 − β₂ᵗ) under the root, with the run's β₂ and t the optimizer's step count. Under
Keras's placement (train.eps_placement=keras) ε acts as ε/√(1 − β₂ᵗ) against this √v̂; the
table's title gives that factor for the checkpoint's t.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.", required=True)
_WHICH = flags.DEFINE_string("which", "latest", "latest, best or a checkpoint's step.")
_EPS = flags.DEFINE_list("eps", ["1e-7", "1e-8"], "Values of ε to compare with √v̂.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        eps = [float(e) for e in _EPS.value]
    except ValueError:
        cli.fail(f"--eps must be numbers, not {','.join(_EPS.value)}")
    if not eps or min(eps) <= 0:
        cli.fail("--eps needs at least one value, each > 0")
    which, = cli.checkpoint_choices([_WHICH.value])
    with cli.one_line_errors():
        report = _measure(which, eps)
    if _JSON.value:
        print(json.dumps(report, indent=1))
        return
    from lstm.analysis.tables import text_table
    under = [f"√v̂ < {10 * e:g}" for e in eps]
    rows = [[name, f"{p['size']:,}", f"{p['min']:.2e}", f"{p['q01']:.2e}", f"{p['median']:.2e}",
             *(f"{p['under'][str(e)]:,}" for e in eps)] for name, p in report["parameters"].items()]
    total = report["total"]
    rows.append(["all", f"{total['size']:,}", f"{total['min']:.2e}", f"{total['q01']:.2e}",
                 f"{total['median']:.2e}", *(f"{total['under'][str(e)]:,}" for e in eps)])
    title = (f"{report['workdir']} step {report['step']}: Adam t = {report['adam_step']:,}, "
             f"β₂ = {report['b2']}; Keras's ε acts {report['keras_factor']:.3f}× larger")
    print(text_table(title, ["parameter", "size", "min √v̂", "1% √v̂", "median √v̂", *under], rows,
                     left={0}))


def _stats(values, eps) -> dict:
    import numpy as np
    return {"size": int(values.size), "min": float(values.min()), "q01": float(np.quantile(values, 0.01)),
            "median": float(np.median(values)), "under": {str(e): int((values < 10 * e).sum()) for e in eps}}


def _measure(which, eps) -> dict:
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from lstm import checkpoint, optim
    from lstm import state as run_state
    _, state, _, config, step = run_state.load_state(_WORKDIR.value, which)
    b2 = float(config.train.b2)
    try:
        adam_step, scales = optim.sqrt_v_hat(state.opt_state, b2)
    except ValueError as error:
        raise checkpoint.CheckpointError(f"step {step} in {_WORKDIR.value}: {error}") from None
    # Named as the checkpoint's mismatch messages name leaves, without nnx's trailing .value.
    scales = {".".join(k for k in ocp.tree.str_keypath(path) if k != "value"): np.asarray(v, np.float64).ravel()
              for path, v in jax.tree_util.tree_flatten_with_path(scales)[0]}
    return {"workdir": _WORKDIR.value, "step": step, "adam_step": adam_step, "b2": b2,
            "keras_factor": 1 / float(np.sqrt(1 - b2**adam_step)),
            "parameters": {name: _stats(v, eps) for name, v in scales.items()},
            "total": _stats(np.concatenate(list(scales.values())), eps)}

if __name__ == "__main__":
    cli.run(main)
