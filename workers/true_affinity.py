"""True training of sampled subsets (fine-tuning θ0, or from scratch as a group model, by
``true_affinity.protocol``) as Ray tasks with declared resources and retries."""

from __future__ import annotations

import json

import numpy as np
import ray
import torch

from grouping.affinity.true_affinity import fine_tune_subset, train_subset_from_scratch
from grouping.artifacts import RunDirectory
from grouping.config import RunConfig
from grouping.models import Spec, restore
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet
from grouping.training import resolve_device
from workers.progress import run_windowed
from workers.runtime import usable_workers, worker_threads


def _fine_tune(taskset: AnyTaskSet, spec: Spec, state: dict, linear: PerTaskLinear | None,
               subset: np.ndarray, config: RunConfig, seed: int) -> dict:
    torch.set_num_threads(worker_threads(config.ray.num_cpus_per_worker))
    device = resolve_device(config.device)
    if config.true_affinity.protocol == "from_scratch":
        return train_subset_from_scratch(taskset, subset, config, seed, device, linear)
    base = restore(spec, state)
    return fine_tune_subset(base.to(device), spec, taskset, subset, config.fine_tuning(),
                            config.true_affinity.epochs, seed, device,
                            config.true_affinity.target)


def fine_tune_subsets(taskset: AnyTaskSet, spec: Spec, state: dict, subsets: np.ndarray,
                      config: RunConfig, seed: int, description: str,
                      trials: tuple[RunDirectory, str] | None = None,
                      linear: PerTaskLinear | None = None) -> list[dict]:
    """f(S, i) for every subset (one Ray task each, under ``true_affinity.protocol``), in
    subset order; ``linear``: the per-task regressions from-scratch models start from
    (``model.skip_init``).

    With ``trials`` (a run directory and a folder in it), each finished trial is written
    there at once, and trials already there from an interrupted attempt are read back instead
    of being run again.
    """
    remote = ray.remote(_fine_tune).options(
        num_cpus=config.ray.num_cpus_per_worker, num_gpus=config.ray.num_gpus_per_worker,
        max_retries=config.ray.max_retries)
    shared = [ray.put(value) for value in (taskset, spec, state, linear)]

    def trial_file(position: int) -> str:
        subset = "-".join(str(task) for task in subsets[position])
        return f"{trials[1]}/seed{seed}-{subset}.json"

    finished, on_result = {}, None
    if trials is not None:
        run = trials[0]
        for position in range(len(subsets)):
            if run.file(trial_file(position)).is_file():
                saved = run.read_json(trial_file(position))
                finished[position] = {"losses": np.array(saved["losses"]),
                                      "seconds": saved["seconds"]}

        def on_result(position: int, result: dict) -> None:
            run.write_text(trial_file(position), json.dumps(
                {"losses": result["losses"].tolist(), "seconds": result["seconds"]}))

    return run_windowed(lambda subset: remote.remote(*shared, subset, config, seed), subsets,
                        usable_workers(config.ray), description, finished, on_result)
