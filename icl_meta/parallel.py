"""Data parallelism: the task batch is sharded over a 1-d device mesh; parameters are replicated."""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from icl_meta.errors import require

BATCH_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh | None:
    """A mesh over the first `num_devices` local devices (all by default); None for a single device."""
    devices = jax.devices()
    num = len(devices) if num_devices is None else num_devices
    require(1 <= num <= len(devices), f"devices must be between 1 and {len(devices)}, got {num}")
    return None if num == 1 else Mesh(devices[:num], (BATCH_AXIS,))


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Constrain the leading (task) axis of every array in `tree` to be split over the mesh."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every array on every device of the mesh; without a mesh, committed to the default device, as the outputs of
    a jitted step and a restored checkpoint are (an uncommitted first state would compile the step a second time)."""
    if mesh is None:
        return jax.device_put(tree, jax.devices()[0])
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def init_distributed() -> None:
    """Multi-host data parallelism: join the other processes (one per host, each running the same command; the
    coordinator address, process count and id come from the cluster's environment, e.g. SLURM), after which
    `jax.devices()` and so `data_mesh` span every host's devices. Call before any computation."""
    jax.distributed.initialize()
