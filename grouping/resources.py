"""Memory and disk the estimation stages will need, estimated from the config and the task set
before any stage starts, so that a run that cannot fit is refused in one line naming the field
that drives the estimate (instead of failing an hour in, or swapping the machine).

The estimates are upper-side approximations of the arrays each stage allocates, in bytes:

- the gradient table, ``gradients/features.npy``, R × d float32 on disk, plus the same again in
  the stage's shards until it finishes (:class:`grouping.artifacts.ShardStore`);
- one gradient worker: the dense projection D × d (``dense``; ``kronecker+dense``: k × d with
  k = ``intermediate_dim``), a chunk's per-example gradients ``chunk_rows`` × D (``dense``),
  its projected rows, and its copy of the node features;
- one surrogate worker: the gradient rows of the tasks of one batch of subsets, in the
  surrogate's dtype, and each task's d × d curvature when the fits are preconditioned;
- for an estimator that reads no gradient features (the lookahead, the label overlap): the
  rows' base outputs only, and per worker θ0 with its optimizer state and a copy of the
  features it trains on.

R is the number of (example, task) rows, D the number of projected parameters, d the
projection's dimension.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from grouping.affinity.computers import feature_dim
from grouping.affinity.estimators import gradient_projection_dim
from grouping.affinity.surrogate_schedule import PRECONDITION_ROWS
from grouping.config import ConfigError, RunConfig
from grouping.tasksets.base import TRAIN, VAL, TaskSet

GIB = 2 ** 30


@dataclass(frozen=True)
class Need:
    """An estimated need: what it is, the config field that drives it, its bytes."""

    what: str
    field: str
    bytes: int


def task_rows(taskset: TaskSet, max_negatives: int | None) -> np.ndarray:
    """Training and validation rows per task [T, 2] as the binary-label family's rows keep
    them (negatives capped per task and split)."""
    counts = np.zeros((taskset.num_tasks, 2), np.int64)
    for column, split in enumerate((TRAIN, VAL)):
        labels = taskset.labels[taskset.indices(split)]
        positives = labels.sum(0, dtype=np.int64)
        negatives = len(labels) - positives
        if max_negatives is not None:
            negatives = np.minimum(negatives, max_negatives)
        counts[:, column] = positives + negatives
    return counts


def estimation_needs(config: RunConfig, taskset: TaskSet, num_parameters: int) -> list[Need]:
    """Disk of the gradient table, memory of one gradient worker and of one surrogate worker,
    for a binary-label task set whose base model projects ``num_parameters`` parameters. An
    estimator that reads no gradient features gets a table of base outputs only, and its
    workers hold θ0 and a copy of the task set's features, which they train."""
    options, ray = config.affinity, config.ray
    dim = feature_dim(options.projection, gradient_projection_dim(options))
    rows = task_rows(taskset, options.max_negatives)
    total_rows = int(rows.sum())
    if dim == 0:
        return [Need("the row table and its base outputs", "affinity.max_negatives",
                     total_rows * 16),
                Need("each estimate worker (θ0 and a copy of the task set's features)",
                     "ray.num_workers", 2 * taskset.features.nbytes + 16 * num_parameters)]
    needs = [Need("the gradient table and its shards", "affinity.projection_dim",
                  2 * total_rows * dim * 4)]
    chunk = min(ray.chunk_rows, total_rows)
    worker = chunk * dim * 4 + taskset.features.nbytes
    field = "affinity.projection_dim"
    if options.projection == "dense":
        worker += num_parameters * dim * 4 + chunk * num_parameters * 4
        if chunk * num_parameters > num_parameters * dim:
            field = "ray.chunk_rows"
    elif options.projection == "kronecker+dense":
        worker += options.intermediate_dim * dim * 4 + chunk * options.intermediate_dim * 4
    needs.append(Need("each gradient worker", field, worker))
    tasks_per_batch = min(taskset.num_tasks, ray.subsets_per_batch * options.subset_size)
    largest = np.sort(rows.sum(1))[::-1][:tasks_per_batch].sum()
    itemsize = 8 if options.surrogate_dtype == "float64" else 4
    surrogate = int(largest) * dim * itemsize
    if options.subset_size * rows[:, 0].mean() >= PRECONDITION_ROWS * dim ** 2:
        surrogate += taskset.num_tasks * dim * dim * 4
    needs.append(Need("each surrogate worker", "affinity.projection_dim", surrogate))
    return needs


def _free_disk(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would hold it)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_needs(needs: list[Need], run_path: Path, worker_memory_gib: float | None,
                num_workers: int) -> None:
    """Raise ConfigError, naming the field behind the estimate, when the gradient table does
    not fit the free disk of the run directory or a worker's estimate exceeds its memory:
    ``ray.worker_memory_gib`` when set, else this machine's available memory shared by
    ``num_workers`` workers."""
    available = psutil.virtual_memory().available
    per_worker = (worker_memory_gib * GIB if worker_memory_gib is not None
                  else available / num_workers)
    budget = ("ray.worker_memory_gib" if worker_memory_gib is not None
              else f"this machine's {available / GIB:.1f} GiB available over {num_workers} "
                   "workers")
    table, *workers = needs
    free = _free_disk(run_path)
    if table.bytes > free:
        raise ConfigError(f"{table.field}: {table.what} need about {table.bytes / GIB:.1f} GiB "
                          f"of disk, more than the {free / GIB:.1f} GiB free at {run_path}")
    for need in workers:
        if need.bytes > per_worker:
            raise ConfigError(f"{need.field}: {need.what} needs about {need.bytes / GIB:.1f} "
                              f"GiB, more than the {per_worker / GIB:.1f} GiB it has "
                              f"({budget}); lower {need.field}"
                              + (" or ray.num_workers" if need.field != "ray.num_workers"
                                 else "") + ", or set ray.worker_memory_gib")
