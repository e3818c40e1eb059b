"""Truncated training: the from-scratch truth's own training of a fresh model on S, cut short
(the truncated-training proxy of learning-curve extrapolation and early-stopped architecture
search, e.g. Domhan et al., IJCAI 2015; here the proxy of the truth f(S, i) that the
grouping's oracle clusters, the from-scratch protocol of ``true_affinity``).

f̂(S, i) is task i's validation figure (``truncated.target``: its loss, or 1 − its average
precision) after a fresh model of S's tasks is trained exactly as a group model is (the
family's ``train_group``: the first of ``group_training.optimizers`` at its first learning
rate, the linear start, early stopping on ``train.early_stopping`` with ``train.patience``)
for at most ``truncated.epochs`` epochs, at its kept checkpoint; with ``truncated.patience``
its early stopping waits that many epochs instead of ``train.patience``. The truth trains the same
model until its early stopping ends; the estimate converges to it as ``truncated.epochs``
reaches the truth's stopping epoch, at that fraction of its cost. Initialisation seeds of
its own (:data:`SEED_OFFSET`): the truth's two seeds never share its initialisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from grouping.affinity.estimators.base import SEED_OFFSET, EstimatorInputs, TrainingEstimator
from grouping.affinity.true_affinity import train_subset_from_scratch
from grouping.config import RunConfig


class TruncatedEstimator(TrainingEstimator):
    """Task i's validation figure after the truth's training of a fresh model on S, stopped
    at ``truncated.epochs`` epochs."""

    name = "truncated"
    cost = ("at most truncated.epochs epochs of a group model's training per subset: that "
            "fraction of the from-scratch truth's epochs, plus one validation pass per epoch")

    def schedule(self, run: RunConfig) -> RunConfig:
        """``run`` with its training cut at ``truncated.epochs`` epochs, its early stopping's
        patience ``truncated.patience`` and its truth's figure ``truncated.target``."""
        options = self.options.truncated
        return run.model_copy(update={
            "train": run.train.model_copy(update={
                "max_epochs": min(options.epochs, run.train.max_epochs),
                "patience": min(options.patience or run.train.patience, run.train.patience)}),
            "true_affinity": run.true_affinity.model_copy(update={"target": options.target})})

    def estimate(self, subsets: np.ndarray, inputs: EstimatorInputs, prepared: Any,
                 device: torch.device | str = "cpu") -> np.ndarray:
        base = inputs.base
        if base.run is None:
            raise ValueError("the truncated estimator needs the run's config (BaseModel.run)")
        run = self.schedule(base.run)
        return np.stack([
            train_subset_from_scratch(base.taskset, subset, run, base.seed + SEED_OFFSET,
                                      torch.device(device), base.linear)["losses"]
            for subset in subsets])
