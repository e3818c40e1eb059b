"""Subsets and the aggregation of subset losses into the affinity matrix."""

from __future__ import annotations

import math

import numpy as np

from grouping.affinity.aggregate import affinity_from_losses
from grouping.affinity.subsets import sample_subsets, subsets_for_coverage


def test_subset_count_gives_the_requested_pair_coverage():
    count = subsets_for_coverage(100, 10, 10)
    assert count == math.ceil(10 * 100 * 99 / 90)
    subsets = sample_subsets(30, 5, subsets_for_coverage(30, 5, 20), seed=0)
    membership = np.zeros((len(subsets), 30))
    np.put_along_axis(membership, subsets, 1, axis=1)
    pairs = membership.T @ membership
    off_diagonal = pairs[~np.eye(30, dtype=bool)]
    assert abs(off_diagonal.mean() - 20) < 1.5


def test_subsets_are_distinct_sorted_and_seeded():
    subsets = sample_subsets(8, 3, 500, seed=1)
    assert len(subsets) == math.comb(8, 3)
    assert len({tuple(row) for row in subsets}) == len(subsets)
    assert (np.diff(subsets, axis=1) > 0).all()
    assert np.array_equal(sample_subsets(20, 4, 50, seed=2), sample_subsets(20, 4, 50, seed=2))


def test_aggregation_recovers_planted_helpful_pairs():
    rng = np.random.default_rng(0)
    num_tasks, family = 12, np.arange(12) // 4
    subsets = sample_subsets(num_tasks, 4, 400, seed=3)
    mates = (family[subsets][:, :, None] == family[subsets][:, None, :]).sum(2) - 1
    losses = 1.0 - 0.1 * mates + 0.02 * rng.normal(size=subsets.shape)
    affinity = affinity_from_losses(subsets, losses, num_tasks)
    same = family[:, None] == family[None, :]
    np.fill_diagonal(same, False)
    different = family[:, None] != family[None, :]
    assert np.allclose(affinity, affinity.T)
    assert np.all(np.diag(affinity) == 0)
    assert affinity[same].min() > affinity[different].max()


def test_pairs_that_never_meet_get_zero():
    subsets = np.array([[0, 1], [0, 1], [2, 3], [2, 3]])
    losses = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
    affinity = affinity_from_losses(subsets, losses, 4)
    assert affinity[0, 2] == 0 and affinity[1, 3] == 0
