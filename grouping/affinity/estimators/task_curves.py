"""Task curves: each task's own fine-tuning curve, read at the epoch where S's early stopping
would stop.

The from-scratch truth and the lookahead with ``keep_best`` record task i's figure at the
checkpoint S's model keeps, the best epoch of S's mean validation criterion
(``train.early_stopping``), so part of f(S, i) is *when* S's model stops. This estimator
keeps that part and drops the rest: θ0 is fine-tuned on every task alone, once
(:func:`grouping.stacked_fine_tuning.fine_tuning_curves`, ``task_curves.epochs`` epochs,
each task's validation curve c_j(e) recorded at epochs e = 0..E), and for a subset S

    e*(S) = the epoch early stopping keeps on C_S(e) = mean_{j∈S} c_j(e)
            (1 − the mean AP of S's tasks with a validation positive, or their mean
            positive-weighted loss; strict improvement, ``task_curves.patience``),
    f̂(S, i) = figure_i(e*(S)).

With the trunk frozen (as only a test does) this is the lookahead with ``keep_best`` up to
Adam's ε, without weight decay (each copy's heads and skip rows then train independently,
and Adam is blind to the 1/|S| scale of a head's gradient); with the trunk trained, what
S's tasks do to one another's shared features is what it leaves out. Its cost is T
fine-tunings instead of m (the lookahead of TAG, Fifty et al., NeurIPS 2021, Eq. 2-3, taken
per task and combined by the checkpoint rule).
"""

from __future__ import annotations

import numpy as np
import torch

from grouping.affinity.estimators.base import (
    SEED_OFFSET,
    BaseModel,
    EstimatorInputs,
    TrainingEstimator,
    fine_tuning_schedule,
)
from grouping.config import TrainConfig, TruthTarget
from grouping.models import restore
from grouping.stacked_fine_tuning import FineTuningCurves, fine_tuning_curves


def kept_epochs(criterion: np.ndarray, patience: int) -> np.ndarray:
    """[b] the epoch early stopping keeps for criteria [b, E + 1] (lower is better): the
    strict best among epochs 0..E, where ``patience`` epochs in a row without improving on
    the best end the search (:func:`grouping.training.run_epochs`'s rule)."""
    best = criterion[:, 0].copy()
    kept = np.zeros(len(criterion), dtype=np.int64)
    since_best = np.zeros(len(criterion), dtype=np.int64)
    stopped = np.zeros(len(criterion), dtype=bool)
    for epoch in range(1, criterion.shape[1]):
        improved = (criterion[:, epoch] < best) & ~stopped
        kept[improved] = epoch
        best = np.where(improved, criterion[:, epoch], best)
        since_best = np.where(improved, 0, since_best + 1)
        stopped |= since_best >= patience
    return kept


def subset_criteria(curves: FineTuningCurves, members: np.ndarray,
                    reads_ap: bool) -> np.ndarray:
    """C_S(e) [b, E + 1] of subsets given as rows of ``curves`` ([b, s] ``members``): 1 −
    the mean AP of S's tasks with a validation positive when ``reads_ap`` and one has, else
    the mean of their positive-weighted losses (as a copy's ``val_ap``/``val_loss``
    criterion)."""
    losses = curves.weighted_loss[members].mean(axis=1)
    if not reads_ap:
        return losses
    precision = curves.precision[members]
    present = np.isfinite(precision)
    counts = present.sum(axis=1)
    mean_ap = np.where(present, precision, 0.0).sum(axis=1) / np.maximum(counts, 1)
    return np.where(counts > 0, 1.0 - mean_ap, losses)


def base_curves(base: BaseModel, subsets: np.ndarray, training: TrainConfig, epochs: int,
                target: TruthTarget) -> FineTuningCurves:
    """The fine-tuning curve of every task ``subsets`` hold: θ0 fine-tuned on each alone under
    ``training`` for ``epochs`` epochs, on the CPU, seeded from the run's seed +
    :data:`SEED_OFFSET`."""
    return fine_tuning_curves(restore(base.spec, base.state), base.spec, base.taskset,
                              np.unique(subsets), training, epochs, base.seed + SEED_OFFSET,
                              torch.device("cpu"), target)


def curve_stops(curves: FineTuningCurves, subsets: np.ndarray, early_stopping: str,
                patience: int) -> tuple[np.ndarray, np.ndarray]:
    """(each subset's tasks as rows of ``curves`` [b, s], e*(S) [b]: the epoch early stopping
    by ``early_stopping`` keeps on the mean of S's curves)."""
    members = np.minimum(np.searchsorted(curves.tasks, subsets), len(curves.tasks) - 1)
    if not np.array_equal(curves.tasks[members], subsets):
        raise ValueError("a subset holds a task whose curve was not prepared")
    criterion = subset_criteria(curves, members, early_stopping == "val_ap")
    return members, kept_epochs(criterion, patience)


class TaskCurvesEstimator(TrainingEstimator):
    """Task i's own fine-tuning curve at the epoch S's early stopping keeps when it reads S's
    tasks' curves (``task_curves``)."""

    name = "task_curves"
    binary_labels_only = True
    cost = ("task_curves.epochs epochs of fine-tuning per task, once for all subsets (T "
            "fine-tunings where the lookahead runs m), plus one validation pass per epoch")

    def schedule(self, fine_tuning: TrainConfig) -> TrainConfig:
        """``fine_tuning``'s settings with the learning rate and batch size of
        ``task_curves`` where it sets them."""
        options = self.options.task_curves
        return fine_tuning_schedule(fine_tuning, options.lr, options.batch_size)

    def prepare(self, subsets: np.ndarray, inputs: EstimatorInputs) -> FineTuningCurves:
        """The fine-tuning curve of every task the subsets hold (:func:`base_curves`)."""
        if inputs.base is None:
            raise ValueError(f"the {self.name} estimator needs the base model")
        options = self.options.task_curves
        return base_curves(inputs.base, subsets, self.schedule(inputs.base.training),
                           options.epochs, options.target)

    def estimate(self, subsets: np.ndarray, inputs: EstimatorInputs,
                 prepared: FineTuningCurves,
                 device: torch.device | str = "cpu") -> np.ndarray:
        options = self.options.task_curves
        members, kept = curve_stops(prepared, subsets, inputs.base.training.early_stopping,
                                    options.patience or options.epochs)
        return prepared.figure[members, kept[:, None]]
