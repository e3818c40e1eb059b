"""Starting or joining Ray."""

from __future__ import annotations

import os

import ray

from grouping.config import RayConfig
from workers.console import say


def init_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (or RAY_ADDRESS); otherwise start a fresh local one.
    The workers' output is streamed to the driver (whose console may be a log file:
    :mod:`workers.console`).

    A bare ``ray.init()`` would join whatever cluster the last ``ray start`` on this machine
    recorded, even a dead one, so the local case asks for ``address="local"`` explicitly.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=True)


def usable_workers(config: RayConfig) -> int:
    """``config.num_workers``, capped by how many workers of the declared CPU/GPU share the
    cluster holds now, so that no job waits on a worker that can never be placed."""
    resources = ray.cluster_resources()
    fits = [config.num_workers]
    for name, share in (("CPU", config.num_cpus_per_worker), ("GPU", config.num_gpus_per_worker)):
        if share > 0:
            fits.append(int(resources.get(name, 0) // share))
    count = max(1, min(fits))
    if count < config.num_workers:
        say(f"ray.num_workers: the cluster holds {count} workers of this size, "
            f"not {config.num_workers}; using {count}")
    return count


def share_device(num_gpus: float) -> str:
    """The device of a worker holding ``num_gpus`` of a GPU: CUDA with a share, else the
    CPU."""
    return "cuda" if num_gpus > 0 else "cpu"


def worker_threads(num_cpus: float) -> int:
    """Torch threads inside a worker: its CPU share, so results do not depend on the node."""
    return max(1, int(num_cpus))


def single_node() -> bool:
    """Whether the Ray cluster is this one machine (workers can read the driver's files)."""
    return len([node for node in ray.nodes() if node["Alive"]]) == 1
