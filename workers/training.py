"""Group models trained as Ray tasks with declared resources, retried on failure."""

from __future__ import annotations

import ray
import torch

from grouping.config import RunConfig
from grouping.families import family_of
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet
from grouping.training import resolve_device
from workers.progress import run_windowed
from workers.runtime import usable_workers, worker_threads


def _train(taskset: AnyTaskSet, linear: PerTaskLinear | None, tasks: list[int],
           config: RunConfig) -> dict:
    torch.set_num_threads(worker_threads(config.ray.num_cpus_per_worker))
    return family_of(taskset).train_group(taskset, tasks, config, config.train,
                                          resolve_device(config.device), linear=linear)


def train_groups(taskset: AnyTaskSet, groups: list[list[int]], config: RunConfig,
                 description: str, linear: PerTaskLinear | None = None) -> list[dict]:
    """Train one model per group (in parallel over Ray); per-group results in order.
    ``linear``: the per-task regressions models start from (``model.skip_init``)."""
    remote = ray.remote(_train).options(
        num_cpus=config.ray.num_cpus_per_worker, num_gpus=config.ray.num_gpus_per_worker,
        max_retries=config.ray.max_retries)
    shared = ray.put(taskset), ray.put(linear)
    return run_windowed(lambda tasks: remote.remote(*shared, tasks, config), groups,
                        usable_workers(config.ray), description)
