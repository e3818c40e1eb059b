"""Gradient features fanned out over Ray actors, each holding the base model once.

Rows are cut into fixed chunks of ``ray.chunk_rows`` whatever the number of workers, and every
actor runs with the same number of torch threads, so results are bit-identical for 1 or N
workers.
"""

from __future__ import annotations

import numpy as np
import ray
import torch
from ray.util import ActorPool
from tqdm import tqdm

from grouping.affinity.computers import GradientComputer, feature_dim
from grouping.artifacts import ShardStore
from grouping.config import AffinityConfig, RayConfig
from grouping.models import Spec
from grouping.tasksets import AnyTaskSet
from workers.console import bar_stream
from workers.runtime import share_device, usable_workers, worker_threads


class GradientWorker:
    """Holds a gradient computer (the base model, loaded once per actor, its inputs and the
    projection); computes chunks of rows.

    The shared inputs (model spec and state, task set) come with every call as object
    references inside a list, and the computer is built from them on the first call: the
    constructor takes no object-store arguments, so a restarted actor needs nothing that could
    have gone out of scope, and it rebuilds the computer on its first call.
    """

    def __init__(self, options: AffinityConfig, dim: int, seed: int, threads: int,
                 device: str) -> None:
        torch.set_num_threads(threads)
        self.options, self.dim, self.seed, self.device = options, dim, seed, device
        self.computer: GradientComputer | None = None

    def compute(self, shared: list[ray.ObjectRef], examples: np.ndarray,
                tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.computer is None:
            spec, state, taskset = ray.get(shared)
            self.computer = GradientComputer(spec, state, taskset, self.dim,
                                             self.seed, self.options.projection,
                                             self.options.intermediate_dim, self.device)
        return self.computer(examples, tasks)


def compute_gradient_features(spec: Spec, state: dict, taskset: AnyTaskSet,
                              examples: np.ndarray, tasks: np.ndarray, options: AffinityConfig,
                              seed: int, config: RayConfig, projected: np.ndarray,
                              shards: ShardStore | None = None, dim: int | None = None
                              ) -> np.ndarray:
    """Base logits [R] of rows (examples[r], tasks[r]); their projected gradients go into
    ``projected`` [R, d] (a memory map, so the driver never holds every row), with the
    projection ``options`` name at ``dim`` (default ``options.projection_dim``; d:
    :func:`feature_dim`; 0: base logits only, by a forward pass).

    With ``shards``, each finished chunk is saved at once and chunks saved by an interrupted
    attempt are read back instead of being computed again. Workers with a share of a GPU
    (``ray.num_gpus_per_worker``) compute on it.
    """
    dim = options.projection_dim if dim is None else dim
    f0 = np.empty(len(examples), np.float32)
    if projected.shape != (len(examples), feature_dim(options.projection, dim)):
        raise ValueError(f"projected has shape {projected.shape} for {len(examples)} rows")
    bounds = list(range(0, len(examples), config.chunk_rows))
    todo = []
    for start in bounds:
        saved = shards.load(start) if shards is not None else None
        if saved is None:
            todo.append(start)
        else:
            f0[start:start + len(saved["f0"])] = saved["f0"]
            projected[start:start + len(saved["f0"])] = saved["gradients"]
    actor_class = ray.remote(GradientWorker).options(
        num_cpus=config.num_cpus_per_worker, num_gpus=config.num_gpus_per_worker,
        max_restarts=config.max_retries, max_task_retries=config.max_retries)
    state = {name: tensor.cpu() for name, tensor in state.items()}
    shared = [ray.put(value) for value in (spec, state, taskset)]
    actors = [actor_class.remote(options, dim, seed, worker_threads(config.num_cpus_per_worker),
                                 share_device(config.num_gpus_per_worker))
              for _ in range(min(usable_workers(config), len(todo)))]
    chunks = [(examples[start:start + config.chunk_rows], tasks[start:start + config.chunk_rows])
              for start in todo]
    results = ActorPool(actors).map(
        lambda actor, chunk: actor.compute.remote(shared, *chunk), chunks)
    for start, (chunk_f0, chunk_g) in tqdm(zip(todo, results), total=len(bounds),
                                           initial=len(bounds) - len(todo),
                                           desc="gradient features", unit="chunk",
                                           file=bar_stream()):
        f0[start:start + len(chunk_f0)] = chunk_f0
        projected[start:start + len(chunk_f0)] = chunk_g
        if shards is not None:
            shards.save(start, f0=chunk_f0, gradients=chunk_g)
    for actor in actors:
        ray.kill(actor)
    return f0
