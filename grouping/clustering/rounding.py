"""From a relaxed cluster matrix to groups, and between groups and per-task labels."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def round_to_groups(matrix: np.ndarray, num_groups: int, seed: int) -> list[list[int]]:
    """k-means (k = ``num_groups``) on the rows of X; groups sorted by their first task."""
    labels = KMeans(num_groups, n_init=10, random_state=seed).fit_predict(matrix)
    return labels_to_groups(labels)


def labels_to_groups(labels: np.ndarray) -> list[list[int]]:
    """Cluster labels → list of non-empty groups of task ids, sorted by first member."""
    groups = [np.flatnonzero(labels == label).tolist() for label in np.unique(labels)]
    return sorted(groups, key=lambda group: group[0])


def groups_to_labels(groups: list[list[int]], num_tasks: int) -> np.ndarray:
    """Groups of task ids → one cluster label per task (the group's position)."""
    labels = np.full(num_tasks, -1)
    for number, group in enumerate(groups):
        labels[group] = number
    return labels
