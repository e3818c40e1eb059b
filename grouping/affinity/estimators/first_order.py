"""First-order alignment: how much one gradient step on S's training loss lowers task i's
validation loss, to first order (the lookahead of TAG, Fifty et al., NeurIPS 2021, Eq. 3, and
the gradient inner products of influence estimates such as TracIn, Pruthi et al. 2020).

A step θ1 = θ0 − η ∇L_S with L_S the mean of S's training losses gives
L_i(θ1) ≈ L_i(θ0) − η ⟨∇L_i^val, (1/|S|) Σ_{j∈S} ∇L_j^train⟩. The gradients are the
projected ones of the gradient table (E[PPᵀ] = I, so inner products are kept in
expectation). The score is that inner product, or with ``first_order.normalize`` the mean
cosine of ∇L_i^val with each ∇L_j^train (LESS, Xia et al., ICML 2024, Eq. 2), and
f̂(S, i) = −score: a ranking of i's subsets, not a predicted loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from grouping.affinity.estimators.base import Estimator, EstimatorInputs, task_loss_gradients


class FirstOrderEstimator(Estimator):
    """−⟨∇L_i^val, mean_{j∈S} ∇L_j^train⟩ (or of their unit vectors)."""

    name = "first_order"
    cost = "one pass over all rows (2·R·d), then T²·d and m·s² additions"
    predicts_losses = False
    reads_gradient_rows = False

    def prepare(self, subsets: np.ndarray, table: EstimatorInputs) -> np.ndarray:
        """The alignment of every task's validation gradient with every task's training
        gradient, A[i, j] = ⟨∇L_i^val, ∇L_j^train⟩: [T, T]."""
        train, val, _ = task_loss_gradients(table)
        if self.options.first_order.normalize:
            train = _unit_rows(train)
            val = _unit_rows(val)
        return val @ train.T

    def estimate(self, subsets: np.ndarray, table: EstimatorInputs, prepared: Any,
                 device: torch.device | str = "cpu") -> np.ndarray:
        return -subset_means(prepared, subsets)


def subset_means(pairwise: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """mean_{j∈S} pairwise[i, j] for every task i of every subset S: [m, s]."""
    return pairwise[subsets[:, :, None], subsets[:, None, :]].mean(2)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
