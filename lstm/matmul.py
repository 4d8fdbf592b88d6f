"""The matrix products of the recurrence, in one vocabulary of operand dtypes.

`matmul_dtype` is "float32" (operands as they are: float32 parameters, float64 in the tests)
or "bfloat16" (both operands rounded to bfloat16, the product accumulated and returned in
float32: on a GPU's tensor cores, or a CPU with bfloat16 hardware, several times the float32
rate). Parameters, states, nonlinearities and the optimizer stay in their own dtype either way,
so only the products lose precision (8 bits of mantissa in, 24 out). A config's "auto" is
resolved to one of these once, by `lstm.model.ModelConfig`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(dtype: str) -> str:
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {', '.join(MATMUL_DTYPES)}; got {dtype!r}")
    return dtype


def matmul(a, b, dtype: str = "float32"):
    """a @ b in `dtype`'s operands. Rounding an operand that already is bfloat16 is free, so
    callers cast a weight once outside a loop (`cast`) and pass it in."""
    if dtype == "float32":
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def cast(weight, dtype: str = "float32"):
    """A weight rounded to `dtype`'s operand type once, before a loop multiplies by it every step."""
    return weight if dtype == "float32" else weight.astype(dtype)


def merges_time_and_batch() -> bool:
    """Whether [T, B, ...] arrays may be merged into [T·B, ...] for a matmul: on one device, yes
    (XLA then transposes nothing); with several the batch axis is sharded, and merging it with
    time would make XLA all-gather every device's rows (docs/scaling.md)."""
    return jax.device_count() == 1


def transposed_matmul(a, b, dtype: str = "float32"):
    """aᵀ b for a [N, K] and b [N, M]: a weight's gradient summed over N = T·B rows.
    a is transposed in memory first (a [K, N] copy, small beside the product): XLA's CPU
    backend hands a dot that contracts its lhs's leading axis to Eigen, which took 1.1-1.5x
    the time of the row-major dot its YNNPACK fusion runs; the barrier keeps XLA from folding
    the transpose back into the dot (docs/performance.md, "Transposed products")."""
    return matmul(lax.optimization_barrier(a.T), b, dtype)


def project(x, W, dtype: str = "float32"):
    """x [..., I] @ W [I, N] for every leading position at once (an input projection over
    [T, B]). Where `merges_time_and_batch()`, the leading axes are merged first, so autodiff's
    gradient of W is a plain [I, T·B]·[T·B, N] matmul reading dz as it lies; over separate
    (T, B) axes XLA copied dz into a transposed [N, T·B] array first (docs/performance.md)."""
    if x.ndim <= 2 or not merges_time_and_batch():
        return matmul(x, W, dtype)
    return matmul(x.reshape(-1, x.shape[-1]), W, dtype).reshape(*x.shape[:-1], W.shape[-1])


def recurrent_weight_gradient(r_prev, dzs, merge_time_and_batch=None, matmul_dtype: str = "float32"):
    """dW_r = Σ_t Σ_b r_{t-1}ᵀ dz_t, one matmul after the loop, for r_prev [T, B, R], dzs [T, B, G].

    Where (T, B) may merge into one axis (`merges_time_and_batch`, the default): free in memory,
    and only the narrow r is transposed, into a copy (`transposed_matmul`; the merge measured
    0.404 → 0.369 s/step on the bigger shape, docs/performance.md). Otherwise an einsum over
    both axes lets each device contract its own rows, and the gradient all-reduce does the rest."""
    if merge_time_and_batch is None:
        merge_time_and_batch = merges_time_and_batch()
    if merge_time_and_batch:
        return transposed_matmul(r_prev.reshape(-1, r_prev.shape[-1]), dzs.reshape(-1, dzs.shape[-1]),
                                 matmul_dtype)
    if matmul_dtype == "float32":
        return jnp.einsum("tbh,tbg->hg", r_prev, dzs)
    return jnp.einsum("tbh,tbg->hg", r_prev.astype(matmul_dtype), dzs.astype(matmul_dtype),
                      preferred_element_type=jnp.float32)
