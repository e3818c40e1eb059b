"""The estimator of f̂(S, i) fanned out over Ray in batches of subsets fixed by the config
(results do not depend on the number of workers: each batch is the same batch on any
worker)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import ray
import torch

from grouping.affinity.estimators import (
    ESTIMATORS,
    BaseModel,
    Estimator,
    EstimatorInputs,
    make_estimator,
)
from grouping.affinity.rows import GatheredRows, MappedRows, RowTable
from grouping.artifacts import ShardStore
from grouping.config import AffinityConfig, RayConfig
from workers.progress import run_windowed
from workers.runtime import share_device, single_node, usable_workers, worker_threads

BATCHES_PER_WORKER = 4
"""How many batches each declared worker gets at least, for estimators whose subsets are
independent of their batch-mates (so that subsets of unequal cost even out)."""


def estimate_batch_size(options: AffinityConfig, num_subsets: int, config: RayConfig) -> int:
    """Subsets per batch of ``options``' estimator over ``num_subsets`` subsets:
    ``ray.subsets_per_batch`` where a subset's f̂ depends on its batch-mates
    (``Estimator.independent_of_batch`` false: a batched fit, the lookahead's curve rules),
    else at most that, and small enough that each of ``ray.num_workers`` workers gets
    :data:`BATCHES_PER_WORKER` batches — 50 subsets in one batch of 64 would keep one worker
    busy while the others idle; rounded up to a multiple of the estimator's
    ``batch_multiple`` (a batch of 7 would fill a stack of 16 with copies of its last
    subset, costing what 16 do). Fixed by the config and the number of subsets, never by the
    cluster, so that interrupted runs find their saved batches again."""
    if not ESTIMATORS[options.estimator].independent_of_batch(options):
        return config.subsets_per_batch
    spread = math.ceil(num_subsets / (BATCHES_PER_WORKER * config.num_workers))
    multiple = ESTIMATORS[options.estimator].batch_multiple
    return max(1, min(config.subsets_per_batch, math.ceil(spread / multiple) * multiple))


def _estimate_batch(estimator: Estimator, subsets: np.ndarray, rows: RowTable, f0: np.ndarray,
                    gradients: Any, base: BaseModel | None, prepared: Any, threads: int,
                    device: str) -> np.ndarray:
    torch.set_num_threads(threads)
    return estimator.estimate(subsets, EstimatorInputs(rows, f0, gradients, base), prepared,
                              device)


def compute_subset_losses(subsets: np.ndarray, rows: RowTable, f0: np.ndarray,
                          gradients: np.ndarray, options: AffinityConfig,
                          config: RayConfig, shards: ShardStore | None = None,
                          base: BaseModel | None = None) -> np.ndarray:
    """f̂(S, i) of ``affinity.estimator`` for every subset: [m, s]; ``base`` is needed by
    estimators that train the base model (``Estimator.needs_base_model``).

    What the estimator prepares for all subsets (the surrogate's curvature terms, the
    first-order alignments, …) is computed once here, when a batch remains to be estimated,
    and shared through the object store. Workers read only the gradient rows of their
    subsets' tasks, and none when the estimator reads only what it prepared. With
    ``shards`` (named by :func:`estimate_batch_size`), each finished batch is saved at once
    and batches saved by an interrupted attempt are read back, not estimated again."""
    estimator = make_estimator(options)
    if estimator.needs_base_model and base is None:
        raise ValueError(f"the {estimator.name} estimator needs the base model")
    remote = ray.remote(_estimate_batch).options(
        num_cpus=config.num_cpus_per_worker, num_gpus=config.num_gpus_per_surrogate,
        max_retries=config.max_retries)
    device = share_device(config.num_gpus_per_surrogate)
    shared_rows, shared_f0 = ray.put(rows), ray.put(np.asarray(f0))
    mapped = (MappedRows(str(gradients.filename))
              if isinstance(gradients, np.memmap) and single_node() else None)
    threads = worker_threads(config.num_cpus_per_worker)
    size = estimate_batch_size(options, len(subsets), config)
    batches = [subsets[start:start + size] for start in range(0, len(subsets), size)]
    finished, on_result = {}, None
    if shards is not None:
        saved = {number: shards.load(number) for number in range(len(batches))}
        finished = {number: arrays["losses"] for number, arrays in saved.items() if arrays}

        def on_result(number: int, losses: np.ndarray) -> None:
            shards.save(number, losses=losses)

    inputs = EstimatorInputs(rows, f0, gradients, base)
    prepared = ray.put(estimator.prepare(subsets, inputs) if len(finished) < len(batches)
                       else None)
    shared_base = ray.put(base if estimator.needs_base_model else None)

    def submit(batch: np.ndarray) -> ray.ObjectRef:
        """One batch of subsets. On one machine the workers map the gradient file and read
        their subsets' rows; across machines each batch ships only its tasks' rows (read
        from the memory map as the batch is submitted, a window of batches at a time)."""
        if not estimator.reads_gradient_rows:
            features = None
        else:
            features = mapped or GatheredRows.of_tasks(rows, batch, gradients)
        return remote.remote(estimator, batch, shared_rows, shared_f0, features, shared_base,
                             prepared, threads, device)

    results = run_windowed(submit, batches, usable_workers(config), "subset estimates", finished,
                           on_result)
    return np.concatenate(results)
