"""lstm.analysis's units, heatmaps, saturation and viz against expectations computed
independently: planted units, NumPy counts, hand-made feature vectors, and the figures' axes,
labels and drawn data."""
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

import lstm
from lstm import data
from lstm.analysis import heatmaps, saturation, units, viz

T, H = 50, 6  # passage length and units differ, so a swapped axis fails loudly


def passage(length=T):
    return ("'i can't,' said alice.\n" * 10)[:length]


# ---------------------------------------------------------------------------------- features
def test_inside_quotes_follows_quote_marks_and_skips_apostrophes():
    text = "he said 'don't go' and \"left\" now"
    expected = np.zeros(len(text))
    first, second = text.index("'don"), text.index("go'") + 2
    expected[first:second + 1] = 1  # 'don't go' with both quote marks; the apostrophe is inside
    expected[text.index('"'):text.rindex('"') + 1] = 1
    np.testing.assert_array_equal(units.inside_quotes(text), expected)


def test_inside_quotes_curly_marks_open_and_close():
    text = "a “b ‘c’ d” e"
    expected = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(units.inside_quotes(text), expected)


def test_line_position_counts_from_each_line_start():
    np.testing.assert_array_equal(units.line_position("ab\ncde\n\nf"), [0, 1, 2, 0, 1, 2, 3, 0, 0])


def test_word_boundary_marks_spaces_and_punctuation_not_apostrophes():
    text = "hi, don't\ngo"
    np.testing.assert_array_equal(units.word_boundary(text), [0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0])


def test_text_features_has_one_value_per_character():
    features = units.text_features(passage())
    assert set(features) == {"inside quotes", "line position", "word boundary"}
    assert all(f.shape == (T,) for f in features.values())


# ------------------------------------------------------------------------------- find_units
def test_find_units_finds_a_planted_unit():
    rng = np.random.default_rng(0)
    feature = units.line_position(passage())
    acts = rng.normal(0, 1, (T, H))
    acts[:, 4] = 0.02 * feature - 0.3  # an affine copy: r = 1 exactly
    acts[:, 1] = -feature + rng.normal(0, 3, T)  # anticorrelated, noisy
    ranking = units.find_units(acts, feature)
    assert ranking.units[0] == 4
    np.testing.assert_allclose(ranking.correlations[0], 1.0, atol=1e-12)
    assert ranking.units[1] == 1 and ranking.correlations[1] < 0
    assert sorted(ranking.units) == list(range(H))  # every unit, each once
    assert np.all(np.diff(np.abs(ranking.correlations)) <= 1e-12)  # strongest first


def test_correlations_equal_numpy_corrcoef_and_constant_units_give_zero():
    rng = np.random.default_rng(1)
    acts = rng.normal(0, 1, (2, T, H))  # [B, T, H]: batch and time are pooled
    acts[..., 2] = 0.7  # a unit that never moves
    feature = rng.normal(0, 1, (2, T))
    got = units.correlations(acts, feature)
    for unit in range(H):
        expected = 0.0 if unit == 2 else np.corrcoef(acts[..., unit].ravel(), feature.ravel())[0, 1]
        np.testing.assert_allclose(got[unit], expected, atol=1e-12)
    ranking = units.find_units(acts, feature, top=2)
    assert len(ranking.units) == 2 and 2 not in ranking.units


def test_find_units_refuses_mismatched_or_constant_features():
    with pytest.raises(ValueError, match="one value per character"):
        units.find_units(np.zeros((T, H)), np.zeros(T + 1))
    with pytest.raises(ValueError, match="constant"):
        units.find_units(np.ones((T, H)), np.ones(T))


def test_unit_table_lists_top_units_per_feature_and_layer():
    rng = np.random.default_rng(2)
    text = passage()
    features = units.text_features(text)
    traces = [{"h": rng.normal(0, 1, (T, H))} for _ in range(2)]
    traces[1]["h"][:, 3] = features["word boundary"]
    rows = units.unit_table(traces, features, top=2)
    assert len(rows) == 3 * 2 * 2
    assert set(rows[0]) == {"feature", "layer", "unit", "r"}
    planted = [r for r in rows if r["feature"] == "word boundary" and r["layer"] == 2]
    assert planted[0]["unit"] == 3 and planted[0]["r"] == 1.0


