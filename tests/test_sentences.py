"""The `sentences` objective (the tutorial's extension 4): the splitter against hand-written
sentences, padding that moves neither the loss nor a gradient, the padded batch's loss against
the unpadded sentences scored one by one by the float64 NumPy model, and a tiny run that
trains, evaluates, resumes exactly, runs sharded and samples."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm
from configs import tiny
from lstm import cleaning, data, evaluation, logger, schedules, train
from lstm import state as run_state
from lstm.sample import Generator
from lstm.sentences import SentenceWindows, split_sentences
from tests.conftest import ROOT
from tests.numpy_reference import lstm_sequence, to_numpy_gates
from tests.test_cell import float64
from tests.test_train import losses as replayable  # every logged number a resume must reproduce


def sentences_of(text):
    return [text[a:b] for a, b in split_sentences(text)]


@pytest.mark.parametrize("text, expected", [
    ("the cat sat. the dog ran! did it? yes?! well... then",  # ?! and ... end one; a tail stays
     ["the cat sat.", "the dog ran!", "did it?", "yes?!", "well...", "then"]),
    ("'who are you?' said the caterpillar. \"stop!\" (it was late.) on",  # closers belong
     ["'who are you?'", "said the caterpillar.", "\"stop!\"", "(it was late.)", "on"]),
    ("mr. smith and Dr. Who met st. george, e.g. here. i.e. there.",  # abbreviations
     ["mr. smith and Dr. Who met st. george, e.g. here.", "i.e. there."]),
    ("a hamster. the mister. etc. then xmr. y",  # not abbreviations: each ends a sentence
     ["a hamster.", "the mister.", "etc.", "then xmr.", "y"]),
    ("it cost 3.5 pence.it was odd.'x", ["it cost 3.5 pence.it was odd.'x"]),  # no space, no end
    ("chapter i\n\ndown the rabbit\nhole it went\n \t\n  the end  ",  # blank lines, inner \n
     ["chapter i", "down the rabbit\nhole it went", "the end"]),
    ("  \n\n  ", []),
])
def test_the_splitter_on_hand_written_text(text, expected):
    assert sentences_of(text) == expected


def test_windows_cut_long_sentences_and_leave_out_short_and_late_ones():
    seq_len = 6  # windows hold 7 characters
    text = "ab. abcdefghij. ! hello. x. finis"
    # sentences: "ab."(0) "abcdefghij."(4) "!"(16) "hello."(18) "x."(25) "finis"(28)
    windows = SentenceWindows.from_text(text, seq_len)
    assert windows.starts.tolist() == [0, 4, 18, 25]  # 28 + 7 > 33: no room for its window
    assert windows.lengths.tolist() == [3, 7, 6, 2]
    assert (windows.num_cut, windows.chars_cut) == (1, 11 - 7)
    assert (windows.num_too_short, windows.num_at_end) == (1, 1)
    expected = np.zeros((4, seq_len), np.float32)
    for row, scored in enumerate((2, 6, 5, 1)):  # n − 1 predictions, at most seq_len
        expected[row, :scored] = 1
    np.testing.assert_array_equal(windows.position_weights(np.arange(4)), expected)
    assert "4 sentences" in windows.describe() and "1 cut to 7 characters" in windows.describe()


@pytest.mark.parametrize("text, message", [
    ("no terminator here\n\nnor here", "no sentence terminator"),
    ("! ? . !", "shorter than 2 characters"),
    ("ab. cd.", "within 11 characters of its end"),
])
def test_unusable_text_is_one_line_data_error(text, message):
    with pytest.raises(cleaning.DataError, match=message) as error:
        SentenceWindows.from_text(text, 10)
    assert "\n" not in str(error.value)


# A corpus whose sentences are known by construction: each its length, its start in the text.
SENTENCES = ["the cat sat.", "'who are you?'", "it was 3.5 m high!", "mr. smith came in.",
             "a very long sentence that a window of twelve cannot hold.", "ok.", "no!", "why?",
             "then the dog barked at the moon.", "fin."]
TEXT = " ".join(SENTENCES) + "\n\nthe end"
T = 12


def reference_starts_and_lengths():
    starts, position = [], 0
    for sentence in SENTENCES:
        starts.append(position)
        position += len(sentence) + 1
    lengths = [min(len(s), T + 1) for s in SENTENCES]
    return np.array(starts), np.array(lengths)  # "the end" starts too late for a window


def test_schedule_visits_every_sentence_once_with_its_weights():
    schedule = schedules.make_schedule("sentences", len(TEXT), T, 4, seed=3, text=TEXT)
    starts, lengths = reference_starts_and_lengths()
    length_of = dict(zip(starts.tolist(), lengths.tolist()))
    assert schedule.steps_per_epoch == 3
    visits = {0: [], 1: []}
    for epoch in visits:
        for step in range(3):
            batch_starts, weights = schedule.batch(epoch, step)
            assert batch_starts.dtype == np.int32 and weights.shape == (4, T)
            for start, row in zip(batch_starts.tolist(), weights):
                if row.any():
                    visits[epoch].append(start)
                    assert row.tolist() == [1.0] * (length_of[start] - 1) + [0.0] * (T + 1 - length_of[start])
    assert sorted(visits[0]) == sorted(visits[1]) == starts.tolist() and visits[0] != visits[1]
    again = schedules.make_schedule("sentences", len(TEXT), T, 4, seed=3, text=TEXT)
    np.testing.assert_array_equal(again.batch(1, 2)[1], schedule.batch(1, 2)[1])
    assert schedule.batch(0, 2)[1][2:].sum() == 0  # 10 sentences: the last batch holds two
    with pytest.raises(cleaning.DataError, match="stride 2 is moot"):
        schedules.make_schedule("sentences", len(TEXT), T, 4, stride=2, text=TEXT)


def batch_of_all_sentences():
    vocab = data.Vocab.from_text(TEXT)
    ids = vocab.encode(TEXT)
    schedule = schedules.SentenceSchedule(TEXT, T, len(SENTENCES))
    starts, weights = schedule.batch(0, 0)
    inputs, targets = schedules.gather_windows(jnp.asarray(ids), jnp.asarray(starts), T, "sentences")
    return vocab, ids, starts, weights, np.asarray(inputs), np.asarray(targets)


def loss_and_grads(model, inputs, targets, weights, train_mode=False):
    graphdef, params = nnx.split(model)

    def loss(params):
        logits, _ = nnx.merge(graphdef, params)(jnp.asarray(inputs), train=train_mode,
                                                dropout_key=jax.random.key(7))
        total, weight = evaluation.sequence_loss(logits, jnp.asarray(targets), jnp.asarray(weights), "sentences")
        return total / weight, logits

    (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads, logits


@pytest.mark.parametrize("encoding, cell, regularised", [
    ("scaled", "lstm", False), ("onehot", "lstm", False), ("embed", "lstm", False),
    ("embed", "layernorm", False), ("onehot", "cifg", True)])
def test_padding_moves_neither_the_loss_nor_any_gradient(encoding, cell, regularised):
    vocab, _, _, weights, inputs, targets = batch_of_all_sentences()
    options = dict(dropout=0.3, dropout_kind="locked", zoneout_h=0.2, embed_dropout=0.1) if regularised else {}
    model = lstm.CharLSTM(len(vocab), hidden_sizes=(6, 6), encoding=encoding, embed_dim=5, cell=cell,
                          rngs=nnx.Rngs(0), **options)
    value, grads, logits = loss_and_grads(model, inputs, targets, weights, regularised)
    # Every input from a sentence's last character on, and every target past its end, is
    # padding: replace them all with other characters.
    rng = np.random.default_rng(1)
    padded = weights == 0
    other_inputs, other_targets = inputs.copy(), targets.copy()
    other_inputs[padded] = (inputs[padded] + rng.integers(1, len(vocab), padded.sum())) % len(vocab)
    other_targets[padded] = (targets[padded] + rng.integers(1, len(vocab), padded.sum())) % len(vocab)
    assert padded.sum() > 3 * len(SENTENCES) and (other_inputs != inputs).sum() == padded.sum()
    other_value, other_grads, other_logits = loss_and_grads(model, other_inputs, other_targets, weights,
                                                            regularised)
    assert float(value) == float(other_value)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(other_grads), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(np.asarray(logits)[~padded], np.asarray(other_logits)[~padded])
    assert not np.array_equal(np.asarray(logits)[padded], np.asarray(other_logits)[padded])


def test_padded_positions_get_exactly_zero_gradient():
    _, _, _, weights, _, targets = batch_of_all_sentences()
    logits = jnp.asarray(np.random.default_rng(0).normal(size=targets.shape + (30,)))

    def loss(logits):
        return evaluation.sequence_loss(logits, jnp.asarray(targets), jnp.asarray(weights), "sentences")[0]

    grad = np.asarray(jax.grad(loss)(logits))
    assert np.all(grad[weights == 0] == 0) and np.all(np.abs(grad[weights == 1]).sum(-1) > 0)


def numpy_sentence_loss(model, ids):
    """Summed next-character cross-entropy of one unpadded sentence, from the zero state, by
    the float64 NumPy LSTM and log-softmax (one-hot or embedded input)."""
    if model.encoding == "onehot":
        x = np.eye(model.vocab_size)[ids[:-1]][None]
    else:
        x = np.asarray(model.embedding[...], np.float64)[ids[:-1]][None]
    for layer in model.layers:
        zeros = np.zeros((1, layer.hidden_size))
        x = lstm_sequence(to_numpy_gates(layer.gate_params()), x, zeros, zeros)["h"]
    logits = (x @ np.asarray(model.head_W[...], np.float64) + np.asarray(model.head_b[...], np.float64))[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(ids) - 1), ids[1:]].sum(), len(ids) - 1


def test_the_padded_batch_scores_like_each_sentence_alone_in_float64():
    vocab, ids, _, weights, inputs, targets = batch_of_all_sentences()
    starts, lengths = reference_starts_and_lengths()
    model = lstm.CharLSTM(len(vocab), hidden_sizes=(7, 5), encoding="onehot", rngs=nnx.Rngs(2))
    rng = np.random.default_rng(3)  # biases away from zero, so any misplaced step shows
    for layer in model.layers:
        layer.set_gate_params({n: {"b": rng.normal(0, 0.5, layer.hidden_size)} for n in "ifgo"})
    with float64():
        graphdef, params = nnx.split(model)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        model = nnx.merge(graphdef, params)
        state = jax.tree.map(lambda a: a.astype(jnp.float64), model.initial_state(len(inputs)))

        @jax.jit
        def padded_batch_loss(params):
            logits, _ = nnx.merge(graphdef, params)(jnp.asarray(inputs), state)
            assert logits.dtype == jnp.float64
            return evaluation.sequence_loss(logits, jnp.asarray(targets), jnp.asarray(weights), "sentences")

        total, weight = padded_batch_loss(params)
        pieces = [numpy_sentence_loss(model, ids[s:s + n]) for s, n in zip(starts, lengths)]
    expected_total, expected_weight = map(sum, zip(*pieces))
    assert float(weight) == expected_weight == sum(min(len(s), T + 1) - 1 for s in SENTENCES)
    np.testing.assert_allclose(float(total), expected_total, rtol=1e-12)


# ---------------------------------------------------------------------------- end to end
def sentences_config(corpus_path, max_steps=24):
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    config.data.objective = "sentences"
    config.data.stride = 1
    config.model.hidden_sizes = (48,)  # one layer: half the compilation of tiny's two
    config.model.matmul_dtype = "float32"  # scored against the float32 NumPy model below
    config.train.max_steps = max_steps
    config.train.num_epochs = 100
    config.train.learning_rate = 2e-2
    config.train.log_every_steps = 4
    config.train.eval_every_steps = 12
    config.eval.every_epoch = False
    config.eval.sample_length = 0  # sampling is tested once, from the workdir
    config.checkpoint.every_steps = 12
    return config


def test_a_tiny_sentences_run_trains_evaluates_resumes_and_samples(corpus_path, tmp_path, capfd):
    whole = train.train_and_evaluate(sentences_config(corpus_path), tmp_path / "whole")
    started = capfd.readouterr().err
    assert "training: " in started and "sentences" in started and "cut to 33 characters" in started
    assert "held out: " in started
    records = logger.read_metrics(tmp_path / "whole")
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert losses[-1] < losses[0] - 0.3, losses
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [12, 24]
    # Beside the sentences' own loss, the held-out windows every other objective reports.
    assert np.log(2) * whole["val_bpc"] == pytest.approx(whole["val_loss"], rel=1e-12)
    assert whole["val_loss"] < np.log(43) and np.isfinite(whole["val_last_char_loss"])
    assert np.isfinite(whole["val_window_loss"]) and whole["val_window_loss"] != whole["val_loss"]
    # The held-out score is the held-out sentences', each scored alone by the NumPy model: the
    # documented rule re-applied by hand (cut to 33 characters, none starting in the last 32).
    model, vocab, config = run_state.load_model(tmp_path / "whole", which="latest")
    held_out = vocab.decode(data.load_corpus(config.data).val)
    scored = [numpy_sentence_loss(model, vocab.encode(held_out[a:min(b, a + 33)]))
              for a, b in split_sentences(held_out) if b - a >= 2 and a + 33 <= len(held_out)]
    total, count = map(sum, zip(*scored))
    np.testing.assert_allclose(whole["val_loss"], total / count, rtol=1e-5)

    train.train_and_evaluate(sentences_config(corpus_path, max_steps=12), tmp_path / "split")
    resumed = train.train_and_evaluate(sentences_config(corpus_path), tmp_path / "split")
    assert "resuming at step 12" in capfd.readouterr().err
    assert resumed["val_loss"] == whole["val_loss"]
    assert replayable(tmp_path / "whole") == replayable(tmp_path / "split")

    generator = Generator.from_workdir(tmp_path / "whole", which="latest")
    text = generator.generate("alice was", 40, temperature=0.8, rng=1)
    assert len(text) == 40 and set(text) <= set(generator.vocab.chars)


def test_sharded_steps_and_evaluation_equal_one_device(corpus_path):
    """Per-position weights [K, B, T] and [B, T] sharded by row over two devices (a fresh
    process: the device count is fixed when JAX starts), as train_and_evaluate shards them."""
    code = f"""
        import jax, numpy as np
        from lstm import data, distributed, evaluation, schedules, train
        from lstm import state as run_state
        from tests.test_sentences import sentences_config
        assert jax.device_count() == 2
        config = sentences_config({str(corpus_path)!r})
        corpus = data.load_corpus(config.data)
        schedule = schedules.make_schedule("sentences", len(corpus.train), 32, 32,
                                           text=corpus.vocab.decode(corpus.train))
        batches = [schedule.batch(0, step) for step in range(2)]
        starts, weights = np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = distributed.data_mesh(devices)
            graphdef, optimizer, state = run_state.init_train_state(config, len(corpus.vocab))
            state = train.place_state(state, mesh)
            ids = distributed.global_array(corpus.train, distributed.replicated(mesh))
            by_batch, by_row = distributed.batch_sharding(mesh, batch_axis=1), distributed.batch_sharding(mesh)
            state, metrics = train.make_train_steps(graphdef, optimizer, config)(
                state, ids, distributed.global_array(starts, by_batch), distributed.global_array(weights, by_batch),
                distributed.global_array(np.array([True, False]), distributed.replicated(mesh)))
            sums = evaluation.make_eval_step(graphdef, 32)(
                state.params, ids, distributed.global_array(starts[1], by_row),
                distributed.global_array(weights[1], by_row))
            results.append((np.asarray(metrics["loss"]), np.asarray(sums)))
        (loss_one, sums_one), (loss_two, sums_two) = results
        np.testing.assert_allclose(loss_two, loss_one, rtol=1e-6)
        np.testing.assert_allclose(sums_two, sums_one, rtol=1e-5)
        assert sums_one[1] == weights[1].sum() and sums_one[3] == (weights[1].sum(axis=1) > 0).sum()
        print("ok")
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_a_corpus_without_sentences_is_refused_in_one_line(tmp_path):
    corpus = tmp_path / "list.txt"
    corpus.write_text("apples\npears\nplums\n" * 200)
    config = sentences_config(corpus)
    with pytest.raises(cleaning.DataError, match="no sentence terminator") as error:
        train.train_and_evaluate(config, tmp_path / "run")
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()
