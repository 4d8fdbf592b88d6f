"""The held-out protocols (lstm/evaluation.py, eval.context) against a float64 NumPy loop that
scores the tail one character at a time, each from a zero state over exactly the context the
protocol gives it; the streams' layout by hand; sharding; the option's validation; and what a
training run records: the protocol's name and the count model it has to beat."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from lstm import data, distributed, evaluation, logger, ngram, state, train
from tests.numpy_reference import lstm_sequence, to_numpy_gates
from tests.test_distributed import run_python
from tests.test_train import tiny_config

ROOT = Path(__file__).resolve().parents[1]
V, M, SEQ_LEN = 7, 203, 16  # 203 = 12·16 + 11: the windows leave a remainder unscored


def small_config(context, streams=3):
    config = tiny.get_config()
    config.data.seq_len = SEQ_LEN
    config.model.hidden_sizes = (6, 5)
    config.model.embed_dim = 4
    config.model.dropout = 0.0
    config.model.matmul_dtype = "float32"
    config.eval.batch_size = 5  # several calls, the last one padded
    config.eval.max_windows = 1000
    config.eval.context = context
    config.eval.streams = streams
    return config


def reference_loss(model, ids, context_start, targets):
    """Mean over `targets` j of −ln P(ids[j] | ids[context_start(j):j]), the model recomputed in
    float64 from a zero state for every character."""
    embedding = np.asarray(model.embedding[...], np.float64)
    layers = [to_numpy_gates(layer.gate_params()) for layer in model.layers]
    head_W, head_b = (np.asarray(p[...], np.float64) for p in (model.head_W, model.head_b))
    losses = []
    for j in targets:
        x = embedding[ids[context_start(j):j]][None]
        for gates in layers:
            size = gates["i"]["b"].shape[0]
            x = lstm_sequence(gates, x, np.zeros((1, size)), np.zeros((1, size)))["h"]
        logits = x[0, -1] @ head_W + head_b
        losses.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[ids[j]])
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def tiny_model():
    rng = np.random.default_rng(4)
    model = state.build_model(small_config("window"), V)
    # Weights far from their small initial ones, so the loss depends on the context: the
    # protocols then differ by far more than the tolerance. Non-zero biases everywhere.
    model.embedding[...] = jnp.asarray(rng.normal(0, 1, model.embedding[...].shape), jnp.float32)
    model.head_W[...] = jnp.asarray(rng.normal(0, 1, model.head_W[...].shape), jnp.float32)
    for layer in model.layers:
        layer.set_gate_params({n: {k: rng.normal(0, 0.8, v.shape) for k, v in piece.items()}
                               for n, piece in layer.gate_params().items()})
    graphdef, params = nnx.split(model)
    ids = rng.integers(0, V, M).astype(np.int32)
    return graphdef, params, model, ids


def run_protocol(tiny_model, config):
    graphdef, params, _, ids = tiny_model
    mesh = distributed.data_mesh()
    corpus = distributed.global_array(ids, distributed.replicated(mesh))
    evaluation.check_protocol(config, len(ids))
    return evaluation.evaluate(evaluation.make_eval_steps(graphdef, config), params, corpus, len(ids), config, mesh)


@pytest.mark.parametrize("length", [SEQ_LEN, 40, 202])
def test_windows_of_n_characters_give_each_character_its_offset_as_context(tiny_model, length):
    context = "window" if length == SEQ_LEN else str(length)
    result = run_protocol(tiny_model, small_config(context))
    count = (M - 1) // length
    expected = reference_loss(tiny_model[2], tiny_model[3], lambda j: (j - 1) // length * length,
                              range(1, count * length + 1))
    assert result["val_loss"] == pytest.approx(expected, rel=2e-5)
    assert result["val_protocol"] == ("window:16" if length == SEQ_LEN else f"context:{length}")
    assert result["val_windows"] == count
    # The tutorial's metric stays: the character after each full seq_len window, whatever the protocol.
    last = reference_loss(tiny_model[2], tiny_model[3], lambda j: j - SEQ_LEN,
                          range(SEQ_LEN, (M - 1) // SEQ_LEN * SEQ_LEN + 1, SEQ_LEN))
    assert result["val_last_char_loss"] == pytest.approx(last, rel=2e-5)


@pytest.mark.parametrize("streams", [1, 3])
def test_continuous_streams_carry_the_state_through_the_tail(tiny_model, streams, monkeypatch):
    monkeypatch.setattr(evaluation, "CONTINUOUS_CHUNK", 24)  # several chunks per stream, the last partial
    result = run_protocol(tiny_model, small_config("continuous", streams))
    length = (M - 1) // streams
    expected = reference_loss(tiny_model[2], tiny_model[3], lambda j: (j - 1) // length * length,
                              range(1, streams * length + 1))
    assert result["val_loss"] == pytest.approx(expected, rel=2e-5)
    assert result["val_protocol"] == f"continuous:{streams}"
    window = reference_loss(tiny_model[2], tiny_model[3], lambda j: (j - 1) // SEQ_LEN * SEQ_LEN,
                            range(1, (M - 1) // SEQ_LEN * SEQ_LEN + 1))
    assert result["val_window_loss"] == pytest.approx(window, rel=2e-5)


def test_the_streams_layout_by_hand():
    # 11 tokens, 3 streams: L = (11 − 1) // 3 = 3 targets each; chunks of 2; a 4th, padding row.
    (index0, weights0), (index1, weights1) = evaluation.stream_chunks(11, 3, 4, 2)
    np.testing.assert_array_equal(index0, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 0, 0]])
    np.testing.assert_array_equal(weights0, [[1, 1], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_array_equal(index1, [[2, 3, 4], [5, 6, 7], [8, 9, 10], [0, 0, 0]])
    np.testing.assert_array_equal(weights1, [[1, 0], [1, 0], [1, 0], [0, 0]])
    # max_positions=6 keeps tokens 0..6: 2 targets per stream, one chunk.
    (index,), (weights,) = zip(*evaluation.stream_chunks(11, 3, 3, 2, max_positions=6))
    np.testing.assert_array_equal(index, [[0, 1, 2], [2, 3, 4], [4, 5, 6]])
    np.testing.assert_array_equal(weights, np.ones((3, 2)))


def test_protocols_on_two_devices_equal_one(corpus_path):
    """Three streams over two devices (a padding row), a fresh process: the device count is
    fixed when JAX starts. (The window steps' sharding is tests/test_sentences.py's.)"""
    code = """
        import jax, numpy as np
        from lstm import distributed, evaluation, train
        from lstm import state as run_state
        from tests.test_evaluation import small_config
        assert jax.device_count() == 2
        ids = np.random.default_rng(0).integers(0, 7, 301).astype(np.int32)
        for context in ("continuous",):
            config = small_config(context)
            graphdef, _, state = run_state.init_train_state(config, 7)
            losses = []
            for devices in (jax.devices()[:1], jax.devices()):
                mesh = distributed.data_mesh(devices)
                corpus = distributed.global_array(ids, distributed.replicated(mesh))
                steps = evaluation.make_eval_steps(graphdef, config)
                losses.append(evaluation.evaluate(steps, state.params, corpus, len(ids), config, mesh)["val_loss"])
            np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
        print("ok")
    """
    assert run_python(code, devices=2).stdout.strip() == "ok"


@pytest.mark.parametrize("field, value, message", [
    ("eval.context", "wide", "eval.context must be window, continuous or a window length"),
    ("eval.context", "0", "eval.context must be window, continuous or a window length"),
    ("eval.streams", 0, "eval.streams must be >= 1"),
])
def test_a_bad_protocol_is_a_one_line_config_error(field, value, message):
    config = small_config("window")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(state.ConfigError, match=message) as error:
        state.validate_config(config)
    assert "\n" not in str(error.value)


def test_sentences_score_their_own_way_and_old_workdirs_keep_windows():
    config = small_config("continuous")
    config.data.objective = "sentences"
    with pytest.raises(state.ConfigError, match="must be window for objective sentences"):
        state.validate_config(config)
    old = small_config("window").to_dict()
    del old["eval"]["context"], old["eval"]["streams"]
    upgraded = state.upgrade_config(old)
    assert (upgraded.eval.context, upgraded.eval.streams) == ("window", 10)


def test_a_context_longer_than_the_tail_stops_before_training(corpus_path, tmp_path):
    config = tiny_config(corpus_path, max_steps=2)
    config.eval.context = "100000"
    with pytest.raises(state.ConfigError, match="longer than the"):
        train.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_run_names_its_protocol_and_the_count_model_to_beat(corpus_path, tmp_path, capfd):
    config = tiny_config(corpus_path, max_steps=10, eval_every_steps=5)
    config.eval.context = "48"
    config.eval.sample_length = 0
    config.eval.max_windows = 1000  # the whole tail, as scripts/research/rescore.py scores it
    summary = train.train_and_evaluate(config, tmp_path / "run")
    corpus = data.load_corpus(config.data)
    order, loss = ngram.best(ngram.baseline(corpus.train, corpus.val, len(corpus.vocab)))
    out = capfd.readouterr()
    assert f"beat this: a Kneser-Ney {order}-gram scores {loss:.4f} nats/char" in out.out + out.err
    assert summary["count_model_loss"] == pytest.approx(loss) and summary["val_protocol"] == "context:48"
    assert len(list((Path(corpus_path).parent / ".cache").glob("ngram-*.json"))) == 1  # kept beside the corpus
    records = logger.read_metrics(tmp_path / "run")
    evals = [r for r in records if r["event"] == "eval"]
    assert len(evals) == 2 and all(r["val_protocol"] == "context:48" for r in evals)
    assert all(r["val_window_loss"] != r["val_loss"] for r in evals)  # 32-character windows beside
    best = [r for r in records if r["event"] == "best"]
    assert best[0]["val_protocol"] == "context:48"
    assert best[0]["val_loss"] == min(r["val_loss"] for r in evals)  # best-of-run watches the protocol's value

    rescored = subprocess.run([sys.executable, "scripts/research/rescore.py", f"--workdir={tmp_path / 'run'}",
                               "--context=48,window", "--json"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert rescored.returncode == 0, rescored.stderr[-2000:]
    printed = json.loads(rescored.stdout)
    assert printed["losses"]["context:48"] == pytest.approx(best[0]["val_loss"], rel=1e-6)
    assert printed["losses"]["window:32"] == pytest.approx(
        [r for r in evals if r["best"]][-1]["val_window_loss"], rel=1e-6)
    assert printed["count_model_loss"] == pytest.approx(loss)