# -------------------------------------------------------------------------------- saturation
def hand_made_traces():
    """Two layers of gate values with known counts: 3×4 positions, 5 units."""
    rng = np.random.default_rng(3)
    layers = []
    for _ in range(2):
        layers.append({g: rng.uniform(0, 1, (3, 4, 5)) for g in "ifgo"})
    layers[0]["f"][:] = 0.95  # every forget value near 1
    layers[1]["i"][:] = 0.05  # every input value near 0
    layers[1]["o"][0, :, 0] = 0.1  # exactly on the threshold: counts as neither
    return layers


def test_saturation_fractions_equal_numpy_counts():
    traces = hand_made_traces()
    fractions = saturation.saturation_fractions(traces)
    assert len(fractions) == 2
    for layer, layer_fractions in zip(traces, fractions):
        assert set(layer_fractions) == {"i", "f", "o"}  # g is a tanh: not a saturating gate
        for gate, (near_zero, near_one) in layer_fractions.items():
            values = layer[gate]
            assert near_zero == pytest.approx(np.count_nonzero(values < 0.1) / values.size)
            assert near_one == pytest.approx(np.count_nonzero(values > 0.9) / values.size)
    assert fractions[0]["f"] == (0.0, 1.0)
    assert fractions[1]["i"] == (1.0, 0.0)


def test_saturation_fractions_per_unit():
    traces = hand_made_traces()
    per_unit = saturation.saturation_fractions(traces, per_unit=True)
    for layer, layer_fractions in zip(traces, per_unit):
        for gate, (near_zero, near_one) in layer_fractions.items():
            values = layer[gate].reshape(-1, 5)
            for unit in range(5):
                assert near_zero[unit] == pytest.approx(np.sum(values[:, unit] < 0.1) / 12)
                assert near_one[unit] == pytest.approx(np.sum(values[:, unit] > 0.9) / 12)


def test_gate_saturation_draws_one_panel_per_layer_with_the_counted_bars():
    traces = hand_made_traces()
    fig = saturation.gate_saturation(traces)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    expected = saturation.saturation_fractions(traces)
    for ax, layer, fractions in zip(fig.axes, (1, 2), expected):
        assert ax.get_title() == f"layer {layer}"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["i", "f", "o"]
        heights = [p.get_height() for p in ax.patches]
        assert heights == pytest.approx([fractions[g][0] for g in "ifo"] + [fractions[g][1] for g in "ifo"])
    scatter = saturation.gate_saturation(traces, per_unit=True)
    assert len(scatter.axes) == 2
    assert len(scatter.axes[0].collections) == 3  # one point cloud per gate
    np.testing.assert_allclose(scatter.axes[0].collections[1].get_offsets()[:, 1], 1.0)  # f: all > 0.9


# --------------------------------------------------------------------------------- heat maps
def test_activation_heatmap_has_the_text_as_its_axis():
    text = passage()
    values = np.random.default_rng(4).uniform(-1, 1, (T, H))
    fig = heatmaps.activation_heatmap(text, values, units=[5, 0, 2], title="units")
    ax, colorbar = fig.axes  # the heat map and its colour bar
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [{"\n": "↵", " ": "␣"}.get(ch, ch) for ch in text]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["5", "0", "2"]
    assert ax.get_title() == "units"
    np.testing.assert_array_equal(ax.images[0].get_array(), values[:, [5, 0, 2]].T)
    assert ax.images[0].get_clim() == (-1.0, 1.0)


def test_activation_heatmap_span_and_gate_scale():
    text = passage()
    values = np.random.default_rng(5).uniform(0, 1, (1, T, H))  # a [1, T, H] trace is accepted
    fig = heatmaps.activation_heatmap(text, values, key="f", span=(10, 30))
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == 20
    assert ax.images[0].get_array().shape == (H, 20)
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_activation_heatmap_refuses_bad_shapes_and_units():
    with pytest.raises(ValueError, match="characters of text"):
        heatmaps.activation_heatmap("abc", np.zeros((4, H)))
    with pytest.raises(ValueError, match="out of range"):
        heatmaps.activation_heatmap("abc", np.zeros((3, H)), units=[H])


def test_gate_heatmaps_one_panel_per_key():
    text = passage()
    rng = np.random.default_rng(6)
    layer = {k: rng.uniform(0, 1, (T, H)) for k in "ifgo"} | {"h": rng.uniform(-1, 1, (T, H))}
    fig = heatmaps.gate_heatmaps(text, layer, units=[1, 3], span=(0, 25))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    assert [ax.get_ylabel() for ax in panels] == ["h: unit", "i: unit", "f: unit", "o: unit"]
    for ax, key in zip(panels, "hifo"):
        np.testing.assert_array_equal(ax.images[0].get_array(), layer[key][:25, [1, 3]].T)


