"""One step of the cell: the recurrent carry, the gate activations and `cell_step`, which runs
any variant of lstm/variants.py for one time step. lstm/scans.py scans it over time (forward
and backward); lstm/cell.py holds the parameters. The equations are in lstm/cell.py's docstring
and, per variant, lstm/variants.py's table."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lstm.variants import FEEDBACK_WEIGHTS, fed_back, get_variant, per_group, recurrent_matrix

MATMUL_DTYPES = (None, "bfloat16")
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


def hard_sigmoid(z):
    """Keras's hard sigmoid (Keras 1 and 2, Theano and TensorFlow backends): slope 0.2 on
    |z| < 2.5, exactly 0 or 1 outside."""
    return jnp.clip(0.2 * z + 0.5, 0.0, 1.0)


def gate_function(name: str):
    """σ, the gates' activation, by its config name."""
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "hard_sigmoid":
        return hard_sigmoid
    raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}; got {name!r}")


def matmul(a, b, dtype: str | None = None):
    """a @ b; with dtype="bfloat16", both operands rounded to bfloat16 and the product
    accumulated (and returned) in float32. Rounding an operand that already is bfloat16 is
    free, so callers cast a weight once outside a loop and pass it in."""
    if dtype is None:
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def merges_time_and_batch() -> bool:
    """Whether [T, B, ...] arrays may be merged into [T·B, ...] for a matmul: on one device, yes
    (XLA then transposes nothing); with several the batch axis is sharded, and merging it with
    time would make XLA all-gather every device's rows (docs/scaling.md)."""
    return jax.device_count() == 1


def transposed_matmul(a, b, dtype: str | None = None):
    """aᵀ b for a [N, K] and b [N, M]: a weight's gradient summed over N = T·B rows.
    a is transposed in memory first (a [K, N] copy, small beside the product): XLA's CPU
    backend hands a dot that contracts its lhs's leading axis to Eigen, which took 1.1-1.5x
    the time of the row-major dot its YNNPACK fusion runs; the barrier keeps XLA from folding
    the transpose back into the dot (docs/performance.md, "Transposed products")."""
    return matmul(lax.optimization_barrier(a.T), b, dtype)


def project(x, W, dtype: str | None = None):
    """x [..., I] @ W [I, N] for every leading position at once (an input projection over
    [T, B]). Where `merges_time_and_batch()`, the leading axes are merged first, so autodiff's
    gradient of W is a plain [I, T·B]·[T·B, N] matmul reading dz as it lies; over separate
    (T, B) axes XLA copied dz into a transposed [N, T·B] array first (docs/performance.md)."""
    if x.ndim <= 2 or not merges_time_and_batch():
        return matmul(x, W, dtype)
    return matmul(x.reshape(-1, x.shape[-1]), W, dtype).reshape(*x.shape[:-1], W.shape[-1])


def check_matmul_dtype(dtype):
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}; got {dtype!r}")
    return dtype


class LSTMState(NamedTuple):
    """The recurrent carry. Order (h, c): h is what the next layer sees, c is the memory;
    gates, only for a variant that feeds gates back (fgr), the ones its next step sees."""

    h: jax.Array  # [B, H]
    c: jax.Array  # [B, H]
    gates: jax.Array | None = None  # [B, k·H], the variant's `feedback` gates, in that order


class Gates(NamedTuple):
    """Post-activation gate values of one step (each [B, H]); emitted only when tracing."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array



def lstm_step(W_h, state: LSTMState, x_proj, matmul_dtype: str | None = None,
              gate_activation: str = "sigmoid"):
    """The equations of the module docstring (`variants.lstm`, one line per gate).
    x_proj = x_t W_x + b, [B, 4H]."""
    return cell_step("lstm", W_h, {}, state, x_proj, matmul_dtype, gate_activation)


def cell_step(cell: str, W_h, extras, state: LSTMState, x_proj, matmul_dtype=None,
              gate_activation="sigmoid", zone=None):
    """One step of variant `cell`; extras {name: fused array} are its extra parameters; zone
    (keep_h, keep_c), if given, is zoneout's share of the previous state that is kept."""
    sigma = gate_function(gate_activation)
    variant = get_variant(cell)
    W_r, extras = recurrent_weights(variant, W_h, extras)
    state = with_feedback(variant, state)
    h_proj = matmul(recurrent_input(state), W_r, matmul_dtype)
    p = per_group(variant, extras, state.h.shape[-1])
    h, c, gates = variant.step(p, x_proj, h_proj, state.c, sigma)
    return zoneout(LSTMState(h, c, fed_back(variant, gates)), state, zone), Gates(**gates)


def recurrent_weights(variant, W_h, extras: dict):
    """(W_r, the step's extras): W_r is the matrix the scan multiplies the recurrent input by
    (variants.recurrent_matrix): W_h, centred for a variant that normalises its inputs, and
    [W_h; R] for one that feeds gates back, R then leaving the step's extras."""
    step_extras = {name: value for name, value in extras.items() if name != FEEDBACK_WEIGHTS}
    return recurrent_matrix(variant, W_h, extras.get(FEEDBACK_WEIGHTS)), step_extras


def with_feedback(variant, state: LSTMState) -> LSTMState:
    """The state with the gates `variant` feeds back: zeros (nothing fed yet) where it has none."""
    if not variant.feedback or state.gates is not None:
        return state
    batch, hidden = state.h.shape[:-1], state.h.shape[-1]
    return state._replace(gates=jnp.zeros(batch + (len(variant.feedback) * hidden,), state.h.dtype))


def recurrent_input(state: LSTMState):
    """r_{t-1}: h_{t-1}, followed by the fed-back gates where a variant has them."""
    return state.h if state.gates is None else jnp.concatenate([state.h, state.gates], axis=-1)


def zoneout(new: LSTMState, previous: LSTMState, zone) -> LSTMState:
    """Zoneout (Krueger et al. 2016): each unit keeps its previous value where keep = 1.
    In training keep is a 0/1 mask drawn per step and unit; in evaluation it is the rate
    itself, the expectation. zone = None (no zoneout) or (keep_h, keep_c). Fed-back gates
    are not state units: they pass as computed."""
    if zone is None:
        return new
    keep_h, keep_c = zone
    return new._replace(h=keep_h * previous.h + (1 - keep_h) * new.h, c=keep_c * previous.c + (1 - keep_c) * new.c)


def zone_inputs(zone):
    """Zoneout's masks as scan inputs ([T, B, H] each), or None where zone is constant."""
    return zone if zone is not None and jnp.ndim(zone[0]) == 3 else None

