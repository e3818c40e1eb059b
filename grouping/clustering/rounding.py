"""From a relaxed cluster matrix X, or a factor V of X = VVᵀ, to groups; and between groups
and per-task labels."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

TOLERANCE = 1e-4


def kmeans_groups(points: np.ndarray, num_groups: int, seed: int,
                  tolerance: float = TOLERANCE) -> list[list[int]]:
    """k-means (k = ``num_groups``, 10 seeded k-means++ starts) on the rows of ``points``;
    groups sorted by their first task.

    ``tolerance`` is scikit-learn's: relative to the mean variance of the columns.
    """
    labels = KMeans(num_groups, n_init=10, random_state=seed,
                    tol=tolerance).fit_predict(points)
    return labels_to_groups(labels)


def round_to_groups(matrix: np.ndarray, num_groups: int, seed: int) -> list[list[int]]:
    """k-means (k = ``num_groups``) on the rows of X; groups sorted by their first task."""
    return kmeans_groups(matrix, num_groups, seed)


def factor_embedding(factor: np.ndarray) -> np.ndarray:
    """F = V (VᵀV)^{1/2} [n, r], the symmetric PSD square root by eigh, eigenvalues clipped at 0.

    For row vectors a, b: ‖(a − b)Vᵀ‖² = (a − b) VᵀV (a − b)ᵀ = ‖(a − b)(VᵀV)^{1/2}‖², so
    every distance between rows of X = VVᵀ, and between affine combinations of them such as
    k-means centroids, equals the distance between the same combinations of rows of F.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(factor.T @ factor)
    root = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    return factor @ root


def round_factor_to_groups(factor: np.ndarray, num_groups: int,
                           seed: int) -> list[list[int]]:
    """:func:`round_to_groups` of X = VVᵀ computed from V [n, r] without forming X.

    k-means on the rows of F = V (VᵀV)^{1/2} (:func:`factor_embedding`) sees the pairwise
    distances and cluster costs of k-means on the rows of X, at O(r) per distance instead of
    O(n) (the factorisation is Burer and Monteiro's, Math. Program. 2003). scikit-learn scales
    its stopping tolerance by the mean column variance, which is the total variance over the
    number of columns; the total variance being the same for F and X, the tolerance is
    scaled by r / n to stop Lloyd's iterations at the same centroid shift.
    """
    size, rank = factor.shape
    return kmeans_groups(factor_embedding(factor), num_groups, seed,
                         TOLERANCE * rank / size)


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