def test_text_heatmap_colours_each_character():
    text = "ab c\ndef"
    activation = np.arange(len(text), dtype=float) / 10
    fig = heatmaps.text_heatmap(text, activation, title="unit 0")
    ax = fig.axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (2, 5)  # "ab c↵" then "def"
    np.testing.assert_allclose(grid[0], activation[:5])
    np.testing.assert_allclose(grid[1, :3], activation[5:])
    assert np.ma.is_masked(grid[1, 3])  # no character there
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c", "↵", "d", "e", "f"]  # spaces are blank


# ---------------------------------------------------------------------- curves and tables
RECORDS = [
    {"event": "train", "step": 20, "loss": 3.0},
    {"event": "train", "step": 40, "loss": 2.5},
    {"event": "eval", "step": 40, "val_loss": 2.6, "val_bpc": 3.75},
    {"event": "epoch", "step": 40, "train_loss": 2.8},
    {"event": "train", "step": 60, "loss": 2.2},
    {"event": "eval", "step": 60, "val_loss": 2.3},
]


def test_loss_curves_plot_every_series_from_the_records():
    fig = viz.loss_curves(RECORDS, title="run")
    ax = fig.axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    assert lines == {"train (logged)": ([20, 40, 60], [3.0, 2.5, 2.2]),
                     "train (epoch mean)": ([40], [2.8]),
                     "validation": ([40, 60], [2.6, 2.3])}
    assert ax.get_ylabel() == "loss (nats/char)" and ax.get_title() == "run"
    assert len(viz.loss_curves([]).axes[0].lines) == 0


def test_loss_curves_draw_a_partial_epoch_apart_and_skip_non_finite_losses():
    records = [*RECORDS, {"event": "epoch", "step": 60, "train_loss": 2.1, "epoch_complete": False},
               {"event": "train", "step": 80, "loss": float("nan")}]
    lines = {line.get_label(): list(line.get_xdata()) for line in viz.loss_curves(records).axes[0].lines}
    assert lines["train (epoch mean)"] == [40] and lines["train (partial epoch mean)"] == [60]
    assert lines["train (logged)"] == [20, 40, 60]


class FakeGenerator:
    def __init__(self):
        self.calls = []

    def generate(self, seed_text, length, temperature=1.0, rng=0, **settings):
        self.calls.append((seed_text, length, temperature, rng, settings))
        return f"t={temperature}|\n" + "x" * (length - 6)


def test_sample_table_and_markdown():
    generator = FakeGenerator()
    rows = viz.sample_table(generator, "alice", temperatures=(0.5, 1.0), length=10, rng=3, top_k=5)
    assert [r["temperature"] for r in rows] == [0.5, 1.0]
    assert generator.calls[0] == ("alice", 10, 0.5, 3, {"top_k": 5})
    table = viz.markdown_table(rows).splitlines()
    assert table[0] == "| temperature | sample |"
    assert table[2] == "| 0.5 | t=0.5\\| ↵ xxxx |"  # the pipe escaped, the newline shown
    assert len(table) == 4
    assert viz.markdown_table([]) == ""


# ------------------------------------------------------------------------ on a real model
def test_trace_text_returns_per_layer_numpy_arrays_aligned_with_the_text():
    vocab = data.Vocab.from_text(passage())
    model = lstm.CharLSTM(len(vocab), hidden_sizes=(H, 5), encoding="onehot", rngs=nnx.Rngs(0))
    text = passage(17)
    traces = units.trace_text(model, vocab, text)
    assert len(traces) == 2
    assert traces[0]["h"].shape == (17, H) and traces[1]["f"].shape == (17, 5)
    assert isinstance(traces[0]["i"], np.ndarray)
    logits, states = model(np.asarray(vocab.encode(text), np.int32)[None])
    np.testing.assert_allclose(traces[1]["h"][-1], np.asarray(states[1].h[0]), rtol=1e-6, atol=1e-6)
    fig = saturation.gate_saturation(traces)
    assert len(fig.axes) == 2


def test_best_unit_searches_every_layer_and_text_heatmap_span():
    rng = np.random.default_rng(7)
    text = passage()
    feature = units.word_boundary(text)
    traces = [{"h": rng.normal(0, 1, (T, H))} for _ in range(3)]
    traces[2]["h"][:, 5] = -feature
    assert units.best_unit(traces, feature) == {"layer": 3, "unit": 5, "r": -1.0}
    fig = heatmaps.text_heatmap(text, traces[2]["h"][:, 5], span=(0, 8))  # "'i can't"
    assert [t.get_text() for t in fig.axes[0].texts] == list("'ican't")
