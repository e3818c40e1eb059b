"""True affinity: really train on the tasks of a subset and record each task's validation
loss f(S, i) — the quantity Grad-TAG's surrogate f̂(S, i) estimates.

Two protocols (``true_affinity.protocol``): ``fine_tune`` copies the all-task model θ0 and
fine-tunes it on S (what the surrogate linearises); ``from_scratch`` trains a fresh model on S
exactly as a group model is trained (what grouping needs: the loss a task would have in a
group model of S)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from grouping.config import RunConfig, TrainConfig, TruthTarget
from grouping.families import family_of
from grouping.models import Spec, restore
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet


def fine_tune_subset(base: nn.Module, spec: Spec, taskset: AnyTaskSet, subset: np.ndarray,
                     config: TrainConfig, epochs: int | None, seed: int,
                     device: torch.device, target: TruthTarget = "loss",
                     keep_best: bool = False) -> dict:
    """f(S, i) for each task of the subset after the family's fine-tuning of θ0 on S
    (:meth:`grouping.families.TaskFamily.fine_tune`, ``keep_best`` as there), the ``target``
    figure of its validation losses, and the wall time."""
    start = time.perf_counter()
    family = family_of(taskset)
    model = family.fine_tune(base, spec, taskset, subset, config, epochs, seed, device,
                             keep_best)
    losses = family.validation_losses(model, spec, taskset, subset, device, target=target)
    return {"losses": losses, "seconds": time.perf_counter() - start}


def train_subset_from_scratch(taskset: AnyTaskSet, subset: np.ndarray, config: RunConfig,
                              seed: int, device: torch.device,
                              linear: PerTaskLinear | None = None) -> dict:
    """f(S, i) under the ``from_scratch`` protocol: a fresh model trained on the subset's tasks
    as a group model is (the family's ``train_group`` with the first of
    ``group_training.optimizers`` at the first of its learning rates, initialisation seed
    ``seed``, the same linear start), each task's validation figure at its best checkpoint
    (``true_affinity.target``), and the wall time."""
    start = time.perf_counter()
    family = family_of(taskset)
    options = config.group_training
    train = config.train.model_copy(update={"lr": options.first_lr})
    tasks = np.asarray(subset)
    result = family.train_group(taskset, tasks.tolist(), config, train, device,
                                options.optimizers[0], seed=seed, linear=linear)
    model = restore(result["spec"], result["state"]).to(device)
    losses = family.validation_losses(model, result["spec"], taskset, tasks, device,
                                      np.arange(len(tasks)), config.true_affinity.target)
    return {"losses": losses, "seconds": time.perf_counter() - start}


def base_losses(base: nn.Module, spec: Spec, taskset: AnyTaskSet,
                device: torch.device, target: TruthTarget = "loss") -> np.ndarray:
    """Every task's validation figure under θ0 (the no-fine-tuning predictor)."""
    return family_of(taskset).validation_losses(base, spec, taskset,
                                                np.arange(taskset.num_tasks), device,
                                                target=target)


def linearization_error(base: nn.Module, tuned: nn.Module, projection: dict[str, torch.Tensor],
                        inputs: torch.Tensor, tasks: torch.Tensor, f0: np.ndarray,
                        gradients: np.ndarray) -> float:
    """‖f0 + gᵀw − f(θ1)‖ / ‖f(θ1) − f0‖ with w = Pᵀ(θ1 − θ0): how well the first-order
    expansion behind the surrogate (Grad-TAG, eq. 2) predicts a really fine-tuned model's
    logits on the given (example, task) rows."""
    tuned_params = dict(tuned.named_parameters())
    step = sum((tuned_params[name].detach() - param.detach()).flatten().double()
               @ projection[name].double() for name, param in base.named_parameters()
               if param.requires_grad)
    linear = f0 + gradients.astype(np.float64) @ step.numpy()
    tuned.eval()
    with torch.no_grad():
        actual = tuned(inputs).gather(1, tasks[:, None])[:, 0].double().numpy()
    return float(np.linalg.norm(linear - actual) / np.linalg.norm(actual - f0))
