"""The per-task logistic regressions (grouping.models.per_task_linear) fitted as Ray tasks
over chunks of tasks, with declared resources and retries. Each task's fit is independent
and deterministic, so the result does not depend on the number of workers."""

from __future__ import annotations

import numpy as np
import ray
from threadpoolctl import threadpool_limits

from grouping.config import RunConfig
from grouping.models.per_task_linear import PerTaskLinear, fit_per_task_linear
from grouping.tasksets import TaskSet
from workers.progress import run_windowed
from workers.runtime import usable_workers, worker_threads

TASKS_PER_JOB = 10


def _fit(taskset: TaskSet, tasks: np.ndarray, threads: int) -> PerTaskLinear:
    with threadpool_limits(threads):
        return fit_per_task_linear(taskset, tasks)


def fit_linear(taskset: TaskSet, config: RunConfig) -> PerTaskLinear:
    """One logistic regression per task of ``taskset``, in task order."""
    remote = ray.remote(_fit).options(num_cpus=config.ray.num_cpus_per_worker,
                                      max_retries=config.ray.max_retries)
    shared = ray.put(taskset)
    threads = worker_threads(config.ray.num_cpus_per_worker)
    chunks = [np.arange(start, min(start + TASKS_PER_JOB, taskset.num_tasks))
              for start in range(0, taskset.num_tasks, TASKS_PER_JOB)]
    parts = run_windowed(lambda tasks: remote.remote(shared, tasks, threads), chunks,
                         usable_workers(config.ray), "per-task logistic regression")
    return PerTaskLinear.concatenate(parts)
