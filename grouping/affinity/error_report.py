"""How close the estimated subset losses f̂(S, i) come to true fine-tuning f(S, i), judged
against trivial predictors and the seed-to-seed noise of the truth itself."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def relative_distance(estimate: np.ndarray, truth: np.ndarray) -> float:
    """‖f̂ − f‖₂ / ‖f‖₂."""
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


RELATIVE_RESOLUTION = 1e-6
"""Values of one task that differ by less than this fraction of their magnitude are taken as
equal: float32 rounding (about 1e-7), not a ranking of subsets."""


def mean_relative_change(values: np.ndarray, base: np.ndarray) -> float:
    """Mean of |values − base| / base over the entries with a positive base: how far the
    figures moved from the base model's (the error report's ``mean_change``)."""
    based = base > 0
    return float(np.mean(np.abs(values - base)[based] / base[based]))


def varies(values: np.ndarray) -> bool:
    """Whether ``values`` differ by more than rounding (:data:`RELATIVE_RESOLUTION`)."""
    return bool(np.ptp(values) > RELATIVE_RESOLUTION * np.max(np.abs(values)))


def resolved_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` in which values within rounding of each other
    (:data:`RELATIVE_RESOLUTION` of their largest magnitude, chained through sorted
    neighbours) share one rank. Subset models that kept the same state differ only in float
    rounding, and a rounding pattern can repeat between two computations of the same
    arithmetic (a truth and an estimate that both kept a subset's start), so ranking the
    rounding would measure the arithmetic, not the subsets."""
    order = np.argsort(values, kind="stable")
    tolerance = RELATIVE_RESOLUTION * np.max(np.abs(values))
    ranks = np.empty(len(values))
    ranks[order] = np.concatenate([[0], np.cumsum(np.diff(values[order]) > tolerance)])
    return ranks


def task_spearmans(first: np.ndarray, second: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Spearman correlation across the subsets of each task with at least three subsets whose
    values vary in both (:func:`varies`; what grouping depends on: the ranking of a task's
    subsets, not its loss level), values within rounding of each other tied
    (:func:`resolved_ranks`), one value per such task."""
    values = []
    for task in np.unique(tasks):
        where = tasks == task
        if where.sum() >= 3 and varies(first[where]) and varies(second[where]):
            values.append(spearmanr(resolved_ranks(first[where]),
                                    resolved_ranks(second[where])).statistic)
    return np.asarray(values, dtype=float)


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """The mean of per-task figures and its standard error over tasks (NaN where there are
    too few tasks): how far the figure moves with the task set's draw of tasks and subsets."""
    mean = float(values.mean()) if len(values) else float("nan")
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return mean, se


def within_task_spearman(first: np.ndarray, second: np.ndarray, tasks: np.ndarray) -> float:
    """The mean of :func:`task_spearmans` over tasks. NaN when no task's values vary: a truth
    whose every subset model kept the same state ranks nothing."""
    return mean_and_se(task_spearmans(first, second, tasks))[0]


ROOM_FIGURES = ("composition_effect", "seed_effect", "selection_gain")
"""The figures of :func:`room_for_grouping` (``true_``-prefixed in the error report)."""


def room_for_grouping(first: np.ndarray, second: np.ndarray, tasks: np.ndarray) -> dict:
    """How far the choice of a task's subset moves its true figure (its loss, or 1 − AP),
    from two training seeds of the truth over the same (S, i) pairs; medians over tasks with
    at least three subsets, each as a fraction of the task's mean figure.

    A one-way variance-components split (the intraclass decomposition behind test-retest
    reliability), per task over its subsets s with figures a_s, b_s under the two seeds:
    ``composition_effect`` = √max(cov_s(a, b), 0), the standard deviation that repeats between
    seeds; ``seed_effect`` = √(var_s(a − b) / 2), what one seed adds. ``selection_gain``: the
    figure saved by taking the subset that is best under one seed, measured under the other
    (mean_s b − b at argmin a, and the same with the seeds swapped, averaged) — what an oracle
    that knows each task's best subset could gain, free of the winner's curse. Both near zero:
    no grouping can be told apart from random groups on this task set, whatever the
    estimator."""
    composition, seed, gain = [], [], []
    for task in np.unique(tasks):
        where = tasks == task
        if where.sum() < 3:
            continue
        a, b = first[where], second[where]
        scale = float(np.mean((a + b) / 2))
        if scale <= 0:
            continue
        composition.append(np.sqrt(max(float(np.cov(a, b)[0, 1]), 0.0)) / scale)
        seed.append(np.sqrt(np.var(a - b, ddof=1) / 2) / scale)
        gain.append((b.mean() - b[np.argmin(a)] + a.mean() - a[np.argmin(b)]) / 2 / scale)
    if not composition:
        return dict.fromkeys(ROOM_FIGURES, float("nan"))
    return dict(zip(ROOM_FIGURES, (float(np.median(values))
                                   for values in (composition, seed, gain))))


def error_report(estimate: np.ndarray, truth: np.ndarray, base: np.ndarray, tasks: np.ndarray,
                 truth_repeat: np.ndarray | None = None) -> dict:
    """Figures over shared (S, i) pairs, given as flat arrays of equal length.

    ``base`` is the base model's own validation loss of each pair's task (the no-fine-tuning
    predictor); ``truth_repeat`` a second true fine-tuning with another seed (noise floor),
    NaN on pairs that were fine-tuned once only.
    """
    task_mean = np.array([truth[tasks == task].mean() for task in tasks])
    # Relative figures over pairs with a nonzero denominator (a loss always has one; 1 − AP
    # is 0 where a task is ranked perfectly).
    nonzero = truth != 0
    relative = np.abs(estimate - truth)[nonzero] / np.abs(truth[nonzero])
    report = {
        "num_pairs": int(len(truth)),
        "relative_distance": relative_distance(estimate, truth),
        "mean_relative_error": float(relative.mean()),
        "median_relative_error": float(np.median(relative)),
        "spearman": float(spearmanr(estimate, truth).statistic),
        "base_relative_distance": relative_distance(base, truth),
        "task_mean_relative_distance": relative_distance(task_mean, truth),
        "mean_change": mean_relative_change(estimate, base),
        "mean_true_change": mean_relative_change(truth, base),
    }
    report["within_task_spearman"], report["within_task_spearman_se"] = mean_and_se(
        task_spearmans(estimate, truth, tasks))
    report["true_noise_floor"] = report["true_noise_floor_se"] = float("nan")
    room = dict.fromkeys(ROOM_FIGURES, float("nan"))
    if truth_repeat is not None:
        repeated = np.isfinite(truth_repeat)
        pairs = truth[repeated], truth_repeat[repeated], tasks[repeated]
        report["true_noise_floor"], report["true_noise_floor_se"] = mean_and_se(
            task_spearmans(*pairs))
        room = room_for_grouping(*pairs)
    report.update((f"true_{key}", value) for key, value in room.items())
    return report
