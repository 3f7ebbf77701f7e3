"""Data parallelism: a 1-D device mesh, batches split along it, parameters replicated.

Every host computes the same global batch (the data order is a pure function of the seed), and
`shard` hands each device its slice, so one code path serves one device, several GPUs and several
hosts. XLA inserts the gradient all-reduce because the loss is a mean over the sharded batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"

# Environment variables that mean "this process is one of several" (jax.distributed reads them).
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_CLUSTER_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def multihost_requested() -> bool:
    if any(os.environ.get(name) for name in _MULTIHOST_ENV):
        return True
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _CLUSTER_SIZE_ENV)


def initialize_distributed() -> bool:
    """jax.distributed.initialize() when multi-host variables are set; True if it ran."""
    if not multihost_requested() or jax.distributed.is_initialized():
        return False
    kwargs: dict[str, Any] = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over all devices (every local device on every host)."""
    return Mesh(np.asarray(devices or jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Split axis `batch_axis` over the mesh (axis 1 when a seed axis leads)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), AXIS))


def padded_size(batch: int, mesh: Mesh) -> int:
    """The smallest size >= batch that the mesh splits evenly."""
    devices = mesh.devices.size
    return -(-batch // devices) * devices


def shard(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the same host-side array on every process; each device gets its part."""
    array = np.asarray(array)
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of `tree` on every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: shard(np.asarray(x), sharding), tree)


def is_main_process() -> bool:
    return jax.process_index() == 0
