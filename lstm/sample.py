"""Sampling: prime the state on a seed with the model's own scan, then generate with one scan.

The core (`sample_logits`, `generate`) knows nothing of CharLSTM. A model is a step function

    step_fn(carry, tokens [B]) -> (logits [B, V], carry)

so the core is tested against fake models whose next token is known, and one stream or a batch
of B independent samples run the same code.

The hand-over between priming and generation is (carry, last_token): the carry has seen every
seed token but the last, and `last_token` is the one not yet fed. Each generation step feeds
it, samples from the logits it produces and carries the sample on. Priming is therefore the
scanned forward pass over seed[:-1], and the first sample comes from the last seed token's
logits, exactly what one forward pass over the whole seed would give.

Randomness: generation step t (counted from the first sampled token) draws from
fold_in(key, t). A fresh key per step that depends on the absolute position, not on how the
steps were grouped, so streaming in chunks gives the same text as generating all at once.

`Generator` wraps a trained CharLSTM for notebooks and `scripts/generate.py`; the model is split
once with `nnx.split` and every jitted function is pure in (graphdef, params, ...), so a new
seed, temperature, top-k or top-p value never re-traces.

Speed (`python scripts/benchmark.py sample`; numbers in docs/performance.md, "Generation"): a
single stream is bound by reading every recurrent weight matrix once per character, matrices
that for the bigger model do not fit a core's L2 cache. So the per-step extras are cut to what
is left (the input projection is a table lookup, the random draws are made ahead of the
recurrence); more speed needs fewer weight bytes or a second core per stream. Batches of
streams amortise the weight reads.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lstm import cleaning, data
from lstm.model import CharLSTM
from lstm.state import load_model

DEFAULT_CHUNK = 128  # streaming granularity: a few ms of work per chunk on a CPU, a smooth flow on a terminal
# `benchmark.py sample --unroll=N`: 2 beat 1 at B=64 and B=1 and 4 and 8 gained nothing but
# compile time (docs/performance.md, "Generation").
DEFAULT_UNROLL = 2
NOISE_BUDGET_BYTES = 16 << 20  # Gumbel noise drawn ahead of the recurrence, per block of steps


class Settings(NamedTuple):
    """Sampling settings as traced values. None switches a filter off, which changes the
    program; changing a value (a new temperature, another k) re-uses the compiled one."""

    temperature: jax.Array | float = 1.0
    top_k: jax.Array | int | None = None
    top_p: jax.Array | float | None = None


DEFAULT_SETTINGS = Settings()  # plain sampling at temperature 1, no top-k or top-p


def check_settings(length=0, temperature=1.0, top_k=None, top_p=None, num_samples=1) -> None:
    """Raises ValueError with a one-line message for settings that cannot work."""
    if isinstance(length, bool) or int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or unset), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or unset), got {top_p!r}")
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")


def traced_settings(temperature=1.0, top_k=None, top_p=None) -> Settings:
    """Settings as device scalars, so the jitted functions see values, not constants."""
    return Settings(jnp.float32(temperature),
                    None if top_k is None else jnp.int32(top_k),
                    None if top_p is None else jnp.float32(top_p))


# ------------------------------------------------------------------------------ the generic core
def _keep_mask(logits, temperature, top_k, top_p):
    """True for the tokens top-k and top-p leave in play, [..., V].

    Ranks come from a stable sort, so tied logits are cut in vocabulary order and top-k never
    keeps more than k. The nucleus is the smallest set of highest-probability tokens whose
    mass reaches top_p, measured on the temperature-scaled distribution after top-k (as in
    Hugging Face's order: temperature, then top-k, then top-p)."""
    order = jnp.argsort(-logits, axis=-1)
    rank = jnp.argsort(order, axis=-1)
    position = jnp.arange(logits.shape[-1])
    keep_sorted = jnp.ones(logits.shape, bool)
    if top_k is not None:
        keep_sorted = keep_sorted & (position < top_k)
    if top_p is not None:
        scale = jnp.where(temperature > 0, temperature, 1.0)  # T = 0 keeps only the argmax anyway
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1) / scale
        probs = jax.nn.softmax(jnp.where(keep_sorted, sorted_logits, -jnp.inf), axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # top_p = 1 must keep everything, even where rounding lifts the cumulative mass to 1.
        keep_sorted = keep_sorted & ((mass_before < top_p) | (top_p >= 1))
    return jnp.take_along_axis(keep_sorted, rank, axis=-1)


def sample_logits(key, logits, temperature=1.0, top_k=None, top_p=None):
    """Draws one token per row of logits [..., V] → int32 [...].

    temperature 0 is greedy (argmax). Sampling uses the Gumbel-max trick written as
    argmax(logits + T·g): for T > 0 it equals argmax(logits / T + g), a draw from
    softmax(logits / T), and at T = 0 it is the argmax, so greedy and sampled decoding are one
    program and a new temperature never recompiles. top_k / top_p (None = off) restrict the
    draw to the k most likely tokens / the nucleus of mass top_p.
    """
    noise = jax.random.gumbel(key, jnp.shape(logits), jnp.float32)
    return _pick(noise, logits, temperature, top_k, top_p)


def _pick(noise, logits, temperature, top_k, top_p):
    """`sample_logits` with its Gumbel noise drawn beforehand."""
    logits = jnp.asarray(logits, jnp.float32)
    if top_k is not None or top_p is not None:
        logits = jnp.where(_keep_mask(logits, temperature, top_k, top_p), logits, -jnp.inf)
    return jnp.argmax(logits + temperature * noise, axis=-1).astype(jnp.int32)


def generate_scan(step_fn: Callable, carry, last_token, key, length: int,
                  settings: Settings = DEFAULT_SETTINGS, *, start=0, unroll: int = 1,
                  return_logits: bool = False):
    """Samples `length` tokens with one `lax.scan` (the unjitted body of `generate`).

    Step t samples exactly as sample_logits(fold_in(key, t), ...) would, but the noise of a
    block of steps is drawn in one vectorised call before the recurrence: on CPU each random
    draw is a small loop of its own (threefry), which inside the step cost about as much as
    the cell's elementwise work. Blocks bound the noise buffer to NOISE_BUDGET_BYTES; a long
    generation is an outer scan over blocks.
    """
    last_token = jnp.asarray(last_token, jnp.int32)
    logits_shape = jax.eval_shape(step_fn, carry, last_token)[0].shape

    def body(loop, noise):
        carry, token = loop
        logits, carry = step_fn(carry, token)
        token = _pick(noise, logits, *settings)
        return (carry, token), ((token, logits) if return_logits else token)

    def run(loop, first, count):
        steps = first + jnp.arange(count, dtype=jnp.int32)
        noise = jax.vmap(lambda t: jax.random.gumbel(jax.random.fold_in(key, t), logits_shape))(steps)
        return jax.lax.scan(body, loop, noise, unroll=max(1, min(unroll, count)))

    block = max(1, NOISE_BUDGET_BYTES // (4 * int(np.prod(logits_shape))))
    full_blocks, rest = divmod(length, block) if length > block else (0, length)
    loop, pieces = (carry, last_token), []
    if full_blocks:
        loop, out = jax.lax.scan(lambda loop, index: run(loop, start + index * block, block),
                                 loop, jnp.arange(full_blocks, dtype=jnp.int32))
        pieces.append(jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out))
    if rest or not pieces:  # a zero-step scan keeps the output shapes for length 0
        loop, out = run(loop, start + full_blocks * block, rest)
        pieces.append(out)
    out = jax.tree.map(lambda *xs: jnp.concatenate(xs), *pieces)
    tokens, logits = out if return_logits else (out, None)
    result = (jnp.swapaxes(tokens, 0, 1), *loop)  # batch-major, like the model
    return result + (jnp.swapaxes(logits, 0, 1),) if return_logits else result


generate = jax.jit(generate_scan,
                   static_argnames=("step_fn", "length", "unroll", "return_logits"))
generate.__doc__ = """Generates `length` tokens as one jitted scan over (carry, last token).

step_fn(carry, tokens [B]) -> (logits [B, V], carry) must be hashable (a module-level function
or a functools.partial); it is a static argument. `start` is the absolute index of the first
step (for chunked generation); step t samples with fold_in(key, t).

Returns (tokens int32 [B, length], carry, last_token) and, with return_logits=True, also the
logits each step sampled from, [B, length, V].
"""


# -------------------------------------------------------------------------- CharLSTM as step_fn
def normalize_seed(text: str, data_cfg=None) -> str:
    """Cleans a seed the way the corpus was cleaned (line endings, lower-casing, ascii_only,
    allowed_chars), so "Alice was" works with a model trained on lower-cased text. The rules
    are lstm.cleaning's own, so seed and corpus can never be cleaned differently."""
    if data_cfg is None:
        return text
    return cleaning.clean_text(text, lowercase=data_cfg.get("lowercase", False),
                               allowed_chars=data_cfg.get("allowed_chars") or None,
                               ascii_only=data_cfg.get("ascii_only", False),
                               crlf=data_cfg.get("crlf", False))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prime(graphdef, params, tokens):
    """States after the model's scanned forward pass over tokens [B, T] (no dropout)."""
    _, states = nnx.merge(graphdef, params)(tokens)
    return states  # the unused logits are dead code to XLA: the head never runs


def _model_step_fn(model: CharLSTM):
    """The model as a step_fn; the first layer's input projection is a table gathered per
    step, computed once here (outside the scan) rather than once per character."""
    table = model.input_table()

    def step_fn(states, tokens):
        return model.decode_step(tokens, states, table)
    return step_fn


@functools.partial(jax.jit, static_argnames=("graphdef", "length", "unroll"))
def _generate_model(graphdef, params, states, last_token, key, start, settings, *, length, unroll):
    model = nnx.merge(graphdef, params)
    return generate_scan(_model_step_fn(model), states, last_token, key, length, settings,
                         start=start, unroll=unroll)


class Generator:
    """Text from a trained CharLSTM: `generate(...)` for a whole continuation, `stream(...)` for
    pieces as they are made. Both return only the continuation, never the seed.

    An empty seed (after cleaning) starts from the zero state and a first character drawn
    uniformly from the vocabulary with the given rng; that character is the first of the
    `length` returned.

    Compiled programs take the parameters as an argument, so a training loop can keep one
    Generator and assign `generator.params = state.params` before each sample, recompiling
    nothing.
    """

    def __init__(self, model: CharLSTM, vocab: data.Vocab, config=None, *,
                 chunk_size: int = DEFAULT_CHUNK, unroll: int = DEFAULT_UNROLL):
        if model.vocab_size != len(vocab):
            raise ValueError(f"the model has {model.vocab_size} outputs but the vocabulary "
                             f"{len(vocab)} characters")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.graphdef, self.params = nnx.split(model)
        self.vocab, self.config = vocab, config
        self.hidden_sizes = model.hidden_sizes
        self.chunk_size, self.unroll = int(chunk_size), int(unroll)
        self._compiled = {}  # AOT executables by static shape, so compile time is measurable
        self.timings = {}  # of the last call: compile_s, prime_s, generate_s, chars_per_s

    @classmethod
    def from_workdir(cls, workdir, which: str | int = "best", **kwargs) -> "Generator":
        """Model, vocabulary and config from a workdir's checkpoints alone (no training text)."""
        model, vocab, config = load_model(workdir, which)
        return cls(model, vocab, config, **kwargs)

    # -- seed ------------------------------------------------------------------------------------
    def prepare_seed(self, seed_text: str, unknown: str = "error") -> tuple[str, np.ndarray]:
        """(the seed as the model sees it, its ids). Cleaned like the corpus; characters still
        outside the vocabulary raise a one-line DataError naming them, or with unknown="skip"
        are dropped."""
        cleaned = normalize_seed(seed_text, self.config.data if self.config else None)
        try:
            ids = self.vocab.encode(cleaned, unknown=unknown).astype(np.int32)
        except cleaning.DataError as error:
            raise cleaning.DataError(f"seed text: {error}; unknown='skip' drops them") from None
        return self.vocab.decode(ids), ids

    def prime(self, seed_ids, num_samples: int = 1):
        """(states, last_token int32 [num_samples]) for a non-empty seed: the states have seen
        seed[:-1] through the model's scanned forward pass, and the last token is the one the
        first generation step feeds (see the module docstring)."""
        seed_ids = np.asarray(seed_ids, np.int32)
        if seed_ids.size == 0:
            raise ValueError("prime needs at least one seed token")
        if seed_ids.size == 1:
            states = self._zero_states(1)
        else:  # identical rows: prime one and broadcast, rather than B copies of the same work
            states = self._run("prime", _prime, self.graphdef, self.params, jnp.asarray(seed_ids[None, :-1]))
        states = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_samples,) + x.shape[1:]), states)
        return states, jnp.full((num_samples,), seed_ids[-1], jnp.int32)

    def _start(self, seed_ids, num_samples, rng):
        """(states, last_token [B], generation key, first token or None) for either kind of seed."""
        key, first_key = jax.random.split(jax.random.key(rng))
        if len(seed_ids) == 0:
            first = jax.random.randint(first_key, (num_samples,), 0, len(self.vocab), jnp.int32)
            return self._zero_states(num_samples), first, key, first
        return *self.prime(seed_ids, num_samples), key, None

    def _zero_states(self, batch_size):
        # The model's own, so a variant whose state carries more than (h, c) gets all of it.
        return nnx.merge(self.graphdef, self.params).initial_state(batch_size)

    def _run(self, label, jitted, *args, **static):
        """Calls `jitted`, compiling ahead of time on a new shape so compile time is kept apart
        from run time in `timings`."""
        signature = (label, tuple(sorted(static.items())),
                     tuple((np.shape(x), str(getattr(x, "dtype", type(x))))
                           for x in jax.tree.leaves(args[1:])),
                     jax.tree.structure(args[1:]))
        compiled = self._compiled.get(signature)
        if compiled is None:
            started = time.perf_counter()
            compiled = jitted.lower(*args, **static).compile()
            self.timings["compile_s"] = self.timings.get("compile_s", 0.0) + time.perf_counter() - started
            self._compiled[signature] = compiled
        return compiled(*args[1:])  # the graphdef is baked into the executable

    def _chunk(self, states, last, key, start, settings, length):
        return self._run("generate", _generate_model, self.graphdef, self.params, states, last,
                         key, jnp.int32(start), settings, length=length, unroll=self.unroll)

    def _decode_rows(self, tokens) -> list[str]:
        return [self.vocab.decode(row) for row in np.asarray(tokens)]

    # -- the public calls ------------------------------------------------------------------------
    def generate(self, seed_text: str, length: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, num_samples: int = 1, rng: int = 0,
                 unknown: str = "error") -> str | list[str]:
        """`length` characters continuing `seed_text`: one string, or a list of `num_samples`
        independent ones. One jitted scan over the whole length (compiled once per length and
        num_samples); `timings` then holds its compile and run times."""
        check_settings(length, temperature, top_k, top_p, num_samples)
        _, seed_ids = self.prepare_seed(seed_text, unknown)
        self.timings = {"compile_s": 0.0}
        started = time.perf_counter()
        states, last, key, first = jax.block_until_ready(self._start(seed_ids, num_samples, rng))
        primed, prime_compile_s = time.perf_counter(), self.timings["compile_s"]
        pieces = [first[:, None]] if first is not None and length > 0 else []
        steps = length - len(pieces)
        if steps > 0:
            settings = traced_settings(temperature, top_k, top_p)
            pieces.append(jax.block_until_ready(self._chunk(states, last, key, 0, settings, steps)[0]))
        generate_s = time.perf_counter() - primed - (self.timings["compile_s"] - prime_compile_s)
        texts = self._decode_rows(jnp.concatenate(pieces, axis=1)) if pieces else [""] * num_samples
        self.timings.update(prime_s=primed - started - prime_compile_s, generate_s=generate_s,
                            chars_per_s=length * num_samples / max(generate_s, 1e-9))
        return texts[0] if num_samples == 1 else texts

    def stream(self, seed_text: str, length: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, num_samples: int = 1, rng: int = 0,
               unknown: str = "error") -> Iterator[str | list[str]]:
        """Yields the continuation in pieces as it is made (a string per piece, or a list of
        `num_samples` strings). Pieces come from fixed-size jitted chunks of `chunk_size`
        steps, one compiled program for every chunk; the last chunk is cut, not recompiled.
        Joined, the pieces equal `generate(...)` with the same arguments."""
        check_settings(length, temperature, top_k, top_p, num_samples)
        _, seed_ids = self.prepare_seed(seed_text, unknown)
        self.timings = {"compile_s": 0.0}
        pick = (lambda texts: texts[0]) if num_samples == 1 else (lambda texts: texts)
        states, last, key, first = self._start(seed_ids, num_samples, rng)
        steps = length
        if first is not None and length > 0:
            steps -= 1
            yield pick(self._decode_rows(first[:, None]))
        settings = traced_settings(temperature, top_k, top_p)
        pending = None
        for start in range(0, steps, self.chunk_size):
            # Dispatch the next chunk before decoding this one: the device works while the
            # host turns ids into text and the caller prints.
            tokens, states, last = self._chunk(states, last, key, start, settings, self.chunk_size)
            if pending is not None:
                yield pick(self._decode_rows(pending))
            pending = tokens[:, :min(self.chunk_size, steps - start)]
        if pending is not None:
            yield pick(self._decode_rows(pending))
