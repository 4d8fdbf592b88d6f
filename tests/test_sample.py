"""The sampler: the generic core against fake models whose next token is known, the statistics
of temperature / top-k / top-p, CharLSTM priming + generation against the model run step by
step, a checkpoint round trip, and the CLI's one-line errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import lstm
from lstm import checkpoint, cleaning, data, sample

ROOT = Path(__file__).resolve().parents[1]
V = 11


# ------------------------------------------------------------------------------ fake step functions
def successor_step(count, tokens):
    """Puts all probability on (previous + 1) mod V; the carry counts the steps taken."""
    logits = jnp.where(jax.nn.one_hot((tokens + 1) % V, V) > 0, 0.0, -jnp.inf)
    return logits, count + 1


FAVOURED = np.full(V, -30.0)
FAVOURED[[2, 5]] = np.log([0.7, 0.3])


def favoured_step(carry, tokens):
    """The same logits every step: tokens 2 and 5 hold 70% and 30% of the mass."""
    return jnp.broadcast_to(jnp.asarray(FAVOURED, jnp.float32), tokens.shape + (V,)), carry


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def frequencies(tokens):
    return np.bincount(np.asarray(tokens).ravel(), minlength=V) / np.asarray(tokens).size


def run(step_fn, batch, length, key=0, **settings):
    tokens, carry, last = sample.generate(step_fn, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, jnp.int32),
                                          jax.random.key(key), length, sample.traced_settings(**settings))
    return np.asarray(tokens), carry, last


# ---------------------------------------------------------------------------------- the generic core
@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=1.0),
                                      dict(temperature=2.0, top_k=3, top_p=0.5)])
def test_successor_model_yields_exactly_the_successor_sequence(settings):
    start = jnp.array([0, 4, 10], jnp.int32)
    tokens, count, last = sample.generate(successor_step, jnp.zeros(3, jnp.int32), start,
                                          jax.random.key(0), 25, sample.traced_settings(**settings))
    expected = (np.asarray(start)[:, None] + 1 + np.arange(25)) % V
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(count, [25, 25, 25])  # the carry went through every step
    np.testing.assert_array_equal(last, expected[:, -1])


def test_chunks_continue_exactly_where_the_whole_run_would():
    key = jax.random.key(3)
    settings = sample.traced_settings(1.0)
    whole, _, _ = sample.generate(favoured_step, (), jnp.zeros(4, jnp.int32), key, 10, settings)
    first, carry, last = sample.generate(favoured_step, (), jnp.zeros(4, jnp.int32), key, 6, settings)
    second, _, _ = sample.generate(favoured_step, carry, last, key, 4, settings, start=6)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)


def test_noise_blocks_do_not_change_the_samples(monkeypatch):
    key, settings = jax.random.key(9), sample.traced_settings(1.0, top_p=0.99)
    fresh_jit = lambda: jax.jit(sample.generate_scan, static_argnames=("step_fn", "length"))
    whole = fresh_jit()(favoured_step, (), jnp.zeros(3, jnp.int32), key, 23, settings)[0]
    monkeypatch.setattr(sample, "NOISE_BUDGET_BYTES", 4 * 3 * V * 5)  # blocks of 5 steps
    blocked = fresh_jit()(favoured_step, (), jnp.zeros(3, jnp.int32), key, 23, settings)[0]
    np.testing.assert_array_equal(blocked, whole)
    assert len(np.unique(np.asarray(whole))) > 1


@pytest.mark.parametrize("temperature", [0.0, 1e-3])
def test_temperature_towards_zero_picks_the_argmax(temperature):
    tokens, _, _ = run(favoured_step, 200, 10, temperature=temperature)
    assert np.all(tokens == 2)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 25.0])
def test_temperature_samples_at_the_expected_frequencies(temperature):
    tokens, _, _ = run(favoured_step, 4000, 5, key=1, temperature=temperature)
    expected = softmax(FAVOURED / temperature)
    # 20,000 draws: one standard deviation is at most 0.0035, so 0.015 is over four.
    np.testing.assert_allclose(frequencies(tokens), expected, atol=0.015)
    assert set(np.unique(tokens)) >= {2, 5}


def random_rows(rows, seed=0):
    return np.random.default_rng(seed).normal(0, 2, (rows, V)).astype(np.float32)


@pytest.mark.parametrize("top_k", [1, 3, V, V + 5])
def test_top_k_never_leaves_the_top_k(top_k):
    logits = random_rows(3000)
    tokens = np.asarray(sample.sample_logits(jax.random.key(0), logits, jnp.float32(3.0), jnp.int32(top_k)))
    rank = np.argsort(np.argsort(-logits, axis=-1), axis=-1)
    assert np.all(rank[np.arange(len(tokens)), tokens] < top_k)
    if top_k >= 3:  # a hot temperature spreads the draws over all k allowed ranks
        assert len(np.unique(rank[np.arange(len(tokens)), tokens])) == min(top_k, V)


def numpy_nucleus(logits, temperature, top_p):
    """The smallest set of most-probable tokens whose probability reaches top_p."""
    probs = softmax(logits / temperature)
    keep = np.zeros_like(probs, bool)
    for row, p in enumerate(probs):
        order = np.argsort(-p, kind="stable")
        size = int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)
        keep[row, order[:size]] = True
    return keep


@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.3), (1.0, 0.9), (0.5, 0.75), (2.0, 0.6), (1.0, 1.0)])
def test_top_p_keeps_exactly_the_nucleus(temperature, top_p):
    logits = random_rows(500, seed=1)
    keep = np.asarray(sample._keep_mask(jnp.asarray(logits), jnp.float32(temperature), None, jnp.float32(top_p)))
    np.testing.assert_array_equal(keep, numpy_nucleus(logits, temperature, top_p))


def test_top_p_draws_inside_the_nucleus_in_proportion():
    logits = np.tile(np.log([0.4, 0.3, 0.15, 0.1, 0.05] + [1e-9] * (V - 5)).astype(np.float32), (20000, 1))
    tokens = np.asarray(sample.sample_logits(jax.random.key(2), logits, jnp.float32(1.0), None, jnp.float32(0.8)))
    # The nucleus of mass 0.8 is {0, 1, 2} (0.85); renormalised: 0.47, 0.35, 0.18.
    np.testing.assert_allclose(frequencies(tokens)[:3], np.array([0.4, 0.3, 0.15]) / 0.85, atol=0.015)
    assert np.all(tokens < 3)


def test_top_k_then_top_p_renormalises_within_the_top_k():
    logits = jnp.log(jnp.array([[0.3, 0.25, 0.2, 0.15, 0.1] + [1e-9] * (V - 5)]))
    keep = sample._keep_mask(logits, jnp.float32(1.0), jnp.int32(2), jnp.float32(0.5))
    # Within the top 2, token 0 holds 0.3 / 0.55 = 0.545 >= 0.5: it alone is the nucleus.
    np.testing.assert_array_equal(np.flatnonzero(keep[0]), [0])


def test_settings_change_values_without_recompiling():
    sample.generate(favoured_step, (), jnp.zeros(2, jnp.int32), jax.random.key(0), 7,
                    sample.traced_settings(1.0, 3, 0.9))
    before = sample.generate._cache_size()
    for temperature, top_k, top_p in [(0.0, 1, 0.1), (0.7, 5, 1.0), (3.0, 2, 0.5)]:
        sample.generate(favoured_step, (), jnp.zeros(2, jnp.int32), jax.random.key(0), 7,
                        sample.traced_settings(temperature, top_k, top_p))
    assert sample.generate._cache_size() == before


@pytest.mark.parametrize("bad", [dict(length=-1), dict(temperature=-0.5), dict(temperature=float("nan")),
                                 dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(num_samples=0)])
def test_bad_settings_get_one_line_errors(bad):
    with pytest.raises(ValueError) as error:
        sample.check_settings(**bad)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------ CharLSTM
VOCAB = data.Vocab(tuple(" abcdefghij"))  # V = 11 characters


def small_model(encoding="embed"):
    return lstm.CharLSTM(len(VOCAB), hidden_sizes=(6, 5), encoding=encoding, embed_dim=4, rngs=nnx.Rngs(7))


@pytest.mark.parametrize("encoding", ["scaled", "onehot", "embed"])
def test_priming_then_generating_equals_the_model_run_step_by_step(encoding):
    model = small_model(encoding)
    generator = sample.Generator(model, VOCAB)
    _, seed = generator.prepare_seed("a bad cab")
    states, last = generator.prime(seed)
    tokens, carry, _, logits = sample.generate(
        sample._model_step_fn(model), states, last, jax.random.key(5), 12, sample.traced_settings(1.0),
        return_logits=True)
    # Step by step through the whole text: the seed, then every generated token but the last.
    text = np.concatenate([seed, np.asarray(tokens)[0, :-1]])
    step_states, step_logits = model.initial_state(1), []
    for token in text:
        out, step_states = model.decode_step(jnp.asarray([token]), step_states)
        step_logits.append(out[0])
    np.testing.assert_allclose(logits[0], np.stack(step_logits)[len(seed) - 1:], rtol=1e-5, atol=1e-5)
    for got, expected in zip(carry, step_states):
        np.testing.assert_allclose(got.h, expected.h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.c, expected.c, rtol=1e-5, atol=1e-6)


def test_same_rng_same_text_and_different_rng_different_text():
    generator = sample.Generator(small_model(), VOCAB)
    first = generator.generate("a cab", 60, temperature=1.0, rng=0)
    assert len(first) == 60 and set(first) <= set(VOCAB.chars)
    assert generator.generate("a cab", 60, temperature=1.0, rng=0) == first
    assert generator.generate("a cab", 60, temperature=1.0, rng=1) != first
    batch = generator.generate("a cab", 60, temperature=1.0, num_samples=3, rng=0)
    assert len(set(batch)) == 3  # independent samples


def test_stream_joins_to_generate_with_one_compiled_chunk():
    generator = sample.Generator(small_model(), VOCAB, chunk_size=16)
    whole = generator.generate("bead", 70, temperature=0.8, top_k=4, rng=3)
    pieces = list(generator.stream("bead", 70, temperature=0.8, top_k=4, rng=3))
    assert "".join(pieces) == whole
    assert [len(p) for p in pieces] == [16, 16, 16, 16, 6]  # the last chunk is cut, not recompiled
    list(generator.stream("deadbeef", 40, temperature=0.3, top_k=2, rng=4))
    chunk_programs = [k for k in generator._compiled if k[0] == "generate" and ("length", 16) in k[1]]
    assert len(chunk_programs) == 1
    batched = list(generator.stream("bead", 20, num_samples=2, rng=3))
    assert all(isinstance(p, list) and len(p) == 2 for p in batched)


def test_empty_seed_starts_from_a_random_first_character():
    generator = sample.Generator(small_model(), VOCAB, chunk_size=8)
    texts = generator.generate("", 20, temperature=0.0, num_samples=4, rng=0)
    assert all(len(text) == 20 for text in texts)
    assert len({text[0] for text in texts}) > 1  # greedy after that, so the start must vary
    pieces = list(generator.stream("", 20, temperature=0.0, num_samples=4, rng=0))
    assert ["".join(piece[row] for piece in pieces) for row in range(4)] == texts
    assert generator.generate("", 0) == ""


def data_config(**fields):
    config = ml_collections.ConfigDict()
    config.data = {**dict(lowercase=False, allowed_chars="", ascii_only=False), **fields}
    return config


def test_seed_is_cleaned_like_the_corpus_and_unknown_characters_are_named():
    generator = sample.Generator(small_model(), VOCAB, data_config(lowercase=True))
    assert generator.prepare_seed("A BAD Cab")[0] == "a bad cab"
    with pytest.raises(cleaning.DataError, match="'x'") as error:
        generator.generate("a bix", 5)
    assert "\n" not in str(error.value)
    assert generator.prepare_seed("a bix", unknown="skip")[0] == "a bi"
    dropping = sample.Generator(small_model(), VOCAB, data_config(allowed_chars="abc "))
    assert dropping.prepare_seed("a bad cab")[0] == "a ba cab"


# --------------------------------------------------------------------- checkpoints and the CLI
@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus_path):
    """A tiny model trained for a few steps on a slice of Alice: a real workdir, in seconds."""
    from configs import tiny
    from lstm import train
    root = tmp_path_factory.mktemp("generate")
    # A private copy of the shared slice: a test below moves it away for a while.
    corpus = Path(shutil.copy(corpus_path, root / "alice_slice.txt"))
    config = tiny.get_config()
    config.data.path = str(corpus)
    config.train.max_steps = 12
    config.train.eval_every_steps = 6
    config.checkpoint.every_steps = 6
    config.eval.max_windows = 16
    train.train_and_evaluate(config, root / "run")
    return root / "run", config


def test_from_workdir_reproduces_the_in_memory_model(workdir):
    run_dir, config = workdir
    from lstm import state
    # The in-memory side owns nothing from the workdir's JSON: its config is the one trained
    # with, its vocabulary comes from the corpus, and its parameters are restored by hand.
    vocab = data.load_corpus(config.data).vocab
    graphdef, _, target = state.init_train_state(config, len(vocab))
    with checkpoint.Checkpointer(run_dir) as saver:
        _, flat, _ = saver.restore(state.flatten_state(target), which="latest")
    model = nnx.merge(graphdef, state.unflatten_state(flat, target).params)
    in_memory = sample.Generator(model, vocab, config)
    os.rename(config.data.path, config.data.path + ".away")  # the training text is not needed
    try:
        restored = sample.Generator.from_workdir(run_dir, which="latest")
        for kwargs in (dict(temperature=0.0), dict(temperature=0.9, top_k=5, rng=2), dict(top_p=0.8, num_samples=2)):
            assert restored.generate("Alice Was", 80, **kwargs) == in_memory.generate("alice was", 80, **kwargs)
        assert sample.Generator.from_workdir(run_dir).generate("alice", 20)  # "best" restores too
    finally:
        os.rename(config.data.path + ".away", config.data.path)


def run_cli(*args, stdin=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_streams_reads_stdin_and_writes_json(workdir):
    run_dir, config = workdir
    streamed = run_cli(f"--workdir={run_dir}", "--seed_text=Alice was", "--length=60", "--temperature=0.5")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.startswith("alice was") and len(streamed.stdout) == len("alice was") + 60 + 1
    piped = run_cli(f"--workdir={run_dir}", "--seed_text=-", "--length=60", "--temperature=0.5", "--json",
                    stdin="Alice was\n")
    assert piped.returncode == 0, piped.stderr
    record = json.loads(piped.stdout)
    assert record["seed"] == "alice was" and record["text"] == streamed.stdout[len("alice was"):-1]
    assert record["settings"]["temperature"] == 0.5 and record["chars_per_s"] > 0
    window = run_cli(f"--workdir={run_dir}", "--length=10", "--json", "--rng=3")
    assert window.returncode == 0, window.stderr
    assert len(json.loads(window.stdout)["seed"]) == config.data.seq_len  # a window of the corpus
    earlier = run_cli(f"--workdir={run_dir}", "--which=6", "--seed_text=alice", "--length=5", "--json")
    assert earlier.returncode == 0 and json.loads(earlier.stdout)["which"] == 6, earlier.stderr


@pytest.mark.parametrize("args,message", [
    (["--workdir={missing}"], "training workdir"),
    (["--workdir={empty}"], "training workdir"),
    (["--workdir={run}", "--length=-5"], "length"),
    (["--workdir={run}", "--temperature=-1"], "temperature"),
    (["--workdir={run}", "--top_k=0"], "top_k"),
    (["--workdir={run}", "--top_p=0"], "top_p"),
    (["--workdir={run}", "--top_p=1.5"], "top_p"),
    (["--workdir={run}", "--seed_text=alice ✓"], "'✓'"),
    (["--workdir={run}", "--which=first"], "--which takes latest, best"),
    (["--workdir={run}", "--which=7"], "no checkpoint for step 7"),
    (["--length=10"], "workdir"),
])
def test_cli_bad_input_gets_one_line_and_a_nonzero_exit(workdir, tmp_path, args, message):
    paths = dict(missing=tmp_path / "nowhere", empty=tmp_path, run=workdir[0])
    result = run_cli(*(arg.format(**paths) for arg in args))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr

