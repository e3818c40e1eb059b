"""Binary-label task sets (graph communities, multi-label tables, custom builders): a
SIGN-MLP with one logit head per task, its output f_i(x) the head's logit (Grad-TAG, Sec.
3.1), trained on each task's cross-entropy."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from grouping.affinity.gradients import output_gradients
from grouping.affinity.hook_gradients import head_logits
from grouping.affinity.rows import RowTable, label_rows
from grouping.config import RunConfig, TrainConfig, TruthTarget
from grouping.evaluation.metrics import task_metrics
from grouping.families.base import OutputRows, TaskFamily
from grouping.models import ModelSpec, build_model
from grouping.models.per_task_linear import PerTaskLinear
from grouping.models.sign_mlp import HEAD_PARAMETERS, select_heads, write_heads
from grouping.stacked_fine_tuning import fine_tuned_figures as stacked_figures
from grouping.stacked_fine_tuning import validation_head_figures
from grouping.tasksets import VAL, TaskSet
from grouping.training import predict, train_model


class HeadOutputs(OutputRows):
    """f(x, i): head i's logit on the features of example x."""

    output = staticmethod(head_logits)

    def __init__(self, taskset: TaskSet, device: torch.device) -> None:
        self.device = device
        self.features = torch.tensor(taskset.features, device=device)

    def batch(self, examples: np.ndarray, tasks: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (self.features[torch.tensor(examples, device=self.device)],
                torch.tensor(tasks, device=self.device))

    def vmap_gradients(self, model: nn.Module, projection: dict[str, torch.Tensor],
                       batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        per_head = [name for name, _ in model.named_parameters()
                    if name.startswith(HEAD_PARAMETERS)]
        return output_gradients(model, projection, *batch, per_head=per_head)


class BinaryLabelFamily(TaskFamily):
    name = "binary_labels"
    binary_labels = True
    supports_dmtg = True
    tracks_dominance = True
    checks_linearization = True
    metric_names = ("test_f1", "test_ap")

    def rows(self, taskset: TaskSet, max_negatives: int | None, seed: int) -> RowTable:
        return label_rows(taskset, max_negatives, seed)

    def scorable_tasks(self, taskset: TaskSet) -> np.ndarray:
        """Tasks with a positive validation example."""
        return taskset.labels[taskset.indices(VAL)].sum(0) > 0

    def train_group(self, taskset: TaskSet, tasks: list[int], config: RunConfig,
                    train_config: TrainConfig, device: torch.device, optimizer: str = "adam",
                    track_dominance: bool = False, seed: int | None = None,
                    linear: PerTaskLinear | None = None) -> dict:
        """A fresh SIGN-MLP on ``tasks`` (one head each) trained with ``optimizer``; its
        per-task test metrics, spec, best state, best epoch, wall time and, when tracked, the
        task-dominance fraction of each shared layer.

        Group models start from scratch, not from the all-task base model: starting from θ0
        would carry all-task sharing into every group and blur the comparison with the
        all-in-one model, which is trained with the same loop, budget and early stopping.
        With ``model.linear_start``, ``linear`` (the regressions of every task of the task
        set) is where the skip and head biases start; it is then required (ValueError).
        """
        seed = config.seed if seed is None else seed
        start = time.perf_counter()
        columns = np.asarray(tasks)
        model_config = config.model
        spec = ModelSpec.from_config(model_config, taskset.features.shape[1], len(columns))
        if model_config.linear_start and linear is None:
            raise ValueError("model.skip_init: a linear start needs the per-task regressions")
        start_at = linear.select(columns) if model_config.linear_start else None
        model = build_model(spec, seed, start_at)
        result = train_model(model, taskset, columns, train_config, seed, device,
                             optimizer=optimizer, track_dominance=track_dominance,
                             dominance_decay=config.group_training.dominance_decay)
        logits = predict(model, torch.tensor(taskset.features, device=device)).cpu().numpy()
        return {"tasks": task_metrics(taskset, logits, columns),
                "best_epoch": result.best_epoch, "best_criterion": result.best_criterion,
                "spec": spec, "state": {name: value.cpu() for name, value in result.state.items()},
                "dominance": result.dominance, "seconds": time.perf_counter() - start}

    def fine_tune(self, base: nn.Module, spec: ModelSpec, taskset: TaskSet, subset: np.ndarray,
                  config: TrainConfig, epochs: int | None, seed: int,
                  device: torch.device, keep_best: bool = False) -> nn.Module:
        """A copy of θ0 trained with only ``subset``'s heads in the loss: the subset's heads
        are trained as a model of their own (:func:`select_heads`, so that the other heads
        cost nothing) and written back; every other head keeps θ0's values."""
        schedule = config if epochs is None else config.model_copy(update={"max_epochs": epochs})
        tuned = select_heads(base, spec, subset)
        train_model(tuned, taskset, np.asarray(subset), schedule, seed, device,
                    keep_best=keep_best or epochs is None)
        model = copy.deepcopy(base)
        write_heads(model, subset, tuned)
        return model

    def fine_tuned_figures(self, base: nn.Module, spec: ModelSpec, taskset: TaskSet,
                           subsets: np.ndarray, config: TrainConfig, epochs: int, seed: int,
                           device: torch.device, keep_best: bool = False,
                           target: TruthTarget = "loss",
                           budgets: np.ndarray | None = None) -> np.ndarray:
        """The subsets' copies of θ0 trained side by side
        (:func:`grouping.stacked_fine_tuning.fine_tuned_figures`: the same figures as
        one subset at a time, up to float rounding); a model with dropout one at a time."""
        if spec.dropout > 0:
            return super().fine_tuned_figures(base, spec, taskset, subsets, config, epochs,
                                              seed, device, keep_best, target, budgets)
        return stacked_figures(base, spec, taskset, subsets, config, epochs, seed, device,
                               keep_best, target, budgets=budgets)

    def validation_losses(self, model: nn.Module, spec: ModelSpec, taskset: TaskSet,
                          tasks: np.ndarray, device: torch.device,
                          heads: np.ndarray | None = None,
                          target: TruthTarget = "loss") -> np.ndarray:
        """Mean validation cross-entropy (``target: loss``) or 1 − average precision
        (``ap``; 1 for a task without a validation positive, a constant that ranks no
        subset) of each task (label column) of ``tasks``."""
        return validation_head_figures(model, spec, taskset, tasks, device, heads, target)

    def output_rows(self, model: nn.Module, spec: ModelSpec, taskset: TaskSet,
                    device: torch.device) -> HeadOutputs:
        return HeadOutputs(taskset, device)
