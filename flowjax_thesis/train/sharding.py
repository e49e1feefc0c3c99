"""Data parallelism through JAX's own SPMD machinery.

A 1-D :class:`jax.sharding.Mesh` with axis ``"data"`` over all devices (of all processes after
``jax.distributed.initialize()``). Parameters and optimizer state are replicated; each batch is
sharded along its leading axis; XLA inserts the gradient all-reduce. The same code runs on one
CPU, on simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU
or on several hosts.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
    """Places a host pytree on every device of ``mesh`` (works across processes: every process
    must hold the same values)."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def shard_batch(batch, mesh: Mesh | None):
    """Constrains a batch (inside jit) to be split along its leading axis over the mesh."""
    if mesh is None:
        return batch
    spec = batch_sharded(mesh)

    def constrain(x):
        if x.ndim == 0 or x.shape[0] % mesh.size:
            return x
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree.map(constrain, batch)


def to_host(tree):
    """Fetches a (replicated) pytree to numpy on this process."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when the standard environment variables ask for a
    multi-process run (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
    The gloo CPU collectives are selected first (they only matter on CPU). Returns True when
    initialised."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
    return True
