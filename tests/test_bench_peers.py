"""The benchmark's peer train steps: each one trains (first loss near ln V, then it memorises a
fixed batch), and missing packages or bad requests fail with a clear exception."""
import dataclasses
import importlib.util
import math
import sys

import jax
import numpy as np
import pytest

from lstm.bench import peers as bench_peers
from lstm.bench.peers import PEERS, PeerUnavailable, TrainShape, make_batch, make_peer_step

TINY = TrainShape("tiny", batch=4, seq_len=8, vocab=7, hidden_sizes=(16, 16), encoding="scaled",
                  embed_dim=8, objective="last", dropout=0.0)
STEPS = 40
# Over STEPS full-batch Adam steps at lr 1e-3 "last" (4 targets) falls by ~0.3 nats and "all"
# (32 random targets) by ~0.08 in every peer; these bounds leave room for library versions.
MIN_DROP = {"last": 0.15, "all": 0.04}


def require(peer):
    """Skip when an optional peer's package is absent. find_spec, not importorskip: importing
    keras here would fix its backend before the peer can choose JAX."""
    package = {"pytorch": "torch", "keras": "keras"}.get(peer)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed (pip install -r requirements-bench.txt)")
    if peer == "jax-cudnn" and jax.default_backend() != "gpu":
        pytest.skip("jax.experimental.rnn runs only on cuDNN: needs a CUDA GPU")


@pytest.mark.parametrize("encoding,objective",
                         [("scaled", "last"), ("scaled", "all"), ("embed", "last"), ("embed", "all"),
                          ("onehot", "last")])
@pytest.mark.parametrize("peer", PEERS)
def test_peer_step_learns(peer, encoding, objective):
    require(peer)
    shape = dataclasses.replace(TINY, encoding=encoding, objective=objective)
    step, info = make_peer_step(peer, shape, *make_batch(shape))
    losses = [step() for _ in range(STEPS)]
    assert all(isinstance(loss, float) and math.isfinite(loss) for loss in losses)
    assert losses[0] == pytest.approx(math.log(shape.vocab), abs=0.3)
    assert losses[-1] < losses[0] - MIN_DROP[objective], losses
    assert info["peer"] == peer and info["version"] and info["init"] and info["note"]


@pytest.mark.parametrize("peer", PEERS)
def test_peer_step_with_dropout_is_reproducible_per_seed(peer):
    require(peer)
    shape = dataclasses.replace(TINY, dropout=0.5)
    batch = make_batch(shape)

    def losses(seed):
        step, _ = make_peer_step(peer, shape, *batch, seed=seed)
        return [step() for _ in range(3)]

    first = losses(0)
    assert all(math.isfinite(loss) for loss in first)
    assert losses(0) == first
    assert losses(1) != first


@pytest.mark.parametrize("objective,target_shape", [("last", (4,)), ("all", (4, 8))])
def test_make_batch(objective, target_shape):
    shape = dataclasses.replace(TINY, objective=objective)
    inputs, targets = make_batch(shape, seed=3)
    assert inputs.shape == (4, 8) and targets.shape == target_shape
    assert inputs.dtype == np.int32 and targets.dtype == np.int32
    for array in (inputs, targets):
        assert array.min() >= 0 and array.max() < shape.vocab
    again = make_batch(shape, seed=3)
    np.testing.assert_array_equal(inputs, again[0])
    np.testing.assert_array_equal(targets, again[1])
    assert not np.array_equal(inputs, make_batch(shape, seed=4)[0])


def test_unknown_peer_and_bad_shapes_raise_value_error():
    inputs, targets = make_batch(TINY)
    with pytest.raises(ValueError, match="unknown peer"):
        make_peer_step("mxnet", TINY, inputs, targets)
    with pytest.raises(ValueError, match="encoding"):
        make_peer_step("flax", dataclasses.replace(TINY, encoding="bytes"), inputs, targets)
    with pytest.raises(ValueError, match="objective"):
        make_peer_step("flax", dataclasses.replace(TINY, objective="stateful"), inputs, targets)
    with pytest.raises(ValueError, match="does not fit"):
        make_peer_step("flax", TINY, inputs[:, :4], targets)


@pytest.mark.parametrize("peer,module", [("pytorch", "torch"), ("keras", "keras")])
def test_missing_package_raises_peer_unavailable(peer, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # a None entry makes `import module` fail
    with pytest.raises(PeerUnavailable):
        make_peer_step(peer, TINY, *make_batch(TINY))


def test_keras_on_another_backend_raises_peer_unavailable(monkeypatch):
    require("keras")
    keras = bench_peers._import_keras_on_jax()
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(PeerUnavailable, match="tensorflow"):
        make_peer_step("keras", TINY, *make_batch(TINY))


def test_jax_cudnn_off_a_gpu_raises_peer_unavailable():
    if jax.default_backend() == "gpu":
        pytest.skip("on a GPU the peer runs: test_peer_step_learns covers it")
    with pytest.raises(PeerUnavailable, match="cuDNN"):
        make_peer_step("jax-cudnn", TINY, *make_batch(TINY))
