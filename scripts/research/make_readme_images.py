"""Makes the README's notebook image, docs/images/word_boundary_unit.png.

    python scripts/research/make_readme_images.py   # trains configs/tiny.py (~10 s) in a temporary folder
    python scripts/research/make_readme_images.py --workdir=runs/tiny

The calls are those of the README's "Use it from a notebook" example, on the tiny config as
committed (seed 0, so the CPU run and the picture repeat exactly).
"""
import os
import sys
import tempfile

# Config files import their base as `configs.default`, so the repository root must be importable.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from lstm import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "A trained workdir; unset: train configs/tiny.py in a temporary folder.")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "docs", "images", "word_boundary_unit.png"),
                           "Where the image goes.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from lstm import state, train
    from lstm.analysis import heatmaps, units
    os.chdir(ROOT)  # the configs' data paths are relative to the repository root
    workdir = _WORKDIR.value
    with cli.one_line_errors():
        if workdir is None:
            from configs import tiny
            workdir = tempfile.mkdtemp(prefix="readme-images-")
            train.train_and_evaluate(tiny.get_config(), workdir)
        model, vocab, config = state.load_model(workdir)
        text = units.held_out_text(config, 600)
        traces = units.trace_text(model, vocab, text)
        best = units.best_unit(traces, units.word_boundary(text))
        h = traces[best["layer"] - 1]["h"][:, best["unit"]]
        fig = heatmaps.text_heatmap(text, h, span=(100, 500),
                                    title=f"layer {best['layer']}, unit {best['unit']}: r = {best['r']:.2f}")
        fig.savefig(_OUT.value, dpi=100)
    print(f"{_OUT.value}: layer {best['layer']}, unit {best['unit']}, r = {best['r']:.3f}")


if __name__ == "__main__":
    cli.run(main)
