"""Data parallelism through JAX's own SPMD machinery: one 1-D mesh, axis `data`.

The global batch is sharded over every device of every process; parameters, optimizer state
and the corpus are replicated. Nothing else is needed: XLA inserts the one all-reduce of the
gradients that data parallelism requires, so the training step is the same function on one
device or on many.

Multi-host: `initialize()` calls `jax.distributed.initialize()` when the standard environment
is present (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a cluster JAX detects
itself, such as SLURM). Every process computes the same global window starts (they are a pure
function of seed, epoch and step) and hands JAX only the shard its own devices hold.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
# SLURM_STEP_NODELIST, not SLURM_JOB_ID: a plain run inside an allocation (no srun) is one process.
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NODELIST", "OMPI_COMM_WORLD_SIZE")


def initialize() -> None:
    """Joins a multi-process job when its environment says there is one; a no-op otherwise."""
    # Must run before anything touches a JAX backend, so it asks no device questions itself.
    if jax.distributed.is_initialized() or not any(os.environ.get(k) for k in _COORDINATOR_ENV):
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()  # JAX reads the cluster's own environment


def split_cpu(count: int) -> None:
    """Makes the host CPU `count` JAX devices, so data parallelism runs over its cores (on the
    2-core VM this beat one device using both cores on the Shakespeare race's short steps,
    docs/results.md, until freed host memory was kept between steps: since, a tie,
    docs/performance.md). It must precede any use of a JAX backend: a process whose backend already
    started keeps its devices, and a different count raises RuntimeError naming the need."""
    if count <= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend already started (a notebook, a test process)
        if len(jax.devices("cpu")) != count:
            raise RuntimeError(f"{count} CPU devices need a fresh process: this one's JAX backend "
                               f"already started with {len(jax.devices('cpu'))}") from None


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards axis `batch_axis` over the mesh, replicating the others."""
    return NamedSharding(mesh, P(*([None] * batch_axis), AXIS))


def global_array(host_array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global jax.Array from an array every process holds in full (cheap: window starts),
    each process filling only its addressable shards, so it works across hosts too."""
    host_array = np.asarray(host_array)
    return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def put_replicated(tree, mesh: Mesh):
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: global_array(np.asarray(x), sharding), tree)
