"""True affinity: really fine-tune θ0 on the tasks of a subset and record each task's
validation loss f(S, i) — the quantity Grad-TAG's surrogate f̂(S, i) estimates."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from grouping.config import TrainConfig
from grouping.tasksets import VAL, TaskSet
from grouping.training import predict, train_model


def validation_losses(model: nn.Module, taskset: TaskSet, tasks: np.ndarray,
                      device: torch.device) -> np.ndarray:
    """Mean validation cross-entropy of each task (head = label column) under ``model``."""
    val = taskset.indices(VAL)
    logits = predict(model, torch.tensor(taskset.features[val], device=device))
    logits = logits[:, torch.as_tensor(tasks, device=device)].double()
    labels = torch.tensor(taskset.labels[np.ix_(val, tasks)], dtype=torch.float64, device=device)
    losses = torch.nn.functional.softplus(logits) - labels * logits
    return losses.mean(0).cpu().numpy()


def fine_tune_subset(base: nn.Module, taskset: TaskSet, subset: np.ndarray,
                     config: TrainConfig, epochs: int | None, seed: int,
                     device: torch.device) -> dict:
    """Fine-tune a copy of the all-task model θ0 on ``subset``'s tasks.

    ``epochs`` set: a fixed schedule of that many epochs (the last state is kept); None:
    early stopping on the subset's validation loss as the config says. Returns f(S, i) for
    each task of the subset, in subset order, and the wall time.
    """
    start = time.perf_counter()
    model = copy.deepcopy(base)
    schedule = config if epochs is None else config.model_copy(update={"max_epochs": epochs})
    train_model(model, taskset, np.arange(taskset.num_tasks), schedule, seed, device,
                active_heads=subset, keep_best=epochs is None)
    return {"losses": validation_losses(model, taskset, subset, device),
            "seconds": time.perf_counter() - start}

