"""How close the estimated subset losses f̂(S, i) come to true fine-tuning f(S, i), judged
against trivial predictors and the seed-to-seed noise of the truth itself."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def relative_distance(estimate: np.ndarray, truth: np.ndarray) -> float:
    """‖f̂ − f‖₂ / ‖f‖₂."""
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def within_task_spearman(first: np.ndarray, second: np.ndarray, tasks: np.ndarray) -> float:
    """Spearman correlation across the subsets of each task, averaged over tasks with at
    least three subsets and non-constant values (what grouping depends on: the ranking of a
    task's subsets, not its loss level)."""
    values = []
    for task in np.unique(tasks):
        where = tasks == task
        if where.sum() >= 3 and np.ptp(first[where]) > 0 and np.ptp(second[where]) > 0:
            values.append(spearmanr(first[where], second[where]).statistic)
    return float(np.mean(values)) if values else float("nan")


def error_report(estimate: np.ndarray, truth: np.ndarray, base: np.ndarray, tasks: np.ndarray,
                 truth_repeat: np.ndarray | None = None) -> dict:
    """Figures over shared (S, i) pairs, given as flat arrays of equal length.

    ``base`` is the base model's own validation loss of each pair's task (the no-fine-tuning
    predictor); ``truth_repeat`` a second true fine-tuning with another seed (noise floor),
    NaN on pairs that were fine-tuned once only.
    """
    task_mean = np.array([truth[tasks == task].mean() for task in tasks])
    relative = np.abs(estimate - truth) / np.abs(truth)
    report = {
        "num_pairs": int(len(truth)),
        "relative_distance": relative_distance(estimate, truth),
        "mean_relative_error": float(relative.mean()),
        "median_relative_error": float(np.median(relative)),
        "spearman": float(spearmanr(estimate, truth).statistic),
        "within_task_spearman": within_task_spearman(estimate, truth, tasks),
        "base_relative_distance": relative_distance(base, truth),
        "task_mean_relative_distance": relative_distance(task_mean, truth),
        "mean_change": float(np.mean(np.abs(estimate - base) / base)),
        "mean_true_change": float(np.mean(np.abs(truth - base) / base)),
    }
    report["true_noise_floor"] = float("nan")
    if truth_repeat is not None:
        repeated = np.isfinite(truth_repeat)
        report["true_noise_floor"] = within_task_spearman(
            truth[repeated], truth_repeat[repeated], tasks[repeated])
    return report
