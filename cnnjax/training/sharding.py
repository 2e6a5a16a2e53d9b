"""Devices for one run: multi-process start, the data-parallel mesh, placement.

Data parallelism is `jit` over a one-axis mesh (`data`), not `pmap`: the
parameters, optimiser state and BatchNorm statistics are replicated, and each
batch is constrained to be split along the `data` axis inside the step. XLA's
partitioner then runs every device on its slice of the batch and inserts the
all-reduces itself, so the batch mean and variance that BatchNorm normalises
with are those of the global batch (synchronised BN) and the gradient is the
global batch's gradient: one step on N devices computes what one device computes
on the same global batch.

With several processes (`jax.distributed`), the mesh spans every device of
every process; each process places its own copy of host data (the same values
on every process) or its own rows of a batch (`global_batch`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


class MeshError(ValueError):
    """A device layout that cannot work on the visible devices."""


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to a multi-process JAX run (`jax.distributed.initialize`).

    With every argument None, JAX finds them itself where the cluster says them
    (Cloud TPU VMs and pod slices, SLURM, Open MPI). Otherwise all three are
    needed: the coordinator's `host:port` (process 0 listens there), the number
    of processes and this process's index. On CPU, collectives between processes
    go over gloo (TCP), so several processes on one machine work too.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise MeshError(
            "--coordinator_address, --num_processes and --process_id go together; got "
            f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, process_id={process_id!r}"
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise MeshError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def data_mesh(num_devices: int) -> Mesh | None:
    """The `data` mesh over `num_devices` devices (0: all), or None for one device.

    Raises `MeshError` (naming what is visible) when there are not that many
    devices, or when several processes run but the mesh would leave some out.
    """
    devices = jax.devices()
    count = len(devices) if num_devices == 0 else num_devices
    where = f"{len(devices)} devices visible ({jax.device_count() // max(jax.process_count(), 1)} per process, " \
            f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''})"
    if count > len(devices):
        raise MeshError(f"mesh.data={num_devices} but only {where}; use 0 (all) or at most {len(devices)}")
    if jax.process_count() > 1 and count != len(devices):
        raise MeshError(f"mesh.data={num_devices} with {where}: a multi-process run must use every device "
                        "(mesh.data=0)")
    if count == 1:
        return None
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Copies every leaf to every device of `mesh` (each process passes the same values).

    With `mesh=None`, leaves are placed on the default device as they are.
    """
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, tree)
    sharding = replicated(mesh)

    def put(leaf):
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def global_batch(local: Any, mesh: Mesh | None) -> Any:
    """Assembles a global batch split over `data` from each process's own rows.

    Every process passes its `global_batch_size / process_count` consecutive rows
    (process 0 the first ones); the result is one global array per leaf.
    """
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, local)
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)


def constrain_batch(batch: Any, sharding: NamedSharding | None) -> Any:
    """Inside a jitted step: split the batch's leading axis over `data` (no-op without a mesh)."""
    if sharding is None:
        return batch
    return jax.lax.with_sharding_constraint(batch, sharding)


def is_primary() -> bool:
    """True in the process that writes a run's files (process 0; the only one without `jax.distributed`)."""
    return jax.process_index() == 0


def host_values(tree: Any) -> Any:
    """`jax.device_get(tree)`, also for arrays split over the devices of several processes (gathered)."""
    if all(getattr(leaf, "is_fully_addressable", True) for leaf in jax.tree_util.tree_leaves(tree)):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def from_process_0(value: Any) -> Any:
    """Process 0's `value` (anything JSON can hold) in every process; `value` itself with one process.

    Every process must call it at the same point (it is a collective).
    """
    if jax.process_count() == 1:
        return value
    import json

    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    padded = np.zeros(size, np.uint8)
    padded[: min(size, data.size)] = data[:size]
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded))).decode())
