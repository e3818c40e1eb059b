"""Grad-TAG's surrogate estimator (Li, Sharma, Zhang, KDD 2024, Sec. 3.2, Eq. 5-6, with the
base logit as offset).

For subset S: logistic regression on the stacked training rows of S's tasks, p = σ(f0 + gᵀw),
minimising the weighted mean cross-entropy plus λ‖w‖²; f̂(S, i) is task i's weighted mean
validation cross-entropy under f0 + gᵀw_S, computed by :mod:`grouping.affinity.surrogate`
(the batched Newton-CG solver is :mod:`grouping.affinity.surrogate_solver`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from grouping.affinity.estimators.base import Estimator, EstimatorInputs
from grouping.affinity.surrogate import subset_losses
from grouping.affinity.surrogate_schedule import preconditioned
from grouping.affinity.surrogate_solver import task_curvatures


class SurrogateEstimator(Estimator):
    """The logistic surrogate fit per subset (``affinity.l2``, ``newton_iterations``,
    ``tolerance``, ``surrogate_dtype``)."""

    name = "surrogate"
    cost = ("a damped Newton-CG fit per subset: about 2 (1 + CG iterations) passes over the "
            "training rows of S per Newton iteration, each 2·rows·d; plus T·d² per task when "
            "preconditioned")
    independent_subsets = False

    def prepare(self, subsets: np.ndarray, table: EstimatorInputs) -> np.ndarray | None:
        """Every task's curvature term when the fits are preconditioned (decided once for
        all subsets, so that every batch fits the same way), else None."""
        if preconditioned(subsets, table.rows, table.dim):
            return task_curvatures(table.rows, table.f0, table.gradients)
        return None

    def estimate(self, subsets: np.ndarray, table: EstimatorInputs, prepared: Any,
                 device: torch.device | str = "cpu") -> np.ndarray:
        return self.fitted_losses(subsets, table, prepared, self.options.l2, device)

    def fitted_losses(self, subsets: np.ndarray, table: EstimatorInputs,
                      curvatures: np.ndarray | None, l2: float,
                      device: torch.device | str = "cpu") -> np.ndarray:
        """f̂ [b, s] of the fit at penalty ``l2``, preconditioned by ``curvatures`` (what
        :meth:`prepare` returned) unless None."""
        options = self.options
        return subset_losses(subsets, table.rows, table.f0, table.gradients, l2,
                             options.newton_iterations, options.tolerance, device,
                             getattr(torch, options.surrogate_dtype), curvatures,
                             precondition=curvatures is not None)
