"""Figures of the report (matplotlib, written as PNG)."""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def affinity_heatmap(affinity: np.ndarray, groups: list[list[int]],
                     group_names: list[list[str]] | None = None,
                     max_named: int = 40) -> bytes:
    """T with tasks ordered by group, group boundaries drawn; the axes carry the task names
    (up to ``max_named`` tasks), or else each group's number at its centre."""
    order = [task for group in groups for task in group]
    size = min(12.0, max(6.0, 0.22 * len(order)))
    figure, axis = plt.subplots(figsize=(size + 1, size))
    limit = float(np.abs(affinity).max()) or 1.0
    image = axis.imshow(affinity[np.ix_(order, order)], cmap="RdBu_r", vmin=-limit, vmax=limit)
    edge = -0.5
    for group in groups[:-1]:
        edge += len(group)
        axis.axhline(edge, color="black", linewidth=0.8)
        axis.axvline(edge, color="black", linewidth=0.8)
    if group_names is not None and len(order) <= max_named:
        names = [name for group in group_names for name in group]
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xlabel("task (ordered by group)")
    else:
        starts = np.cumsum([0, *[len(group) for group in groups[:-1]]])
        centres = [start + (len(group) - 1) / 2 for start, group in zip(starts, groups)]
        labels = [f"g{number}" for number in range(len(groups))]
        axis.set_xticks(centres, labels, fontsize=7)
        axis.set_yticks(centres, labels, fontsize=7)
        axis.set_xlabel("group")
    axis.set_title("Task affinity T, ordered by group (red: tasks that help each other)")
    figure.colorbar(image, ax=axis, shrink=0.8)
    return _png(figure)


def comparison_bars(summary: list[dict], metric: str, label: Callable[[dict], str]) -> bytes:
    """Mean and worst-task primary test metric per grouping (rows named by ``label``), with
    the standard error over seeds as error bars (only on rows with several seeds; clipped to
    the metric's range [0, 1])."""
    labels = [label(line) for line in summary]
    positions = np.arange(len(summary))
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(summary)), 4))
    primary = summary[0]["metric"]
    for offset, key, name in ((-0.2, f"mean_{primary}", f"mean {metric}"),
                              (0.2, f"worst_{primary}", f"worst-task {metric}")):
        values = np.array([line[key] for line in summary])
        errors = np.array([line.get(f"{key}_se") or 0.0 for line in summary])
        axis.bar(positions + offset, values, 0.4, label=name)
        spread = errors > 0
        if spread.any():
            below, above = np.minimum(errors, values), np.minimum(errors, 1 - values)
            axis.errorbar(positions[spread] + offset, values[spread],
                          yerr=[below[spread], above[spread]], fmt="none", ecolor="black",
                          capsize=3)
    axis.set_xticks(positions, labels, rotation=25, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel(metric)
    axis.set_title("Groupings compared (error bars: standard error over seeds)")
    axis.legend()
    return _png(figure)


def estimate_scatter(estimate: np.ndarray, truth: np.ndarray, base: np.ndarray,
                     tasks: np.ndarray) -> bytes:
    """Left: f̂(S, i) and the base-loss predictor against the true f(S, i) (pooled; loss
    levels dominate it). Right: within-task deviations, f − mean_i(f) against f̂ − mean_i(f̂)
    over each task's subsets: the ranking grouping depends on."""
    figure, (pooled, within) = plt.subplots(1, 2, figsize=(10, 5))
    pooled.scatter(truth, base, s=8, alpha=0.5, color="tab:gray",
                   label="base loss (no training)")
    pooled.scatter(truth, estimate, s=8, alpha=0.7, label="estimate f̂")
    low, high = float(min(truth.min(), estimate.min())), float(max(truth.max(), estimate.max()))
    pooled.plot([low, high], [low, high], color="black", linewidth=0.8)
    pooled.set_xlabel("true validation loss f(S, i)")
    pooled.set_ylabel("predicted validation loss")
    pooled.set_title("Pooled")
    pooled.legend()

    def centred(values: np.ndarray) -> np.ndarray:
        means = {task: values[tasks == task].mean() for task in np.unique(tasks)}
        return values - np.array([means[task] for task in tasks])

    within.scatter(centred(truth), centred(estimate), s=8, alpha=0.7)
    within.axhline(0, color="black", linewidth=0.5)
    within.axvline(0, color="black", linewidth=0.5)
    within.set_xlabel("f − task mean of f")
    within.set_ylabel("f̂ − task mean of f̂")
    within.set_title("Within each task")
    figure.tight_layout()
    return _png(figure)


def dominance_bars(lines: list[dict], label: Callable[[dict], str]) -> bytes:
    """Dominance fraction per shared layer for each (grouping, optimizer) line (named by
    ``label``)."""
    layers = list(lines[0]["dominance"])
    positions = np.arange(len(layers))
    width = 0.8 / len(lines)
    figure, axis = plt.subplots(figsize=(max(5, 1.5 * len(layers)), 4))
    for number, line in enumerate(lines):
        axis.bar(positions + (number - (len(lines) - 1) / 2) * width,
                 [line["dominance"][layer] for layer in layers], width,
                 label=label(line))
    axis.set_xticks(positions, layers, rotation=20, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction of parameters one task dominates")
    axis.set_title("Task dominance per shared layer")
    axis.legend()
    return _png(figure)
