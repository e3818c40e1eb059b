"""The DMTG search as one Ray task with the config's declared resources, retried on failure."""

from __future__ import annotations

import ray
import torch

from grouping.config import RunConfig
from grouping.dmtg import search_groups
from grouping.models import ModelSpec
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import TaskSet
from grouping.training import resolve_device
from workers.progress import run_windowed
from workers.runtime import worker_threads


def _search(taskset: TaskSet, linear: PerTaskLinear | None, spec: ModelSpec,
            num_groups: int, config: RunConfig, seed: int) -> dict:
    torch.set_num_threads(worker_threads(config.dmtg.num_cpus))
    result = search_groups(taskset, spec, num_groups, config.train, config.dmtg, seed,
                           resolve_device(config.device), linear)
    return {"seed": seed, "groups": result.groups, "branch_logits": result.branch_logits.tolist(),
            "tasks": result.tasks, "search_epochs": result.search_epochs,
            "search_best_epoch": result.search_best_epoch,
            "finetune_epochs": result.finetune_epochs,
            "search_seconds": result.search_seconds,
            "finetune_seconds": result.finetune_seconds}


def run_dmtg(taskset: TaskSet, spec: ModelSpec, num_groups: int, config: RunConfig,
             seeds: list[int], linear: PerTaskLinear | None = None) -> list[dict]:
    """Per initialisation seed (in parallel), the DMTG groups, the selected heads' per-task
    test metrics and the wall times; ``linear``: the per-task regressions every branch starts
    from (``model.skip_init``)."""
    remote = ray.remote(_search).options(num_cpus=config.dmtg.num_cpus,
                                         num_gpus=config.dmtg.num_gpus,
                                         max_retries=config.ray.max_retries)
    shared = ray.put(taskset), ray.put(linear)
    return run_windowed(lambda seed: remote.remote(*shared, spec, num_groups, config, seed),
                        seeds, len(seeds), "DMTG search")
