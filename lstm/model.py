"""CharLSTM: input encoding → stacked recurrent layers (+ dropout) → dense head to vocabulary logits.

Inside the model, activations are time-major ([T, B, …]) because `jax.lax.scan` walks the
leading axis; only the token input and the logits output are batch-major ([B, T, …]), so the
transposes touch int tokens and V-wide logits, never the hidden activations.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from lstm import environment, regularisers
from lstm.cells import get_cell
from lstm.layer import LSTMCell, glorot_uniform
from lstm.matmul import MATMUL_DTYPES, matmul
from lstm.recurrence import Recurrence

ENCODINGS = ("scaled", "onehot", "embed")
MATMUL_DTYPE_OPTIONS = ("auto", *MATMUL_DTYPES)
# Dropout sites fold these into the step's key. The input is 0 and layer i's output i + 1 (as
# always, so runs without the newer regularisers keep their masks); the others sit far above.
EMBEDDING_SITE = 1 << 16
WEIGHT_DROP_SITE = 1 << 17  # + layer index
ZONEOUT_SITE = 1 << 18  # + 2 · layer index (h), + 1 (c)
ZONEOUT_FIELDS = ("h", "c")  # zoneout_h, zoneout_c: the carry fields they name, in site order


def resolve_matmul_dtype(option: str, started_with: str | None = None) -> str:
    """model.matmul_dtype made explicit. "auto": the dtype a resumed run started with; for a new
    run bfloat16 on a CPU that multiplies it in hardware (avx512_bf16 or AMX), float32 anywhere
    else. On such a CPU bfloat16 operands took 0.76-0.90x float32's step time and left the
    tiny and Shakespeare configs' losses within seed noise (docs/performance.md, "bfloat16 as
    the CPU default"); the faithful configs ask for float32."""
    if option not in MATMUL_DTYPE_OPTIONS:
        raise ValueError(f"model.matmul_dtype must be one of {', '.join(MATMUL_DTYPE_OPTIONS)}; got {option!r}")
    if option != "auto":
        return option
    if started_with is not None:
        return started_with
    native = jax.default_backend() == "cpu" and environment.native_bfloat16()
    return "bfloat16" if native else "float32"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes a CharLSTM, validated once, when it is built (a ValueError naming
    the field). The defaults are what a config that does not name an option means, so a saved
    config from before the option existed reads as the run that wrote it (lstm/state.py).
    `matmul_dtype` "auto" is resolved here, once: the built config holds float32 or bfloat16."""

    encoding: str = "scaled"  # scaled | onehot | embed (CharLSTM's docstring)
    embed_dim: int = 64
    hidden_sizes: tuple = (256,)
    dropout: float = 0.0
    input_dropout: float = 0.0
    dropout_kind: str = "standard"
    embed_dropout: float = 0.0
    weight_drop: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    unroll: int = 1
    matmul_dtype: str = "float32"
    gate_activation: str = "sigmoid"
    cell: str = "lstm"

    @classmethod
    def from_config(cls, section: Mapping, auto_as: str | None = None) -> ModelConfig:
        """From a config's `model` section (a ConfigDict or dict); fields it lacks take their
        defaults. auto_as: what matmul_dtype "auto" stands for (a resumed run's own dtype); None
        asks the hardware (`resolve_matmul_dtype`), which starts JAX's backend."""
        values = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}
        if values.get("matmul_dtype") == "auto" and auto_as is not None:
            values["matmul_dtype"] = auto_as
        return cls(**values)

    def __post_init__(self):
        set_field = lambda name, value: object.__setattr__(self, name, value)
        set_field("hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        set_field("matmul_dtype", resolve_matmul_dtype(self.matmul_dtype))
        rates = ("dropout", "input_dropout", "embed_dropout", "weight_drop", "zoneout_h", "zoneout_c")
        checks = [
            (self.encoding in ENCODINGS, f"model.encoding must be one of {', '.join(ENCODINGS)}"),
            (len(self.hidden_sizes) >= 1 and min(self.hidden_sizes) >= 1,
             "model.hidden_sizes must list at least one positive width"),
            (all(0 <= getattr(self, rate) < 1 for rate in rates),
             f"model dropout rates ({', '.join(rates)}) must be in [0, 1)"),
            (self.dropout_kind in regularisers.DROPOUT_KINDS,
             f"model.dropout_kind must be one of {', '.join(regularisers.DROPOUT_KINDS)}"),
            (self.embed_dropout == 0 or self.encoding != "scaled",
             "model.embed_dropout needs encoding onehot or embed: the scaled input has no token rows to drop"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        try:  # the cell and the recurrence check their own options
            fields = self.recurrence().cell.Carry._fields
        except ValueError as error:
            raise ValueError(f"model.{error}") from None
        for name in self.zoneout():
            if name not in fields:
                raise ValueError(f"model.zoneout_{name} needs a cell whose carry has {name}; "
                                 f"{self.cell} carries ({', '.join(fields)})")

    def recurrence(self) -> Recurrence:
        """Every layer's recurrence: the cell with its options, the matmul dtype, the unroll."""
        return Recurrence(get_cell(self.cell, gate_activation=self.gate_activation), self.matmul_dtype, self.unroll)

    def zoneout(self) -> dict:
        """{carry field: rate} for the zoneout rates that are on."""
        rates = {name: getattr(self, f"zoneout_{name}") for name in ZONEOUT_FIELDS}
        return {name: rate for name, rate in rates.items() if rate}


class CharLSTM(nnx.Module):
    """A character language model.

    Encodings of the input token k (vocabulary size V):
      scaled: one float feature k / V (the Keras tutorial; its first W_x is 1×4H);
      onehot: the one-hot vector e_k, so x_t W_x is row k of W_x (a gather, no matmul);
      embed:  a learned D-wide embedding E[k]; without input dropout x_t W_x is row k of the
              V×4H table E W_x, again a gather.
    Dropout follows every recurrent layer (the tutorial's Dropout(0.2) after each LSTM), and
    optionally the input (the tutorial's extension 6); `dropout_kind="locked"` shares each
    sequence's masks across time. `embed_dropout` drops whole tokens' input rows and
    `weight_drop` the recurrent weights' entries, one mask per batch (lstm/regularisers.py);
    `zoneout_h` and `zoneout_c` let each unit keep its previous h or c (lstm/recurrence.py).
    `matmul_dtype="bfloat16"` runs the layers' and the head's matmuls on bfloat16 operands with
    float32 accumulation (lstm/matmul.py); `cell` picks every layer's cell (lstm/cells/) and
    `gate_activation="hard_sigmoid"` gives it Keras's pre-2.3 gates.

    Built from a ModelConfig, with keyword overrides of its fields:
    `CharLSTM(V, hidden_sizes=(64,), cell="gru", rngs=nnx.Rngs(0))`.
    """

    def __init__(self, vocab_size: int, config: ModelConfig | None = None, *, rngs: nnx.Rngs, **fields):
        config = dataclasses.replace(config or ModelConfig(), **fields)  # validated by ModelConfig
        self.config = config
        self.vocab_size = vocab_size
        if config.encoding == "embed":
            # Keras's Embedding default init, U(±0.05).
            self.embedding = nnx.Param(
                jax.random.uniform(rngs.params(), (vocab_size, config.embed_dim), jnp.float32, -0.05, 0.05))
        input_size = {"scaled": 1, "onehot": vocab_size, "embed": config.embed_dim}[config.encoding]
        layers = []
        for hidden in config.hidden_sizes:
            layers.append(LSTMCell(input_size, hidden, rngs=rngs, matmul_dtype=config.matmul_dtype,
                                   gate_activation=config.gate_activation, cell=config.cell,
                                   zoneout=config.zoneout(), unroll=config.unroll))
            input_size = hidden
        self.layers = nnx.List(layers)
        self.head_W = nnx.Param(glorot_uniform(rngs.params(), (input_size, vocab_size)))
        self.head_b = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))

    @property
    def encoding(self) -> str:
        return self.config.encoding

    @property
    def hidden_sizes(self) -> tuple:
        return self.config.hidden_sizes

    @property
    def matmul_dtype(self) -> str:
        return self.config.matmul_dtype

    def initial_state(self, batch_size: int) -> tuple:
        return tuple(layer.initial_state(batch_size) for layer in self.layers)

    def __call__(self, tokens, state=None, *, train: bool = False, dropout_key=None,
                 last_only: bool = False, with_top: bool = False):
        """tokens [B, T] int → (logits [B, T, V], final states: one carry per layer).

        Feed the returned states back as `state` to continue the sequence. With train=True and
        any dropout, `dropout_key` is required: the masks are a pure function of it.
        last_only=True returns logits [B, 1, V] for the last position only (the `last`
        objective): the head and the top layer's dropout then skip the other T-1 positions.
        with_top=True adds a third result, the top layer's outputs at every position before
        and after its dropout, ([T, B, H], [T, B, H]): what AR and TAR penalise.
        """
        logits, states, _, top = self._forward(tokens, state, train, dropout_key, trace=False,
                                               last_only=last_only, with_top=with_top)
        return (logits, states, top) if with_top else (logits, states)

    def _forward(self, tokens, state, train, dropout_key, *, trace, last_only=False, with_top=False):
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
        m = self.config
        rates = (m.dropout, m.input_dropout, m.embed_dropout, m.weight_drop, m.zoneout_h, m.zoneout_c)
        use_dropout = train and any(rate > 0 for rate in rates)
        if use_dropout and dropout_key is None:
            raise ValueError("train=True with dropout needs a dropout_key")
        if state is None:
            state = self.initial_state(tokens.shape[0])
        if len(state) != len(self.layers):
            raise ValueError(f"state has {len(state)} layers, the model {len(self.layers)}")

        def site(index):  # each dropout site folds its own index into the key: masks never repeat
            return jax.random.fold_in(dropout_key, index)

        def drop(x, rate, index):
            if not (use_dropout and rate > 0):
                return x
            return regularisers.dropout(x, site(index), rate, m.dropout_kind)

        x_proj = self._first_projection(tokens.T, site if use_dropout else None)
        final_states, traces = [], []
        hs = None  # the layer below's outputs; the first layer reads the tokens' projection instead
        top = None  # with_top: the top layer's outputs before and after its dropout
        for index, (layer, layer_state) in enumerate(zip(self.layers, state)):
            if index > 0:
                x_proj = layer.project_inputs(hs)
            W_h = None  # the layer's own; with weight drop, a masked copy for this batch
            if use_dropout and m.weight_drop > 0:
                W_h = regularisers.weight_drop(layer.W_h[...], site(WEIGHT_DROP_SITE + index), m.weight_drop)
            zone = None  # the layer's expected zoneout; in training, masks for this batch
            if use_dropout and m.zoneout():
                zone = {name: regularisers.zoneout_mask(site(ZONEOUT_SITE + 2 * index + ZONEOUT_FIELDS.index(name)),
                                                        rate, x_proj.shape[:2] + (layer.hidden_size,), x_proj.dtype)
                        for name, rate in m.zoneout().items()}
            layer_final, out = layer.scan(x_proj, layer_state, trace=trace, W_h=W_h, zone=zone)
            if trace:
                states, gates = out
                traces.append(gates._asdict() | states._asdict())
                hs = states.h
            else:
                hs = out
            final_states.append(layer_final)
            is_top, undropped = index == len(self.layers) - 1, hs
            if last_only and is_top and not with_top:
                hs = hs[-1:]
            hs = drop(hs, m.dropout, index + 1)
            if is_top and with_top:  # every position, even where only the last is scored
                top = (undropped, hs)
                hs = hs[-1:] if last_only else hs
        logits = matmul(hs, self.head_W[...], self.matmul_dtype) + self.head_b[...]
        return jnp.swapaxes(logits, 0, 1), tuple(final_states), traces, top

    def _first_projection(self, time_major_tokens, site=None):
        """The first layer's x_proj (x_t W_x + b, or its cell's), every step at once, [T, B, G·H].
        `site` (index → key) is given in training with dropout."""
        first, kind = self.layers[0], self.config.dropout_kind
        input_rate = self.config.input_dropout if site else 0.0
        if self.encoding == "scaled":
            x = (time_major_tokens.astype(jnp.float32) / self.vocab_size)[..., None]
            return first.project_inputs(regularisers.dropout(x, site(0), input_rate, kind) if input_rate else x)
        # Embedding dropout: one [V, 1] mask on the table the tokens' rows are gathered from.
        tokens_kept = None
        if site and self.config.embed_dropout > 0:
            table = self.embedding if self.encoding == "embed" else first.W_x
            tokens_kept = regularisers.embedding_mask(site(EMBEDDING_SITE), self.config.embed_dropout, self.vocab_size,
                                                      table[...].dtype)
        if self.encoding == "onehot":
            rows = first.W_x[...] if tokens_kept is None else first.W_x[...] * tokens_kept
            gathered = jnp.take(rows, time_major_tokens, axis=0)
            if input_rate:
                # Dropout on a one-hot vector only matters at its hot entry: it zeroes or rescales
                # the whole gathered row, which is exactly a [T, B, 1] factor on the row.
                gathered = gathered * regularisers.one_hot_input_scale(site(0), input_rate, kind, time_major_tokens,
                                                                       self.vocab_size, gathered.dtype)
            return first.finish_projection(gathered)
        embedding = self.embedding[...] if tokens_kept is None else self.embedding[...] * tokens_kept
        if input_rate:  # the mask acts on the D-wide embedding, so the table trick is off
            x = jnp.take(embedding, time_major_tokens, axis=0)
            return first.project_inputs(regularisers.dropout(x, site(0), input_rate, kind))
        table = embedding @ first.W_x[...]  # V×G·H: one small matmul per call
        return first.finish_projection(jnp.take(table, time_major_tokens, axis=0))

    def input_table(self):
        """The first layer's input projection for every vocabulary entry, [V, G·H] (bias
        included), or None for `scaled`. Precompute it once for token-by-token decoding."""
        first = self.layers[0]
        if self.encoding == "onehot":
            return first.finish_projection(first.W_x[...])
        if self.encoding == "embed":
            return first.finish_projection(self.embedding[...] @ first.W_x[...])
        return None

    def decode_step(self, tokens, states, table=None):
        """One step for generation: tokens [B] → (logits [B, V], new states), no dropout.

        Uses the same `step` as the scanned forward pass; `table` from `input_table()` turns
        the first layer's input projection into a row gather."""
        if table is not None:
            x_proj = jnp.take(table, tokens, axis=0)
        else:
            x_proj = self._first_projection(tokens[None])[0]
        new_states, h = [], None  # h: the layer below's output, once there is a layer below
        for index, (layer, state) in enumerate(zip(self.layers, states)):
            if index > 0:
                x_proj = layer.project_inputs(h)
            state, _ = layer.step(state, x_proj)
            h = state.h
            new_states.append(state)
        return matmul(h, self.head_W[...], self.matmul_dtype) + self.head_b[...], tuple(new_states)


def trace(model: CharLSTM, tokens, state=None):
    """Per-layer gate activity: a list (one entry per layer) of dicts of the cell's gates and
    carry fields, each [B, T, ·] (i, f, g, o, h, c for the LSTM; r, z, n, h for the GRU). Runs
    the model's own forward pass (deterministic, no dropout) with the scan emitting its gates,
    so the values are the ones the model used."""
    _, _, traces, _ = model._forward(tokens, state, False, None, trace=True)
    return [{name: jnp.swapaxes(value, 0, 1) for name, value in layer.items()} for layer in traces]
