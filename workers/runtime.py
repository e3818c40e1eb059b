"""Starting or joining Ray."""

from __future__ import annotations

import os

import ray


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or RAY_ADDRESS); otherwise start a fresh local one.

    A bare ``ray.init()`` would join whatever cluster the last ``ray start`` on this machine
    recorded, even a dead one, so the local case asks for ``address="local"`` explicitly.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=True)


def remote_options(config, num_cpus: float | None = None) -> dict:
    """Ray resource and retry options from the config's ``ray`` section."""
    return {"num_cpus": config.num_cpus_per_worker if num_cpus is None else num_cpus,
            "num_gpus": config.num_gpus_per_worker}


def worker_threads(num_cpus: float) -> int:
    """Torch threads inside a worker: its CPU share, so results do not depend on the node."""
    return max(1, int(num_cpus))
