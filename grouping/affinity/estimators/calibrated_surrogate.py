"""Grad-TAG's surrogate with its fit matched to the training budget (Li, Sharma, Zhang, KDD
2024, Sec. 3.2, Eq. 5-6, with λ of Eq. 5 calibrated on truly trained subsets).

The surrogate moves the predicted validation losses far less than training does (1.5%
against 44% on snap_amazon_sub at λ = 0.1), and λ sets how far. Before estimating, the first
``calibrated_surrogate.subsets`` of the sampled subsets are truly trained under the truth's
protocol (``true_affinity.protocol``: a group model from scratch, or θ0 fine-tuned; seeds of
the estimator's own, :data:`SEED_OFFSET`), and λ is the value of
``calibrated_surrogate.l2s`` whose predicted change of those subsets' validation losses is
closest in mean relative size to the true change (both measured as the error report's
``mean_change``, |f − f_base| / f_base, against each one's own base: the surrogate's losses at
w = 0 on the table's rows, θ0's on the validation rows), on a log scale. Every subset is
then fitted at that λ as :mod:`grouping.affinity.estimators.surrogate` fits it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grouping.affinity.error_report import mean_relative_change
from grouping.affinity.estimators.base import (
    SEED_OFFSET,
    EstimatorInputs,
    base_validation_losses,
)
from grouping.affinity.estimators.surrogate import SurrogateEstimator
from grouping.affinity.true_affinity import (
    base_losses,
    fine_tune_subset,
    train_subset_from_scratch,
)
from grouping.models import restore


@dataclass(frozen=True)
class Calibration:
    """The λ picked, the true mean change of the calibration subsets, each candidate λ's
    predicted mean change ([len(l2s)]), and the surrogate's curvature terms (or None)."""

    l2: float
    true_change: float
    predicted_changes: np.ndarray
    curvatures: np.ndarray | None


def closest_l2(l2s: list[float], predicted: np.ndarray, true_change: float) -> float | None:
    """The λ of ``l2s`` whose predicted mean change is closest to ``true_change`` on a log
    scale (the first of equals); None when no change is finite (nothing to match: the
    caller keeps ``affinity.l2``)."""
    if not np.isfinite(true_change) or not np.isfinite(predicted).any():
        return None
    tiny = np.finfo(np.float64).tiny
    gap = np.abs(np.log(np.maximum(predicted, tiny)) - np.log(max(true_change, tiny)))
    return l2s[int(np.argmin(np.where(np.isfinite(gap), gap, np.inf)))]


class CalibratedSurrogateEstimator(SurrogateEstimator):
    """The surrogate fit at the λ whose predicted change matches truly trained subsets
    (``calibrated_surrogate.subsets``, ``calibrated_surrogate.l2s``)."""

    name = "calibrated_surrogate"
    needs_base_model = True
    cost = ("the surrogate's fits, plus truly training calibrated_surrogate.subsets subsets "
            "and fitting them once per candidate λ")

    def true_change(self, subsets: np.ndarray, inputs: EstimatorInputs) -> float:
        """The mean relative change of ``subsets``' validation losses from θ0's when they are
        truly trained under the truth's protocol, at seeds of the estimator's own."""
        base = inputs.base
        if base is None or base.run is None:
            raise ValueError(f"the {self.name} estimator needs the base model and its run")
        cpu = torch.device("cpu")
        seed = base.seed + SEED_OFFSET
        truth = base.run.true_affinity
        if truth.protocol == "from_scratch":
            run = base.run.model_copy(update={
                "true_affinity": truth.model_copy(update={"target": "loss"})})
            trained = [train_subset_from_scratch(base.taskset, subset, run, seed, cpu,
                                                 base.linear)["losses"] for subset in subsets]
        else:
            trained = [fine_tune_subset(restore(base.spec, base.state), base.spec,
                                        base.taskset, subset, base.training, truth.epochs,
                                        seed, cpu)["losses"] for subset in subsets]
        start = base_losses(restore(base.spec, base.state), base.spec, base.taskset, cpu)
        return mean_relative_change(np.stack(trained), start[subsets])

    def prepare(self, subsets: np.ndarray, inputs: EstimatorInputs) -> Calibration:
        curvatures = super().prepare(subsets, inputs)
        options = self.options.calibrated_surrogate
        chosen = subsets[:options.subsets]
        true_change = self.true_change(chosen, inputs)
        fit_base = base_validation_losses(inputs.rows, inputs.f0)[chosen]
        predicted = np.array([mean_relative_change(
            self.fitted_losses(chosen, inputs, curvatures, l2), fit_base)
            for l2 in options.l2s])
        l2 = closest_l2(options.l2s, predicted, true_change)
        return Calibration(self.options.l2 if l2 is None else l2, true_change, predicted,
                           curvatures)

    def estimate(self, subsets: np.ndarray, table: EstimatorInputs, prepared: Calibration,
                 device: torch.device | str = "cpu") -> np.ndarray:
        return self.fitted_losses(subsets, table, prepared.curvatures, prepared.l2, device)
