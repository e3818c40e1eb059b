"""SDP clustering recovers planted groups; the k = auto rule; baselines partition the tasks."""

from __future__ import annotations

import numpy as np
from planted import planted_affinity
from sklearn.metrics import adjusted_rand_score

from grouping.clustering import (
    choose_num_groups,
    groups_to_labels,
    random_groups,
    sdp_groups,
    solve_sdp,
    spectral_groups,
)


def test_sdp_recovers_planted_groups_of_unequal_size():
    affinity, truth = planted_affinity([6, 4, 8, 5], noise=0.3, seed=0)
    groups = sdp_groups(affinity, 4, "SCS", seed=0)
    assert sorted(task for group in groups for task in group) == list(range(len(truth)))
    assert adjusted_rand_score(truth, groups_to_labels(groups, len(truth))) == 1.0


def test_sdp_solution_satisfies_the_constraints():
    affinity, _ = planted_affinity([5, 5, 5], noise=0.5, seed=1)
    matrix = solve_sdp(affinity, 3, "CLARABEL")
    assert np.allclose(matrix.sum(1), 1, atol=1e-4)
    assert abs(np.trace(matrix) - 3) < 1e-4
    assert matrix.min() > -1e-5
    assert np.linalg.eigvalsh((matrix + matrix.T) / 2).min() > -1e-5


def test_auto_rule_finds_the_planted_number_of_groups():
    for count in (2, 3, 5):
        affinity, _ = planted_affinity([6] * count, noise=0.2, seed=count)
        assert choose_num_groups(affinity, max_groups=10) == count


def test_spectral_and_random_baselines_partition_the_tasks():
    affinity, truth = planted_affinity([5, 5, 5], noise=0.2, seed=4)
    spectral = spectral_groups(affinity, 3, seed=0)
    assert adjusted_rand_score(truth, groups_to_labels(spectral, 15)) == 1.0
    groups = random_groups([5, 7, 3], 15, seed=0)
    assert sorted(len(group) for group in groups) == [3, 5, 7]
    assert sorted(task for group in groups for task in group) == list(range(15))
    assert groups != random_groups([5, 7, 3], 15, seed=1)
