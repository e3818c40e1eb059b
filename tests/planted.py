"""Planted test inputs shared by the clustering tests."""

from __future__ import annotations

import numpy as np


def planted_affinity(sizes: list[int], noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Block affinity (1 within, −0.3 across groups) plus symmetric Gaussian noise, shuffled;
    and the planted group of each task."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    affinity = np.where(labels[:, None] == labels[None, :], 1.0, -0.3)
    affinity = affinity + noise * rng.normal(size=affinity.shape)
    affinity = (affinity + affinity.T) / 2
    np.fill_diagonal(affinity, 0)
    order = rng.permutation(len(labels))
    return affinity[np.ix_(order, order)], labels[order]
