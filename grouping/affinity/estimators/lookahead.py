"""Lookahead: a short real fine-tuning of θ0 on S (the lookahead of TAG, Fifty et al.,
NeurIPS 2021, Eq. 2-3, taken over ``lookahead.epochs`` epochs of the subset's training rows
instead of one step of the shared parameters).

f̂(S, i) is task i's validation loss after θ0 is fine-tuned on S for ``lookahead.epochs``
epochs (a fixed schedule, Adam at ``lookahead.lr``, or the fine-tuning rate, in batches of
``lookahead.batch_size`` rows, or the training batch size), the same loop
as the fine-tune truth over a fraction of its epochs, averaged over ``lookahead.seeds``
batch orders; with ``lookahead.target: ap``, 1 − the task's validation average precision
instead of its loss (the figure an AP truth records). With ``lookahead.keep_best`` the
fine-tuning keeps the checkpoint of its best validation criterion over S's tasks among epochs
0..epochs (``train.early_stopping``, as a group model's early stopping keeps: the from-scratch
truth's checkpoint rule) instead of its last state, and with ``lookahead.patience`` it stops
once that many epochs in a row have not improved on the best, as a group model's early
stopping does (the later epochs could only be kept by improving after them). Each lookahead
draws its batches from seeds of its own (:data:`SEED_OFFSET`), so that it never shares a
batch order with the error report's truth. With ``lookahead.stopping: task_curves`` the
kept epoch is not found by evaluating S's model after every epoch but read off the tasks'
own fine-tuning curves, as :mod:`grouping.affinity.estimators.task_curves` reads it (e*(S)),
and S's copy is fine-tuned for exactly e*(S) epochs with no validation pass (0: θ0's own
figures); with ``curve_screened`` (the default where the lookahead keeps its best checkpoint
and the family trains copies side by side) only the subsets with e*(S) = 0 are read off the
curves (θ0's figures, untrained) and the others are fine-tuned and validated every epoch.
The curves are trained once, under the first of the lookahead's seeds, and screen the
subsets for every seed. The family fine-tunes a batch's subsets as it can
(:meth:`grouping.families.TaskFamily.fine_tuned_figures`: the binary-label family trains
their copies of θ0 side by side, the same figures at a fraction of the wall time).
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
from grouping.affinity.estimators.task_curves import base_curves, curve_stops
from grouping.config import AffinityConfig, TrainConfig
from grouping.families import family_of
from grouping.models import restore
from grouping.stacked_fine_tuning import STACK_SIZE, FineTuningCurves


class LookaheadEstimator(TrainingEstimator):
    """Task i's validation loss after ``lookahead.epochs`` epochs of fine-tuning θ0 on S (the
    default estimator)."""

    name = "lookahead"
    batch_multiple = STACK_SIZE
    cost = ("lookahead.epochs epochs of fine-tuning per subset, plus one validation pass "
            "per epoch; under a curve stopping rule, lookahead.epochs epochs per task once "
            "(its curve) and training only for the subsets the curves do not screen out")

    def schedule(self, fine_tuning: TrainConfig) -> TrainConfig:
        """The fine-tuning settings of a lookahead: ``fine_tuning``'s, with the learning rate,
        batch size and patience of ``lookahead`` where it sets them (patience: none within
        ``lookahead.epochs`` unless it is set)."""
        options = self.options.lookahead
        return fine_tuning_schedule(fine_tuning, options.lr, options.batch_size,
                                    options.patience or options.epochs)

    @classmethod
    def independent_of_batch(cls, options: AffinityConfig) -> bool:
        """False under a curve stopping rule or the default, which may resolve to one: the
        subsets of a batch that train share a stack whose size follows their number, so a
        subset's rounding depends on its batch, which must then be fixed by the config
        alone (``ray.subsets_per_batch``), not by the number of workers."""
        return options.lookahead.stopping == "validation"

    def stopping(self, base: BaseModel) -> str:
        """The stopping rule in force: ``lookahead.stopping``, or when it is unset
        ``curve_screened`` where the lookahead keeps its best checkpoint and the task family
        trains copies side by side (binary labels, a model without dropout), ``validation``
        elsewhere."""
        options = self.options.lookahead
        if options.stopping is not None:
            return options.stopping
        side_by_side = family_of(base.taskset).binary_labels and base.spec.dropout == 0
        return "curve_screened" if options.keep_best and side_by_side else "validation"

    def prepare(self, subsets: np.ndarray, inputs: EstimatorInputs) -> FineTuningCurves | None:
        """Under a curve stopping rule (:meth:`stopping`), every task's own fine-tuning curve
        under the lookahead's schedule (:func:`base_curves`); else None."""
        if inputs.base is None:
            raise ValueError(f"the {self.name} estimator needs the base model")
        if self.stopping(inputs.base) == "validation":
            return None
        options = self.options.lookahead
        return base_curves(inputs.base, subsets, self.schedule(inputs.base.training),
                           options.epochs, options.target)

    def estimate(self, subsets: np.ndarray, inputs: EstimatorInputs,
                 prepared: FineTuningCurves | None,
                 device: torch.device | str = "cpu") -> np.ndarray:
        base = inputs.base
        options = self.options.lookahead
        training = self.schedule(base.training)
        budgets, keep_best = None, options.keep_best
        if prepared is not None:
            stops = curve_stops(prepared, subsets, training.early_stopping,
                                options.patience or options.epochs)[1]
            screened = self.stopping(base) == "curve_screened"
            budgets = np.where(stops == 0, 0, options.epochs) if screened else stops
            keep_best = screened
        device = torch.device(device)
        model = restore(base.spec, base.state).to(device)
        family = family_of(base.taskset)
        seeds = base.seed + SEED_OFFSET + np.arange(options.seeds)
        return np.mean([family.fine_tuned_figures(model, base.spec, base.taskset, subsets,
                                                  training, options.epochs, int(seed), device,
                                                  keep_best, options.target, budgets)
                        for seed in seeds], axis=0)
