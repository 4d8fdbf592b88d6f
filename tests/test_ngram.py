"""The count-model baseline (lstm/ngram.py) against a hand-worked example, the discount formula
worked by hand, the entropy rate of a known order-2 Markov chain, normalisation over the
vocabulary, its cache, and scripts/baseline.py's output and one-line errors."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm import ngram

ROOT = Path(__file__).resolve().parents[1]


def test_a_hand_worked_bigram_model():
    """Training text "aabab" (a=0, b=1, c=2 never seen), V = 3, one discount D = 0.5.

    Order 1 inside the order-2 model counts continuations, the distinct characters before each:
    a follows a and b (2), b follows a (1), c nothing; 3 in all, 2 types, γ = 0.5·2/3 = 1/3:
        P1(a) = 1.5/3 + (1/3)(1/3) = 11/18,  P1(b) = 0.5/3 + 1/9 = 5/18,  P1(c) = 1/9 = 2/18.
    Order 2 counts bigrams aa 1, ab 2, ba 1. After a: 3 in all, 2 types, γ = 1/3:
        P(a|a) = 0.5/3 + (1/3)(11/18) = 10/27,  P(b|a) = 1.5/3 + (1/3)(5/18) = 16/27,  P(c|a) = 1/27.
    After b (only "ba"; the last b is followed by nothing): γ = 0.5·1/1:
        P(a|b) = 0.5 + 0.5·11/18 = 29/36,  P(b|b) = 5/36,  P(c|b) = 2/36.
    After c (never seen): P1. The order-1 model alone counts occurrences (a 3, b 2; 5 in all):
        P(a) = 2.5/5 + (1/5)(1/3) = 17/30,  P(b) = 1.5/5 + 1/15 = 11/30,  P(c) = 2/30."""
    model = ngram.CountModel(np.array([0, 0, 1, 0, 1]), 3, max_order=2, discounts=[0.5] * 3)
    np.testing.assert_allclose(model.distribution([0], 2), [10 / 27, 16 / 27, 1 / 27], rtol=1e-12)
    np.testing.assert_allclose(model.distribution([1], 2), [29 / 36, 5 / 36, 2 / 36], rtol=1e-12)
    np.testing.assert_allclose(model.distribution([2], 2), [11 / 18, 5 / 18, 2 / 18], rtol=1e-12)
    np.testing.assert_allclose(model.distribution([], 1), [17 / 30, 11 / 30, 2 / 30], rtol=1e-12)
    # Held out "abca": b after a, c after b, a after c; the first character has no context.
    losses = model.held_out_losses(np.array([0, 1, 2, 0]))
    assert losses[2] == pytest.approx(-np.mean(np.log([16 / 27, 2 / 36, 11 / 18])), rel=1e-12)
    assert losses[1] == pytest.approx(-np.mean(np.log([11 / 30, 2 / 30, 17 / 30])), rel=1e-12)


def test_modified_kneser_ney_discounts_by_hand():
    # n1..n4 = 10, 5, 3, 2: Y = 10/20 = 0.5, D1 = 1 − 2·0.5·5/10 = 0.5,
    # D2 = 2 − 3·0.5·3/5 = 1.1, D3+ = 3 − 4·0.5·2/3 = 5/3.
    counts = [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [9]
    np.testing.assert_allclose(ngram.modified_kn_discounts(counts), [0.5, 1.1, 5 / 3], rtol=1e-12)
    # No count of 4: D3+ is undefined, so Y = 10/(10 + 2·5) stands for all three.
    np.testing.assert_allclose(ngram.modified_kn_discounts([1] * 10 + [2] * 5 + [3]), [0.5] * 3)


def markov_chain(vocab, length, seed):
    """A random order-2 chain (concentrated Dirichlet rows: the second character back matters)
    and `length` characters sampled from it, with its entropy rate in nats/char in closed form:
    H = Σ_ab π(ab) Σ_c P(c|ab)·(−ln P(c|ab)), π the stationary distribution over pairs."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab, 0.4), size=(vocab, vocab))  # p[a, b, c] = P(c | a b)
    step = np.zeros((vocab * vocab, vocab * vocab))  # pair ab → pair bc
    for a in range(vocab):
        for b in range(vocab):
            step[a * vocab + b, b * vocab:(b + 1) * vocab] = p[a, b]
    values, vectors = np.linalg.eig(step.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    rate = float(np.sum(pi * np.sum(-p * np.log(p), axis=2).reshape(-1)))
    cumulative, draws = np.cumsum(p, axis=2), rng.random(length)
    text = np.zeros(length, np.int64)
    for j in range(2, length):
        text[j] = min(np.searchsorted(cumulative[text[j - 2], text[j - 1]], draws[j]), vocab - 1)
    return text, rate


def test_the_order_3_model_approaches_a_markov_chains_entropy_rate():
    text, rate = markov_chain(4, 240_000, seed=3)
    losses = ngram.baseline(text[:200_000], text[200_000:], 4, max_order=5)
    # 40k held-out characters: the mean's sampling error is ~0.003 nats; fitting 64
    # probabilities from 200k adds ~1e-4.
    assert abs(losses[3] - rate) < 0.01, (losses, rate)
    assert losses[2] > rate + 0.05 and losses[1] > losses[2]  # shorter contexts miss the chain's memory
    assert abs(losses[5] - rate) < 0.02  # longer ones cost little: the discounts fall back to order 3


def test_every_distribution_sums_to_one_over_the_vocabulary():
    rng = np.random.default_rng(0)
    train = (np.cumsum(rng.integers(0, 3, 3000)) % 6)  # structured; character 6 never appears
    model = ngram.CountModel(train, 7, max_order=5)
    contexts = [[], list(train[100:104]), list(train[7:11]), [6, 6, 6, 6], [0, 6, 1, 2], [5, 5]]
    for context in contexts:
        for order in range(1, 6):
            dist = model.distribution(context, order)
            assert dist.shape == (7,) and np.all(dist > 0), (context, order, dist)
            assert dist.sum() == pytest.approx(1.0, abs=1e-12), (context, order)


def test_the_baseline_is_cached_by_the_split(tmp_path, monkeypatch):
    train, val = np.arange(300) % 7, np.arange(50) % 5
    first = ngram.cached_baseline(train, val, 7, tmp_path, max_order=3)
    assert len(list(tmp_path.glob("ngram-*.json"))) == 1

    def not_again(*args, **kwargs):
        raise AssertionError("recomputed a cached baseline")

    monkeypatch.setattr(ngram, "baseline", not_again)
    assert ngram.cached_baseline(train, val, 7, tmp_path, max_order=3) == first
    with pytest.raises(AssertionError):  # another split point is another key
        ngram.cached_baseline(train[:-1], np.concatenate([train[-1:], val]), 7, tmp_path, max_order=3)


def script(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "scripts/baseline.py", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


def test_the_script_scores_the_configs_own_split(corpus_path):
    from configs import tiny
    from lstm import data
    config = tiny.get_config()
    config.data.path = str(corpus_path)
    corpus = data.load_corpus(config.data)
    result = script("--config=configs/tiny.py", f"--config.data.path={corpus_path}", "--max_order=4", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["train_chars"], printed["val_chars"]) == (len(corpus.train), len(corpus.val))
    expected = ngram.CountModel(corpus.train, len(corpus.vocab), 4).held_out_losses(corpus.val)
    assert {int(k): v for k, v in printed["losses"].items()} == pytest.approx(expected, rel=1e-12)
    table = script("--config=configs/tiny.py", f"--config.data.path={corpus_path}", "--max_order=3")
    assert table.returncode == 0 and "| 3 |" in table.stdout and "beat this:" in table.stdout
    assert f"{min(expected[k] for k in (1, 2, 3)) / math.log(2):.3f}" in table.stdout


@pytest.mark.parametrize("args, message", [
    (("--config=configs/tiny.py", "--config.data.val_fraction=0"), "holds nothing out"),
    (("--config=configs/tiny.py", "--max_order=0"), "--max_order"),
    (("--config=configs/tiny.py", "--config.data.path=/no/such/file.txt"), "no such file"),
])
def test_the_script_fails_on_one_line(args, message):
    result = script(*args)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
