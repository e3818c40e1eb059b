"""Baseline groupings: spectral clustering of the affinity, and random groups."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import SpectralClustering

from grouping.clustering.rounding import labels_to_groups


def spectral_groups(affinity: np.ndarray, num_groups: int, seed: int) -> list[list[int]]:
    """Spectral clustering on the positive part of T (Ng, Jordan, Weiss 2001)."""
    if num_groups == 1:
        return [list(range(affinity.shape[0]))]
    weights = np.clip(affinity, 0, None) + 1e-9
    np.fill_diagonal(weights, 0.0)
    labels = SpectralClustering(num_groups, affinity="precomputed", random_state=seed,
                                assign_labels="cluster_qr").fit_predict(weights)
    return labels_to_groups(labels)


def random_groups(sizes: list[int], num_tasks: int, seed: int) -> list[list[int]]:
    """A uniformly random partition of the tasks into groups of the given sizes."""
    order = np.random.default_rng(seed).permutation(num_tasks)
    bounds = np.cumsum([0, *sizes])
    return sorted((sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])),
                  key=lambda group: group[0])
