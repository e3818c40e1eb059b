"""Pairwise task affinity from the subset-loss table (Grad-TAG, Sec. 3.3)."""

from __future__ import annotations

import numpy as np


def affinity_from_losses(subsets: np.ndarray, losses: np.ndarray, num_tasks: int) -> np.ndarray:
    """T[i, j] from f̂(S, i) for subsets S: [m, s] task ids and [m, s] losses.

    For each task i the scores −f̂(S, i) are z-normalised over the subsets containing i
    (lower loss = better); T[i, j] is the mean score of i over subsets containing both i and
    j, symmetrised, with a zero diagonal; pairs that never share a subset get 0.
    """
    scores = np.zeros_like(losses, dtype=np.float64)
    for task in range(num_tasks):
        where = subsets == task
        values = -losses[where]
        if len(values) > 1 and values.std() > 0:
            scores[where] = (values - values.mean()) / values.std()
    membership = np.zeros((len(subsets), num_tasks))
    np.put_along_axis(membership, subsets, 1.0, axis=1)
    score_of = np.zeros((len(subsets), num_tasks))
    np.put_along_axis(score_of, subsets, scores, axis=1)
    total = score_of.T @ membership
    count = membership.T @ membership
    affinity = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    affinity = (affinity + affinity.T) / 2
    np.fill_diagonal(affinity, 0.0)
    return affinity
