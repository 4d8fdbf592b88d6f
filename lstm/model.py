"""CharLSTM: input encoding → stacked LSTM layers (+ dropout) → dense head to vocabulary logits.

Inside the model, activations are time-major ([T, B, …]) because `jax.lax.scan` walks the
leading axis; only the token input and the logits output are batch-major ([B, T, …]), so the
transposes touch int tokens and V-wide logits, never the hidden activations.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lstm import regularisers
from lstm.cell import GATE_ORDER, LSTMCell, LSTMState, check_matmul_dtype, glorot_uniform, matmul

ENCODINGS = ("scaled", "onehot", "embed")
# Dropout sites fold these into the step's key. The input is 0 and layer i's output i + 1 (as
# always, so runs without the newer regularisers keep their masks); the others sit far above.
EMBEDDING_SITE = 1 << 16
WEIGHT_DROP_SITE = 1 << 17  # + layer index
ZONEOUT_SITE = 1 << 18  # + 2 · layer index (h), + 1 (c)


class CharLSTM(nnx.Module):
    """A character language model.

    Encodings of the input token k (vocabulary size V):
      scaled: one float feature k / V (the Keras tutorial; its first W_x is 1×4H);
      onehot: the one-hot vector e_k, so x_t W_x is row k of W_x (a gather, no matmul);
      embed:  a learned D-wide embedding E[k]; without input dropout x_t W_x is row k of the
              V×4H table E W_x, again a gather.
    Dropout follows every LSTM layer (the tutorial's Dropout(0.2) after each LSTM), and
    optionally the input (the tutorial's extension 6); `dropout_kind="locked"` shares each
    sequence's masks across time. `embed_dropout` drops whole tokens' input rows and
    `weight_drop` the recurrent weights' entries, one mask per batch (lstm/regularisers.py);
    `zoneout_h` and `zoneout_c` let each unit keep its previous h or c (cell.zoneout).
    `matmul_dtype="bfloat16"` runs the layers' and the head's matmuls on bfloat16 operands with
    float32 accumulation (cell.py).
    `gate_activation="hard_sigmoid"` gives every layer Keras's pre-2.3 gates (cell.py), and
    `cell` picks every layer's variant (lstm/variants.py).
    """

    def __init__(self, vocab_size: int, *, hidden_sizes: Sequence[int] = (256,),
                 encoding: str = "scaled", embed_dim: int = 64, dropout: float = 0.0,
                 input_dropout: float = 0.0, unroll: int = 1, matmul_dtype: str | None = None,
                 gate_activation: str = "sigmoid", cell: str = "lstm", dropout_kind: str = "standard",
                 embed_dropout: float = 0.0, weight_drop: float = 0.0, zoneout_h: float = 0.0,
                 zoneout_c: float = 0.0, rngs: nnx.Rngs):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
        if not hidden_sizes:
            raise ValueError("hidden_sizes must name at least one layer")
        for name, rate in (("dropout", dropout), ("input_dropout", input_dropout),
                           ("embed_dropout", embed_dropout), ("weight_drop", weight_drop),
                           ("zoneout_h", zoneout_h), ("zoneout_c", zoneout_c)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if dropout_kind not in regularisers.DROPOUT_KINDS:
            raise ValueError(f"dropout_kind must be one of {regularisers.DROPOUT_KINDS}, got {dropout_kind!r}")
        if embed_dropout > 0 and encoding == "scaled":
            raise ValueError("embed_dropout drops tokens' embeddings or one-hot rows; the scaled input has neither")
        self.vocab_size = vocab_size
        self.encoding = encoding
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.dropout_kind = dropout_kind
        self.embed_dropout = embed_dropout
        self.weight_drop = weight_drop
        self.zoneout = (zoneout_h, zoneout_c)
        self.unroll = unroll
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)
        if encoding == "embed":
            # Keras's Embedding default init, U(±0.05).
            self.embedding = nnx.Param(
                jax.random.uniform(rngs.params(), (vocab_size, embed_dim), jnp.float32, -0.05, 0.05))
        input_size = {"scaled": 1, "onehot": vocab_size, "embed": embed_dim}[encoding]
        layers = []
        for hidden in self.hidden_sizes:
            layers.append(LSTMCell(input_size, hidden, rngs=rngs, matmul_dtype=matmul_dtype,
                                   gate_activation=gate_activation, cell=cell, zoneout=self.zoneout))
            input_size = hidden
        self.layers = nnx.List(layers)
        self.head_W = nnx.Param(glorot_uniform(rngs.params(), (input_size, vocab_size)))
        self.head_b = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))

    def initial_state(self, batch_size: int) -> tuple[LSTMState, ...]:
        return tuple(layer.initial_state(batch_size) for layer in self.layers)

    def __call__(self, tokens, state=None, *, train: bool = False, dropout_key=None,
                 last_only: bool = False, with_top: bool = False):
        """tokens [B, T] int → (logits [B, T, V], final states: one LSTMState per layer).

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
        rates = (self.dropout, self.input_dropout, self.embed_dropout, self.weight_drop, *self.zoneout)
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
            return regularisers.dropout(x, site(index), rate, self.dropout_kind)

        x_proj = self._first_projection(tokens.T, site if use_dropout else None)
        final_states, traces = [], []
        hs = None  # the layer below's outputs; the first layer reads the tokens' projection instead
        top = None  # with_top: the top layer's outputs before and after its dropout
        for index, (layer, layer_state) in enumerate(zip(self.layers, state)):
            if index > 0:
                x_proj = layer.project_inputs(hs)
            W_h = None  # the layer's own; with weight drop, a masked copy for this batch
            if use_dropout and self.weight_drop > 0:
                W_h = regularisers.weight_drop(layer.W_h[...], site(WEIGHT_DROP_SITE + index), self.weight_drop)
            zone = None  # the layer's expected zoneout; in training, masks for this batch
            if use_dropout and any(self.zoneout):
                zone = regularisers.zoneout_masks([site(ZONEOUT_SITE + 2 * index + j) for j in (0, 1)], self.zoneout,
                                                  x_proj.shape[:2] + (layer.hidden_size,), x_proj.dtype)
            layer_final, out = layer.scan(x_proj, layer_state, unroll=self.unroll, trace=trace, W_h=W_h,
                                          zone=zone)
            if trace:
                hs, cs, gates = out
                traces.append({**{n: getattr(gates, n) for n in GATE_ORDER}, "c": cs, "h": hs})
            else:
                hs = out
            final_states.append(layer_final)
            is_top, undropped = index == len(self.layers) - 1, hs
            if last_only and is_top and not with_top:
                hs = hs[-1:]
            hs = drop(hs, self.dropout, index + 1)
            if is_top and with_top:  # every position, even where only the last is scored
                top = (undropped, hs)
                hs = hs[-1:] if last_only else hs
        logits = matmul(hs, self.head_W[...], self.matmul_dtype) + self.head_b[...]
        return jnp.swapaxes(logits, 0, 1), tuple(final_states), traces, top

    def _first_projection(self, time_major_tokens, site=None):
        """The first layer's x_proj (x_t W_x + b, or its variant's), every step at once, [T, B, 4H].
        `site` (index → key) is given in training with dropout."""
        first, kind = self.layers[0], self.dropout_kind
        input_rate = self.input_dropout if site else 0.0
        if self.encoding == "scaled":
            x = (time_major_tokens.astype(jnp.float32) / self.vocab_size)[..., None]
            return first.project_inputs(regularisers.dropout(x, site(0), input_rate, kind) if input_rate else x)
        # Embedding dropout: one [V, 1] mask on the table the tokens' rows are gathered from.
        tokens_kept = None
        if site and self.embed_dropout > 0:
            table = self.embedding if self.encoding == "embed" else first.W_x
            tokens_kept = regularisers.embedding_mask(site(EMBEDDING_SITE), self.embed_dropout, self.vocab_size,
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
        table = embedding @ first.W_x[...]  # V×4H: one small matmul per call
        return first.finish_projection(jnp.take(table, time_major_tokens, axis=0))

    def input_table(self):
        """The first layer's input projection for every vocabulary entry, [V, 4H] (bias
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
    """Per-layer gate activity: a list (one entry per layer) of dicts with keys
    i, f, g, o, c, h, each [B, T, H]. Runs the model's own forward pass (deterministic, no
    dropout) with the scan emitting its gates, so the values are the ones the model used."""
    _, _, traces, _ = model._forward(tokens, state, False, None, trace=True)
    return [{name: jnp.swapaxes(value, 0, 1) for name, value in layer.items()} for layer in traces]
