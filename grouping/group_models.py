"""One model per group of tasks: build, train from scratch, evaluate on the test split."""

from __future__ import annotations

import time

import numpy as np
import torch

from grouping.config import ModelConfig, RunConfig, TrainConfig
from grouping.evaluation.metrics import task_metrics
from grouping.lm_training import train_lm_group
from grouping.models import ModelSpec, build_model
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet, InstructionTaskSet, TaskSet
from grouping.training import predict, train_model


def train_group(taskset: TaskSet, tasks: list[int], model_config: ModelConfig,
                train_config: TrainConfig, seed: int, device: torch.device,
                optimizer: str = "adam", track_dominance: bool = False,
                dominance_decay: float = 0.9, linear: PerTaskLinear | None = None) -> dict:
    """Train a fresh SIGN-MLP on ``tasks`` (one head each) with ``optimizer``; return its
    per-task test metrics, its model spec and best state (CPU tensors), best epoch, wall time
    and, when tracked, the task-dominance fraction of each shared layer.

    Group models start from scratch, not from the all-task base model: starting from θ0
    would carry all-task sharing into every group and blur the comparison with the all-in-one
    model, which is trained with the same loop, budget and early stopping. With
    ``model_config.linear_start``, ``linear`` (the regressions of every task of the task set)
    is where the skip and head biases start; it is then required (ValueError without it).
    """
    start = time.perf_counter()
    columns = np.asarray(tasks)
    spec = ModelSpec.from_config(model_config, taskset.features.shape[1], len(columns))
    if model_config.linear_start and linear is None:
        raise ValueError("model.skip_init: a linear start needs the per-task regressions")
    start_at = linear.select(columns) if model_config.linear_start else None
    model = build_model(spec, seed, start_at)
    result = train_model(model, taskset, columns, train_config, seed, device,
                         optimizer=optimizer, track_dominance=track_dominance,
                         dominance_decay=dominance_decay)
    logits = predict(model, torch.tensor(taskset.features, device=device)).cpu().numpy()
    return {"tasks": task_metrics(taskset, logits, columns), "best_epoch": result.best_epoch,
            "best_criterion": result.best_criterion, "spec": spec,
            "state": {name: value.cpu() for name, value in result.state.items()},
            "dominance": result.dominance, "seconds": time.perf_counter() - start}


def train_any_group(taskset: AnyTaskSet, tasks: list[int], config: RunConfig,
                    train_config: TrainConfig, device: torch.device, optimizer: str = "adam",
                    track_dominance: bool = False, seed: int | None = None,
                    linear: PerTaskLinear | None = None) -> dict:
    """:func:`train_group` for graph and table task sets; one fresh LoRA adapter
    (:func:`grouping.lm_training.train_lm_group`) for instruction task sets. ``seed``
    (default ``config.seed``) initialises the model and orders its batches; ``linear``: the
    per-task logistic regressions a binary-label model starts from (``model.skip_init``)."""
    seed = config.seed if seed is None else seed
    if isinstance(taskset, InstructionTaskSet):
        return train_lm_group(taskset, tasks, config.language_model, train_config, seed,
                              device, optimizer)
    return train_group(taskset, tasks, config.model, train_config, seed, device,
                       optimizer, track_dominance, config.group_training.dominance_decay, linear)
