"""GPU readiness without a GPU: the training step, the evaluation steps and the sampler lower
for CUDA on this CPU machine, in float32 and with bfloat16 matmuls.

Lowering runs JAX's CUDA lowering rules and emits StableHLO for the GPU backend without a GPU
or its plugin, so an op or a dtype that only the GPU path rejects (a CPU-only custom call, a
primitive with no CUDA rule, a sharding the GPU lowering refuses) fails here, in CI, instead of
on the first lent GPU. It does not compile for the GPU: XLA's GPU compiler needs the device.
"""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import tiny
from lstm import evaluation, sample, train
from lstm import state as run_state

GPU = ("cuda",)
VOCAB = 11


def shrunk(objective: str, encoding: str, matmul_dtype: str):
    """The tiny config at the test's sizes, with one objective and encoding: each changes the
    traced program (the `last` head, the scaled input's matmul, the stateful carry, the
    sentences' per-position weights)."""
    config = tiny.get_config()
    config.data.objective = objective
    config.data.seq_len = 6
    config.model.encoding = encoding
    config.model.hidden_sizes = (8, 8)
    config.model.matmul_dtype = matmul_dtype
    config.train.batch_size = 4
    config.train.steps_per_dispatch = 2
    return config


def lowered_text(jitted, *args, **static) -> str:
    lowered = jitted.trace(*args, **static).lower(lowering_platforms=GPU)
    text = lowered.as_text()
    assert "func.func public @main" in text  # a whole module, not an empty shell
    return text


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("objective,encoding", [("all", "embed"), ("last", "scaled"),
                                                ("stateful", "onehot"), ("sentences", "embed")])
def test_train_and_eval_steps_lower_for_cuda(objective, encoding, matmul_dtype):
    config = shrunk(objective, encoding, matmul_dtype)
    graphdef, optimizer, state = run_state.init_train_state(config, VOCAB, total_steps=10)
    steps, batch = config.train.steps_per_dispatch, config.train.batch_size
    corpus = jnp.zeros((64,), jnp.uint8)
    starts = jnp.zeros((steps, batch), jnp.int32)
    # `sentences` weighs each position: [K, B, T], and its evaluation's last-position gather
    shape = (steps, batch, config.data.seq_len) if objective == "sentences" else (steps, batch)
    weights = jnp.ones(shape, jnp.float32)
    resets = jnp.zeros((steps,), bool)
    text = lowered_text(train.make_train_steps(graphdef, optimizer, config),
                        state, corpus, starts, weights, resets)
    if matmul_dtype == "bfloat16":  # the switch reaches the GPU program, not only the CPU one
        assert "bf16" in text
    lowered_text(evaluation.make_eval_step(graphdef, config.data.seq_len), state.params, corpus,
                 starts[0], weights[0])


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_the_continuous_evaluation_lowers_for_cuda(matmul_dtype):
    config = shrunk("all", "embed", matmul_dtype)
    model = run_state.build_model(config, VOCAB)
    graphdef, params = nnx.split(model)
    lowered_text(evaluation.make_continuous_step(graphdef), params, model.initial_state(4),
                 jnp.zeros((64,), jnp.uint8), jnp.zeros((4, 9), jnp.int32), jnp.ones((4, 8), jnp.float32))


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_sampler_lowers_for_cuda(matmul_dtype):
    config = shrunk("all", "embed", matmul_dtype)
    model = run_state.build_model(config, VOCAB)
    generator = sample.Generator(model, data_vocab(), config)
    lowered_text(sample._prime, generator.graphdef, generator.params, jnp.zeros((1, 5), jnp.int32))
    states = generator._zero_states(3)
    settings = sample.traced_settings(temperature=0.8, top_k=5, top_p=0.9)
    lowered_text(sample._generate_model, generator.graphdef, generator.params, states,
                 jnp.zeros((3,), jnp.int32), jax.random.key(0), jnp.int32(0), settings,
                 length=7, unroll=sample.DEFAULT_UNROLL)


def data_vocab():
    from lstm import data
    return data.Vocab("\n !abcdefgh")


def test_the_lowering_is_cudas_not_the_cpus():
    """Guards the mechanism itself: were `lowering_platforms` ignored, the tests above would
    only lower for the CPU again. A Cholesky factorisation lowers to LAPACK on the CPU and to
    cuSOLVER for CUDA."""
    cholesky = jax.jit(jnp.linalg.cholesky)
    eye = jnp.eye(3)
    assert "cusolver" in lowered_text(cholesky, eye)
    assert "cusolver" not in cholesky.trace(eye).lower(lowering_platforms=("cpu",)).as_text()
