"""The estimate-vs-truth figures on arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from grouping.affinity.error_report import (
    error_report,
    mean_and_se,
    room_for_grouping,
    task_spearmans,
    within_task_spearman,
)


def test_perfect_ranking_within_tasks_scores_one_even_with_an_offset():
    tasks = np.repeat(np.arange(3), 5)
    truth = np.tile(np.linspace(0.5, 0.6, 5), 3) + tasks
    assert within_task_spearman(truth + 0.2, truth, tasks) == pytest.approx(1.0)
    assert within_task_spearman(-truth, truth, tasks) == pytest.approx(-1.0)


def test_values_that_differ_by_rounding_only_rank_nothing():
    """A truth whose every subset model kept the same state differs only in float rounding
    (about 1e-7 of the loss); ranking that would measure the arithmetic, not the subsets."""
    tasks = np.repeat(np.arange(3), 5)
    rng = np.random.default_rng(0)
    level = np.repeat([0.01, 0.2, 0.5], 5)
    rounding = level * (1 + 1e-7 * rng.standard_normal(15))
    estimate = level * (1 + 0.1 * rng.standard_normal(15))
    assert np.isnan(within_task_spearman(estimate, rounding, tasks))
    assert np.isnan(within_task_spearman(rounding, rounding[::-1].copy(), tasks))
    moved = level * (1 + 1e-3 * np.tile(np.arange(5), 3))
    assert within_task_spearman(moved + 1.0, moved, tasks) == pytest.approx(1.0)


def test_the_standard_error_is_the_spread_of_the_per_task_correlations():
    tasks = np.repeat(np.arange(4), 6)
    rng = np.random.default_rng(1)
    truth = rng.standard_normal(24)
    estimate = truth + rng.standard_normal(24)
    per_task = [spearmanr(estimate[tasks == t], truth[tasks == t]).statistic for t in range(4)]
    assert task_spearmans(estimate, truth, tasks) == pytest.approx(per_task)
    assert within_task_spearman(estimate, truth, tasks) == pytest.approx(np.mean(per_task))
    assert mean_and_se(task_spearmans(estimate, truth, tasks))[1] == pytest.approx(
        np.std(per_task, ddof=1) / 2)
    one = tasks == 0
    assert np.isnan(mean_and_se(task_spearmans(estimate[one], truth[one], tasks[one]))[1])
    report = error_report(estimate, truth, truth + 1, tasks, truth_repeat=truth)
    assert report["within_task_spearman_se"] == pytest.approx(np.std(per_task, ddof=1) / 2)
    assert report["true_noise_floor_se"] == 0


def test_a_rounding_pattern_shared_by_estimate_and_truth_ranks_nothing():
    """Two computations of the same arithmetic repeat their rounding: where most subsets of a
    task kept their start in both the truth and the estimate, their values differ by the same
    1e-9, and ranking that would report agreement the subsets do not have."""
    rng = np.random.default_rng(0)
    tasks = np.repeat(np.arange(3), 8)
    kept = np.ones(24)
    truth_moves, estimate_moves = kept.copy(), kept.copy()
    truth_moves[::8] += 0.5
    estimate_moves[3::8] += 0.5
    rounding = 1e-9 * rng.standard_normal(24)
    shared = within_task_spearman(estimate_moves + rounding, truth_moves + rounding, tasks)
    clean = within_task_spearman(estimate_moves, truth_moves, tasks)
    assert shared == pytest.approx(clean) and clean < 0
    assert spearmanr(estimate_moves[:8] + rounding[:8],
                     truth_moves[:8] + rounding[:8]).statistic > 0.3


def test_report_figures_on_known_arrays():
    tasks = np.repeat(np.arange(2), 4)
    truth = np.array([1.0, 1.1, 1.2, 1.3, 2.0, 2.2, 2.4, 2.6])
    estimate = truth * 1.1
    base = np.repeat([1.5, 2.5], 4)
    report = error_report(estimate, truth, base, tasks, truth_repeat=truth[::-1].copy())
    assert report["relative_distance"] == pytest.approx(0.1)
    assert report["mean_relative_error"] == pytest.approx(0.1)
    assert report["within_task_spearman"] == pytest.approx(1.0)
    assert report["true_noise_floor"] == pytest.approx(-1.0)
    assert report["num_pairs"] == 8
    expected = np.linalg.norm(base - truth) / np.linalg.norm(truth)
    assert report["base_relative_distance"] == pytest.approx(expected)
    assert report["mean_true_change"] == pytest.approx(np.mean(np.abs(truth - base) / base))


def test_noise_floor_uses_only_the_repeated_pairs():
    tasks = np.repeat(np.arange(2), 6)
    truth = np.tile(np.linspace(1.0, 1.5, 6), 2)
    repeat = truth.copy()
    repeat[::2] = np.nan
    report = error_report(truth, truth, truth + 1, tasks, truth_repeat=repeat)
    assert report["true_noise_floor"] == pytest.approx(1.0)


def test_room_for_grouping_splits_what_repeats_between_seeds_from_what_does_not():
    rng = np.random.default_rng(0)
    subsets, tasks = 4000, np.repeat(np.arange(3), 4000)
    level = np.repeat([1.0, 2.0, 4.0], subsets)
    # Each task's loss: its level times (1 + a subset effect of SD 5% + a seed effect of 2%).
    effect = np.tile(rng.normal(0, 0.05, subsets), 3)
    first = level * (1 + effect + rng.normal(0, 0.02, 3 * subsets))
    second = level * (1 + effect + rng.normal(0, 0.02, 3 * subsets))
    room = room_for_grouping(first, second, tasks)
    assert room["composition_effect"] == pytest.approx(0.05, rel=0.05)
    assert room["seed_effect"] == pytest.approx(0.02, rel=0.05)
    # The best of 4000 subsets under one seed is far below the mean under the other.
    assert room["selection_gain"] > 0.1
    # Seeds alone: nothing repeats, the composition effect is (clipped to) about zero.
    noise_only = level * (1 + rng.normal(0, 0.02, 3 * subsets))
    room = room_for_grouping(noise_only, level, tasks)
    assert room["composition_effect"] < 0.005
    assert room["seed_effect"] == pytest.approx(0.02 / np.sqrt(2), rel=0.05)
    report = error_report(first, first, level, tasks, truth_repeat=second)
    assert report["true_composition_effect"] == pytest.approx(0.05, rel=0.05)


def test_selection_gain_is_measured_under_the_other_seed():
    tasks = np.zeros(4, dtype=int)
    # Seed one ranks subset 0 best, seed two subset 3: each choice is the other's worst.
    first = np.array([1.0, 2.0, 2.0, 3.0])
    second = np.array([3.0, 2.0, 2.0, 1.0])
    assert room_for_grouping(first, second, tasks)["selection_gain"] == pytest.approx(-0.5)
    assert room_for_grouping(first, first, tasks)["selection_gain"] == pytest.approx(0.5)


def test_flop_counter_counts_a_matrix_product_and_the_comparison_scales_it():
    import torch

    from grouping.flops import count_flops, flop_comparison

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    flops = flop_comparison(10.0, 100, 50.0, 1000.0, 20)
    assert flops["estimate"] == 10 * 100 + 50 * 20
    assert flops["ratio"] == pytest.approx(2000 / 20000)
    prepared = flop_comparison(10.0, 100, 50.0, 1000.0, 20, preparation_flops=500.0)
    assert prepared["estimates"] == 500 + 50 * 20
    assert prepared["ratio"] == pytest.approx(2500 / 20000)


def test_a_perfectly_ranked_task_leaves_the_relative_figures_finite():
    # 1 − AP is 0 for a task ranked perfectly: relative figures skip those pairs.
    tasks = np.repeat(np.arange(2), 3)
    truth = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    base = np.array([0.0, 0.0, 0.0, 0.2, 0.2, 0.2])
    report = error_report(truth + 0.1, truth, base, tasks)
    assert report["mean_relative_error"] == pytest.approx(np.mean(0.1 / truth[1:]))
    assert report["mean_true_change"] == pytest.approx(np.mean([0.5, 1.0, 1.5]))
    assert np.isfinite(report["mean_change"])
