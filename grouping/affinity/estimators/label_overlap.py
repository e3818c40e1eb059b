"""Training-label overlap: a model-free prior for binary-label task sets.

Tasks whose positives coincide (nested or overlapping communities, co-occurring labels) pool
evidence about the same examples. The score of task i in S is the mean Jaccard index
|P_i ∩ P_j| / |P_i ∪ P_j| of i's training positives with those of S's other tasks, and
f̂(S, i) = −score. Only training rows are read (never validation or test labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sparse
import torch

from grouping.affinity.estimators.base import Estimator, EstimatorInputs
from grouping.tasksets import TRAIN


class LabelOverlapEstimator(Estimator):
    """−mean_{j∈S, j≠i} Jaccard(P_i, P_j) over training positives."""

    name = "label_overlap"
    cost = "one sparse product over the training positives, then m·s² additions"
    predicts_losses = False
    binary_labels_only = True
    reads_gradient_rows = False
    uses_gradient_features = False

    def prepare(self, subsets: np.ndarray, table: EstimatorInputs) -> np.ndarray:
        """Jaccard index of every pair of tasks' training positives: [T, T]."""
        return training_jaccard(table.rows)

    def estimate(self, subsets: np.ndarray, table: EstimatorInputs, prepared: Any,
                 device: torch.device | str = "cpu") -> np.ndarray:
        size = subsets.shape[1]
        pairwise = prepared[subsets[:, :, None], subsets[:, None, :]]
        own = prepared[subsets, subsets]
        return -(pairwise.sum(2) - own) / (size - 1)


def training_jaccard(rows) -> np.ndarray:
    """Jaccard index of the training positives of every pair of tasks, from the row table
    (all positives are kept there): [T, T], 0 where both have none."""
    positive = (rows.split == TRAIN) & (rows.label == 1)
    examples, tasks = rows.example[positive], rows.task[positive]
    _, columns = np.unique(examples, return_inverse=True)
    num_tasks = len(rows.offsets)
    membership = sparse.csr_matrix((np.ones(len(tasks)), (tasks, columns.ravel())),
                                   shape=(num_tasks, columns.max() + 1 if len(tasks) else 0))
    shared = (membership @ membership.T).toarray()
    sizes = np.diag(shared)
    union = sizes[:, None] + sizes[None, :] - shared
    return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
