"""Data parallelism: the task batch is sharded over a 1-d device mesh; parameters are replicated. The mesh spans
every process's devices after `init_distributed` (one process per host, or several on one machine)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from icl_meta.errors import require

BATCH_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh | None:
    """A mesh over the first `num_devices` devices of the job (all, over every process, by default); None for one."""
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
    a jitted step and a restored checkpoint are (an uncommitted first state would compile the step a second time).
    Over several processes each one supplies its own (identical) copy."""
    if mesh is None:
        return jax.device_put(tree, jax.devices()[0])
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def global_copy(leaf: Any) -> jax.Array:
        local = np.asarray(leaf)
        return jax.make_array_from_callback(local.shape, sharding, lambda index: local[index])

    return jax.tree_util.tree_map(global_copy, tree)


def init_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join the other processes of a multi-process job, after which `jax.devices()` and so `data_mesh` span every
    process's devices. Call before any computation. On a cluster (SLURM, Kubernetes, ...) the three arguments come
    from its environment; elsewhere pass them (every process the same coordinator host:port and count, each its
    own id). On CPU the processes exchange through gloo collectives."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by CPU devices only
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
