"""The estimate-vs-truth figures on arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from grouping.evaluation.error_report import error_report, within_task_spearman


def test_perfect_ranking_within_tasks_scores_one_even_with_an_offset():
    tasks = np.repeat(np.arange(3), 5)
    truth = np.tile(np.linspace(0.5, 0.6, 5), 3) + tasks
    assert within_task_spearman(truth + 0.2, truth, tasks) == pytest.approx(1.0)
    assert within_task_spearman(-truth, truth, tasks) == pytest.approx(-1.0)


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


def test_flop_counter_counts_a_matrix_product_and_the_comparison_scales_it():
    import torch

    from grouping.evaluation.flops import count_flops, flop_comparison

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    flops = flop_comparison(10.0, 100, 50.0, 1000.0, 20)
    assert flops["estimate"] == 10 * 100 + 50 * 20
    assert flops["ratio"] == pytest.approx(2000 / 20000)
    prepared = flop_comparison(10.0, 100, 50.0, 1000.0, 20, preparation_flops=500.0)
    assert prepared["estimates"] == 500 + 50 * 20
    assert prepared["ratio"] == pytest.approx(2500 / 20000)
