"""True affinity: really train on the tasks of a subset and record each task's validation
loss f(S, i) — the quantity Grad-TAG's surrogate f̂(S, i) estimates.

Two protocols (``true_affinity.protocol``): ``fine_tune`` copies the all-task model θ0 and
fine-tunes it on S (what the surrogate linearises); ``from_scratch`` trains a fresh model on S
exactly as a group model is trained (what grouping needs: the loss a task would have in a
group model of S)."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from grouping import lm_training
from grouping.config import RunConfig, TrainConfig, TruthTarget
from grouping.group_models import train_any_group
from grouping.models import Spec, restore
from grouping.models.lora_lm import LMSpec
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import VAL, AnyTaskSet, InstructionTaskSet, TaskSet
from grouping.training import average_precisions, predict, train_model


def validation_losses(model: nn.Module, taskset: TaskSet, tasks: np.ndarray,
                      device: torch.device, heads: np.ndarray | None = None,
                      target: TruthTarget = "loss") -> np.ndarray:
    """Each task's (label column's) validation figure under ``model``, whose head
    ``heads[k]`` predicts ``tasks[k]`` (default: head = label column): its mean
    cross-entropy (``target: loss``) or 1 − its average precision (``ap``; 1 for a task
    without a validation positive, a constant that ranks no subset)."""
    val = taskset.indices(VAL)
    logits = predict(model, torch.tensor(taskset.features[val], device=device))
    heads = tasks if heads is None else heads
    logits = logits[:, torch.tensor(heads, device=device)].double()
    labels = torch.tensor(taskset.labels[np.ix_(val, tasks)], dtype=torch.float64, device=device)
    if target == "ap":
        return 1.0 - np.nan_to_num(average_precisions(logits, labels).cpu().numpy())
    losses = torch.nn.functional.softplus(logits) - labels * logits
    return losses.mean(0).cpu().numpy()


def fine_tune(base: nn.Module, taskset: TaskSet, subset: np.ndarray, config: TrainConfig,
              epochs: int | None, seed: int, device: torch.device) -> nn.Module:
    """A copy of the all-task model θ0 fine-tuned on ``subset``'s tasks.

    ``epochs`` set: a fixed schedule of that many epochs (the last state is kept); None:
    early stopping on the subset's validation loss as the config says.
    """
    model = copy.deepcopy(base)
    schedule = config if epochs is None else config.model_copy(update={"max_epochs": epochs})
    train_model(model, taskset, np.arange(taskset.num_tasks), schedule, seed, device,
                active_heads=subset, keep_best=epochs is None)
    return model


def fine_tune_adapter(base: nn.Module, spec: LMSpec, taskset: InstructionTaskSet,
                      subset: np.ndarray, config: TrainConfig, epochs: int | None, seed: int,
                      device: torch.device) -> np.ndarray:
    """f(S, i) of a language model: θ0's adapter fine-tuned on the subset's instruction
    tasks (as :func:`fine_tune` schedules it), each task's output-function validation loss."""
    model = copy.deepcopy(base)
    encoded = lm_training.encode_for(model, taskset, spec)
    schedule = config if epochs is None else config.model_copy(update={"max_epochs": epochs})
    lm_training.train_lm(model, taskset, encoded, subset, schedule, seed, device,
                         keep_best=epochs is None)
    return lm_training.validation_losses(model, taskset, encoded, subset, device)


def fine_tune_subset(base: nn.Module, spec: Spec, taskset: AnyTaskSet, subset: np.ndarray,
                     config: TrainConfig, epochs: int | None, seed: int,
                     device: torch.device, target: TruthTarget = "loss") -> dict:
    """f(S, i) for each task of the subset after :func:`fine_tune` (or
    :func:`fine_tune_adapter`; its loss), the ``target`` of :func:`validation_losses`, and
    the wall time."""
    start = time.perf_counter()
    if isinstance(spec, LMSpec):
        losses = fine_tune_adapter(base, spec, taskset, subset, config, epochs, seed, device)
    else:
        model = fine_tune(base, taskset, subset, config, epochs, seed, device)
        losses = validation_losses(model, taskset, subset, device, target=target)
    return {"losses": losses, "seconds": time.perf_counter() - start}


def train_subset_from_scratch(taskset: AnyTaskSet, subset: np.ndarray, config: RunConfig,
                              seed: int, device: torch.device,
                              linear: PerTaskLinear | None = None) -> dict:
    """f(S, i) under the ``from_scratch`` protocol: a fresh model trained on the subset's tasks
    as a group model is (:func:`grouping.group_models.train_any_group` with the first of
    ``group_training.optimizers`` at the first of its learning rates, initialisation seed
    ``seed``, the same linear start), each task's validation figure at its best checkpoint
    (``true_affinity.target``), and the wall time."""
    start = time.perf_counter()
    options = config.group_training
    train = config.train.model_copy(update={"lr": options.first_lr})
    tasks = np.asarray(subset)
    result = train_any_group(taskset, tasks.tolist(), config, train, device,
                             options.optimizers[0], seed=seed, linear=linear)
    model = restore(result["spec"], result["state"]).to(device)
    losses = model_validation_losses(model, result["spec"], taskset, tasks, device,
                                     np.arange(len(tasks)), config.true_affinity.target)
    return {"losses": losses, "seconds": time.perf_counter() - start}


def model_validation_losses(model: nn.Module, spec: Spec, taskset: AnyTaskSet,
                            tasks: np.ndarray, device: torch.device,
                            heads: np.ndarray | None = None,
                            target: TruthTarget = "loss") -> np.ndarray:
    """Each task's validation figure under ``model``: the output function's loss for a
    language model, :func:`validation_losses` with ``target`` otherwise (head ``heads[k]``
    for ``tasks[k]``; default head = label column)."""
    if isinstance(spec, LMSpec):
        encoded = lm_training.encode_for(model, taskset, spec)
        return lm_training.validation_losses(model, taskset, encoded, tasks, device)
    return validation_losses(model, taskset, tasks, device, heads, target)


def base_losses(base: nn.Module, spec: Spec, taskset: AnyTaskSet,
                device: torch.device, target: TruthTarget = "loss") -> np.ndarray:
    """Every task's validation figure under θ0 (the no-fine-tuning predictor)."""
    return model_validation_losses(base, spec, taskset, np.arange(taskset.num_tasks), device,
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
