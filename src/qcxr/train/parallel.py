"""Data parallelism: a 1-D device mesh, batches split along it, parameters replicated.

Every host computes the same global batch (the data order is a pure function of the seed), and
`shard` hands each device its slice, so one code path serves one device, several GPUs and several
hosts. XLA inserts the gradient all-reduce because the loss is a mean over the sharded batch.

Several processes (hosts, or local processes on one machine) join one run through
`jax.distributed`; `initialize_distributed` (called by train.loop and train.grid) does it when
the environment asks for it:

  QCXR_COORDINATOR     host:port of process 0's coordinator (JAX_COORDINATOR_ADDRESS also works)
  QCXR_NUM_PROCESSES   how many processes take part            (or JAX_NUM_PROCESSES)
  QCXR_PROCESS_ID      this process's index, 0 .. N-1          (or JAX_PROCESS_ID)
  QCXR_LOCAL_DEVICES   optional: comma-separated local device ids this process uses
                       (or JAX_LOCAL_DEVICE_IDS)

For example, two processes on one machine with one CPU device each:

  QCXR_COORDINATOR=localhost:12355 QCXR_NUM_PROCESSES=2 QCXR_PROCESS_ID=0 qcxr train ... &
  QCXR_COORDINATOR=localhost:12355 QCXR_NUM_PROCESSES=2 QCXR_PROCESS_ID=1 qcxr train ...

Without them, SLURM, Open MPI and the other launchers that jax.distributed detects by itself are
used when their variables say there is more than one task. On CPU the processes' collectives go
through gloo (jax_cpu_collectives_implementation, set here unless already chosen). Every
process must run the same command into the same (shared) run directory; only process 0 writes
the run's files (`is_main_process`), except Orbax checkpoints, which every process saves together.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"

# Environment variables that mean "this process is one of several"; QCXR_* take precedence.
_COORDINATOR_ENV = ("QCXR_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
_NUM_PROCESSES_ENV = ("QCXR_NUM_PROCESSES", "JAX_NUM_PROCESSES")
_PROCESS_ID_ENV = ("QCXR_PROCESS_ID", "JAX_PROCESS_ID")
_LOCAL_DEVICES_ENV = ("QCXR_LOCAL_DEVICES", "JAX_LOCAL_DEVICE_IDS")
_MULTIHOST_ENV = (*_COORDINATOR_ENV, "COORDINATOR_ADDRESS")
_CLUSTER_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _env_int(names: tuple[str, ...]) -> int | None:
    value = _env(names)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{'/'.join(names)}={value!r}: not a whole number") from None


def multihost_requested() -> bool:
    if _env(_MULTIHOST_ENV):
        return True
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _CLUSTER_SIZE_ENV)


def distributed_settings() -> dict[str, Any]:
    """The jax.distributed.initialize arguments the environment gives (empty: let JAX detect)."""
    kwargs: dict[str, Any] = {}
    coordinator = _env(_COORDINATOR_ENV)
    if coordinator:
        kwargs["coordinator_address"] = coordinator
        for key, names in (("num_processes", _NUM_PROCESSES_ENV), ("process_id", _PROCESS_ID_ENV)):
            value = _env_int(names)
            if value is not None:
                kwargs[key] = value
        if "num_processes" in kwargs and "process_id" not in kwargs:
            raise ValueError(
                f"{_COORDINATOR_ENV[0]} and {_NUM_PROCESSES_ENV[0]} are set but not "
                f"{_PROCESS_ID_ENV[0]}: give every process its index 0 .. "
                f"{kwargs['num_processes'] - 1}"
            )
    local = _env(_LOCAL_DEVICES_ENV)
    if local:
        kwargs["local_device_ids"] = [int(x) for x in local.split(",") if x.strip()]
    return kwargs


def initialize_distributed() -> bool:
    """jax.distributed.initialize() when multi-host variables are set; True if it ran.

    Must run before anything touches a JAX backend (the first jax.devices() or computation).
    """
    if not multihost_requested() or jax.distributed.is_initialized():
        return False
    kwargs = distributed_settings()
    # Cross-process collectives on CPU devices need an implementation (gloo is JAX's default
    # since 0.5, None before): chosen before the CPU backend starts, unless set already.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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


def to_host(array: Any) -> np.ndarray:
    """The whole of a (possibly batch-sharded) global array as numpy, on every process.

    np.asarray is enough in one process and for replicated arrays; an array split over the
    devices of several processes is gathered from all of them (every process must call this).
    """
    if not isinstance(array, jax.Array) or jax.process_count() == 1:
        return np.asarray(array)
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def is_main_process() -> bool:
    return jax.process_index() == 0
