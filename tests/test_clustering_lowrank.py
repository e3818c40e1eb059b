"""The low-rank (Burer–Monteiro) solver against the cvxpy SDP: objective, constraints, groups.

Gaps are relative, (⟨T, X_sdp⟩ − ⟨T, X_lowrank⟩) / |⟨T, X_sdp⟩|, against SCS at its default
accuracy. On clustered affinities the two optima agree (gap ≤ 0.1 %); on unstructured ones the
low-rank optimum, over completely positive X, lies a few per cent below (gap ≤ 6 %).
"""

from __future__ import annotations

import numpy as np
import pytest
from planted import planted_affinity
from scipy.optimize import check_grad
from scipy.spatial.distance import pdist
from sklearn.metrics import adjusted_rand_score

from grouping.clustering import groups_to_labels, sdp_groups, solve_sdp
from grouping.clustering.lowrank import (
    lagrangian,
    lowrank_groups,
    solve_lowrank,
    solve_lowrank_factor,
)
from grouping.clustering.rounding import (
    factor_embedding,
    round_factor_to_groups,
    round_to_groups,
)

PLANTED_GAP = 1e-3
UNSTRUCTURED_GAP = 6e-2
SCS_SLACK = 1e-3


def _random_sizes(num_groups: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(6, 15, size=num_groups).tolist()


def _gap(affinity: np.ndarray, num_groups: int) -> float:
    reference = float(np.sum(affinity * solve_sdp(affinity, num_groups, "SCS")))
    lowrank = float(np.sum(affinity * solve_lowrank(affinity, num_groups, seed=0)))
    return (reference - lowrank) / abs(reference)


@pytest.mark.parametrize(("num_groups", "noise", "seed"), [(3, 0.5, 0), (4, 1.0, 1), (5, 0.8, 2),
                                                           (6, 0.6, 3)])
def test_objective_matches_the_sdp_on_planted_instances(num_groups, noise, seed):
    affinity, _ = planted_affinity(_random_sizes(num_groups, seed), noise, seed)
    assert abs(_gap(affinity, num_groups)) <= PLANTED_GAP


def test_objective_bounded_by_the_sdp_on_unstructured_instances():
    rng = np.random.default_rng(7)
    for size, num_groups in [(40, 4), (30, 2)]:
        noise = rng.normal(size=(size, size))
        gap = _gap((noise + noise.T) / 2, num_groups)
        assert -SCS_SLACK <= gap <= UNSTRUCTURED_GAP


def test_solution_satisfies_the_constraints():
    affinity, _ = planted_affinity([9, 12, 7, 10, 8], noise=1.0, seed=5)
    matrix = solve_lowrank(affinity, 5, seed=0)
    assert np.abs(matrix.sum(1) - 1).max() < 1e-5
    assert abs(np.trace(matrix) - 5) < 1e-5
    assert matrix.min() >= 0
    assert np.linalg.eigvalsh(matrix).min() > -1e-9


def test_noiseless_blocks_give_the_integral_solution():
    affinity, labels = planted_affinity([5, 8, 6], noise=0.0, seed=6)
    integral = sum(np.outer(labels == group, labels == group) / np.sum(labels == group)
                   for group in range(3))
    assert np.abs(solve_lowrank(affinity, 3, seed=0) - integral).max() < 1e-4


@pytest.mark.parametrize(("sizes", "noise"), [([6, 4, 8, 5], 0.3), ([15, 10, 20, 12], 1.0)])
def test_recovers_planted_groups(sizes, noise):
    affinity, truth = planted_affinity(sizes, noise, seed=8)
    groups = lowrank_groups(affinity, len(sizes), seed=0)
    assert sorted(task for group in groups for task in group) == list(range(len(truth)))
    assert adjusted_rand_score(truth, groups_to_labels(groups, len(truth))) == 1.0


def test_deterministic_for_a_seed():
    affinity, _ = planted_affinity([7, 9, 6], noise=1.5, seed=9)
    first, second = solve_lowrank(affinity, 3, seed=3), solve_lowrank(affinity, 3, seed=3)
    assert np.array_equal(first, second)
    assert lowrank_groups(affinity, 3, seed=3) == lowrank_groups(affinity, 3, seed=3)


def test_one_group_holds_every_task():
    affinity, _ = planted_affinity([5, 5], noise=0.5, seed=10)
    assert lowrank_groups(affinity, 1, seed=0) == [list(range(10))]


def test_lagrangian_gradient_matches_finite_differences():
    rng = np.random.default_rng(11)
    affinity = rng.normal(size=(12, 12))
    affinity = (affinity + affinity.T) / 2
    arguments = (affinity, rng.normal(size=12), 0.7, 3.0, 3)
    point = rng.uniform(size=12 * 5)
    gradient = lagrangian(point, *arguments)[1]
    error = check_grad(lambda flat: lagrangian(flat, *arguments)[0],
                       lambda flat: lagrangian(flat, *arguments)[1], point)
    assert error < 1e-6 * np.linalg.norm(gradient)


def test_the_configured_solver_picks_the_low_rank_method():
    affinity, truth = planted_affinity([9, 7, 11], noise=0.5, seed=4)
    low_rank = lowrank_groups(affinity, 3, seed=0)
    assert sdp_groups(affinity, 3, "LOWRANK", seed=0) == low_rank
    assert sdp_groups(affinity, 3, "auto", seed=0) == sdp_groups(affinity, 3, "SCS", seed=0)
    assert adjusted_rand_score(truth, groups_to_labels(low_rank, len(truth))) == 1.0


def test_factor_embedding_keeps_the_row_distances_of_the_matrix():
    factor = np.random.default_rng(12).uniform(size=(30, 6))
    assert np.allclose(pdist(factor_embedding(factor)), pdist(factor @ factor.T))


@pytest.mark.parametrize(("sizes", "noise", "seed"), [([6, 4, 8, 5], 0.3, 13),
                                                      ([15, 10, 20, 12], 1.0, 14),
                                                      ([9, 7, 11, 8, 10], 2.0, 15),
                                                      ([12, 12, 12], 3.0, 16)])
def test_rounding_the_factor_gives_the_groups_of_the_matrix(sizes, noise, seed):
    affinity, _ = planted_affinity(sizes, noise, seed)
    factor = solve_lowrank_factor(affinity, len(sizes), seed=0)
    from_matrix = round_to_groups(factor @ factor.T, len(sizes), seed=0)
    assert round_factor_to_groups(factor, len(sizes), seed=0) == from_matrix
    assert lowrank_groups(affinity, len(sizes), seed=0) == from_matrix
