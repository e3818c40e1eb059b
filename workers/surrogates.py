"""Surrogate fits fanned out over Ray in fixed batches of subsets (results do not depend on
the number of workers: each batch is the same batch on any worker)."""

from __future__ import annotations

import numpy as np
import ray
import torch

from grouping.affinity.rows import GatheredRows, MappedRows, RowTable
from grouping.affinity.surrogate import preconditioned, subset_losses, task_curvatures
from grouping.artifacts import ShardStore
from grouping.config import AffinityConfig, RayConfig
from workers.progress import run_windowed
from workers.runtime import share_device, single_node, usable_workers, worker_threads


def _fit_batch(subsets: np.ndarray, rows: RowTable, f0: np.ndarray, gradients: np.ndarray,
               curvatures: np.ndarray | None, options: AffinityConfig, threads: int,
               device: str) -> np.ndarray:
    torch.set_num_threads(threads)
    return subset_losses(subsets, rows, f0, gradients, options.l2, options.newton_iterations,
                         options.tolerance, device, getattr(torch, options.surrogate_dtype),
                         curvatures, precondition=curvatures is not None)


def compute_subset_losses(subsets: np.ndarray, rows: RowTable, f0: np.ndarray,
                          gradients: np.ndarray, options: AffinityConfig,
                          config: RayConfig, shards: ShardStore | None = None) -> np.ndarray:
    """f̂(S, i) for every subset: [m, s]. Workers read only the gradient rows of their
    subsets' tasks. Where the fits are preconditioned, every task's curvature term is formed
    once here and shared through the object store. With ``shards``, each finished batch is
    saved at once and batches saved by an interrupted attempt are read back, not fitted
    again. Whether to precondition is decided here, once for all subsets, so that every
    batch fits the same way."""
    remote = ray.remote(_fit_batch).options(
        num_cpus=config.num_cpus_per_worker, num_gpus=config.num_gpus_per_surrogate,
        max_retries=config.max_retries)
    device = share_device(config.num_gpus_per_surrogate)
    shared_rows, shared_f0 = ray.put(rows), ray.put(np.asarray(f0))
    mapped = (MappedRows(str(gradients.filename))
              if isinstance(gradients, np.memmap) and single_node() else None)
    threads = worker_threads(config.num_cpus_per_worker)
    batches = [subsets[start:start + config.subsets_per_batch]
               for start in range(0, len(subsets), config.subsets_per_batch)]
    finished, on_result = {}, None
    if shards is not None:
        saved = {number: shards.load(number) for number in range(len(batches))}
        finished = {number: arrays["losses"] for number, arrays in saved.items() if arrays}

        def on_result(number: int, losses: np.ndarray) -> None:
            shards.save(number, losses=losses)

    curvatures = ray.put(task_curvatures(rows, f0, gradients)
                         if len(finished) < len(batches)
                         and preconditioned(subsets, rows, gradients.shape[1]) else None)

    def submit(batch: np.ndarray) -> ray.ObjectRef:
        """One batch of subsets. On one machine the workers map the gradient file and read
        their subsets' rows; across machines each batch ships only its tasks' rows (read
        from the memory map as the batch is submitted, a window of batches at a time)."""
        features = mapped or GatheredRows.of_tasks(rows, batch, gradients)
        return remote.remote(batch, shared_rows, shared_f0, features, curvatures, options,
                             threads, device)

    results = run_windowed(submit,
                           batches, usable_workers(config), "surrogate fits", finished,
                           on_result)
    return np.concatenate(results)
