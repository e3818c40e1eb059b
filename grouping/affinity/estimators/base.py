"""The estimator interface: f̂(S, i) for every sampled subset S and task i ∈ S from the
gradient-feature table of the base model θ0.

An estimator is built from the ``affinity`` section of the config. The Ray layer
(:mod:`workers.estimates`) calls :meth:`Estimator.prepare` once for all subsets, shares what
it returns, and calls :meth:`Estimator.estimate` on batches of subsets fixed by the config,
so that the result does not depend on the number of workers. Lower f̂ means that S helps
task i more; what grouping reads is the ranking of a task's subsets
(:mod:`grouping.affinity.aggregate` z-normalises each task's values), so an estimator may
return a score on any scale (``predicts_losses = False``) instead of predicted validation
losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from grouping.affinity.rows import RowTable
from grouping.config import AffinityConfig, RunConfig, TrainConfig, TruthTarget
from grouping.families import TaskFamily
from grouping.models import Spec
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import TRAIN, VAL, AnyTaskSet


@dataclass(frozen=True)
class BaseModel:
    """The base model θ0 and what training it further needs: the task set, the model's spec
    and state, the fine-tuning settings and the run's seed; for estimators that train a
    fresh group model as the comparison does, the run's config and the per-task regressions
    its models start from (None without a linear start)."""

    taskset: AnyTaskSet
    spec: Spec
    state: dict[str, torch.Tensor]
    training: TrainConfig
    seed: int
    run: RunConfig | None = None
    linear: PerTaskLinear | None = None


@dataclass(frozen=True)
class EstimatorInputs:
    """What the gradients stage wrote: the rows (example, task, split, label, weight), the
    base logit f0 [R] of each row and its projected output gradient [R, d] (an array, a
    memory map, or only the rows a worker reads); and the base model, for estimators that
    train it (``Estimator.needs_base_model``)."""

    rows: RowTable
    f0: np.ndarray
    gradients: Any
    base: BaseModel | None = None

    @property
    def dim(self) -> int:
        return int(self.gradients.shape[1])


class Estimator(ABC):
    """One way of estimating f̂(S, i); a subclass per method, registered by ``name``."""

    name: ClassVar[str]
    """The value of ``affinity.estimator`` that picks this estimator."""

    cost: ClassVar[str]
    """The declared cost, in terms of R rows, d gradient dimensions, T tasks, m subsets of
    size s."""

    predicts_losses: ClassVar[bool] = True
    """Whether f̂ is a predicted validation loss (False: a score whose ranking within a task
    is what it says)."""

    binary_labels_only: ClassVar[bool] = False
    """Whether the estimator needs binary labels (so is refused for instruction task sets)."""

    reads_gradient_rows: ClassVar[bool] = True
    """Whether :meth:`estimate` reads the table's gradient rows (False: only what
    :meth:`prepare` returned, so the rows need not be shipped to workers)."""

    uses_gradient_features: ClassVar[bool] = True
    """Whether the estimate depends on the gradient features at all (False: the gradients
    stage is not part of its cost; it reads the row table or the base model only)."""

    needs_base_model: ClassVar[bool] = False
    """Whether the estimator trains the base model (``EstimatorInputs.base``)."""

    independent_subsets: ClassVar[bool] = True
    """Whether a subset's f̂ is the same whatever other subsets share its batch (False: a
    batched fit, whose figures are fixed only for fixed batches of ``ray.subsets_per_batch``;
    see :func:`workers.estimates.estimate_batch_size`)."""

    @classmethod
    def independent_of_batch(cls, options: AffinityConfig) -> bool:
        """Whether a subset's f̂ under ``options`` is the same whatever other subsets share
        its batch (``independent_subsets`` unless a subclass's options change it); False
        makes the estimate stage cut exactly ``ray.subsets_per_batch`` subsets a batch."""
        return cls.independent_subsets

    batch_multiple: ClassVar[int] = 1
    """How many subsets the estimator computes together (its batches are rounded up to a
    multiple of it: the lookahead's side-by-side copies fill stacks of this size)."""

    def __init__(self, options: AffinityConfig) -> None:
        self.options = options

    @classmethod
    def predicted_figure(cls, options: AffinityConfig) -> TruthTarget | None:
        """What f̂ predicts of a task on the validation rows under ``options``: ``loss`` (a
        predicted validation loss), ``ap`` (1 − average precision), or None (a score). The
        error report compares f̂ with f on their own scale only where this is the figure the
        truth records."""
        return "loss" if cls.predicts_losses else None

    @classmethod
    def applies_to(cls, family: TaskFamily) -> bool:
        """Whether the estimator can run on a task set of ``family`` (binary labels where it
        needs them)."""
        return not cls.binary_labels_only or family.binary_labels

    def prepare(self, subsets: np.ndarray, table: EstimatorInputs) -> Any:
        """Whatever every batch shares, computed once for all ``subsets`` [m, s] (None by
        default)."""
        return None

    @abstractmethod
    def estimate(self, subsets: np.ndarray, table: EstimatorInputs, prepared: Any,
                 device: torch.device | str = "cpu") -> np.ndarray:
        """f̂ [b, s] of a batch of subsets [b, s] (column j is task subsets[:, j])."""


SEED_OFFSET = 3
"""Added to the run's seed for the models a training estimator trains: the truth trains with
seed and seed + 1, so an estimate never shares its batch order or initialisation."""


class TrainingEstimator(Estimator):
    """An estimator that trains real models on each subset (from θ0 or from scratch) instead
    of reading the gradient features: it needs the base model and reads no gradient row; its
    models draw their seeds from the run's seed + :data:`SEED_OFFSET`."""

    reads_gradient_rows = False
    uses_gradient_features = False
    needs_base_model = True

    @classmethod
    def predicted_figure(cls, options: AffinityConfig) -> TruthTarget | None:
        """The ``target`` of the estimator's own section of ``affinity`` (named as it is):
        each task's validation loss, or 1 − its average precision."""
        return getattr(options, cls.name).target


def fine_tuning_schedule(fine_tuning: TrainConfig, lr: float | None, batch_size: int | None,
                         patience: int | None = None) -> TrainConfig:
    """``fine_tuning``'s settings with an estimator's own learning rate, batch size and
    patience where it sets them (None keeps ``fine_tuning``'s)."""
    return fine_tuning.model_copy(update={
        "lr": lr or fine_tuning.lr,
        "batch_size": batch_size or fine_tuning.batch_size,
        "patience": patience or fine_tuning.patience})


def task_loss_gradients(table: EstimatorInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task, the weighted mean loss gradient of its training rows and of its validation
    rows in the projected space, [T, d] each, and its base validation loss [T].

    The cross-entropy ℓ(f, y) of a row has ∂ℓ/∂f = σ(f0) − y at θ0, so its projected loss
    gradient is (σ(f0) − y) g; the rows' weights undo negative subsampling."""
    rows = table.rows
    probability = 1 / (1 + np.exp(-table.f0.astype(np.float64)))
    num_tasks = len(rows.offsets)
    means = np.zeros((2, num_tasks, table.dim))
    for task in range(num_tasks):
        for split in (TRAIN, VAL):
            span = slice(rows.offsets[task, split], rows.offsets[task, split + 1])
            weight = rows.weight[span].astype(np.float64)
            if weight.sum() == 0:
                continue
            residual = weight * (probability[span] - rows.label[span])
            features = torch.from_numpy(np.asarray(table.gradients[span], np.float64))
            means[split, task] = (torch.from_numpy(residual) @ features).numpy() / weight.sum()
    return means[TRAIN], means[VAL], base_validation_losses(rows, table.f0)


def base_validation_losses(rows: RowTable, f0: np.ndarray) -> np.ndarray:
    """Each task's weighted mean validation cross-entropy at θ0 over the table's rows [T]
    (0 for a task without weighted validation rows)."""
    losses = np.zeros(len(rows.offsets))
    for task in range(len(rows.offsets)):
        span = slice(rows.offsets[task, VAL], rows.offsets[task, VAL + 1])
        weight = rows.weight[span].astype(np.float64)
        if weight.sum() > 0:
            logit = np.asarray(f0[span], np.float64)
            loss = np.logaddexp(0.0, logit) - rows.label[span] * logit
            losses[task] = np.average(loss, weights=weight)
    return losses
