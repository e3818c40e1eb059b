"""Figures of the report (matplotlib, written as PNG)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def affinity_heatmap(affinity: np.ndarray, groups: list[list[int]]) -> bytes:
    """T with tasks ordered by group, group boundaries drawn."""
    order = [task for group in groups for task in group]
    figure, axis = plt.subplots(figsize=(6, 5))
    limit = float(np.abs(affinity).max()) or 1.0
    image = axis.imshow(affinity[np.ix_(order, order)], cmap="RdBu_r", vmin=-limit, vmax=limit)
    edge = -0.5
    for group in groups[:-1]:
        edge += len(group)
        axis.axhline(edge, color="black", linewidth=0.8)
        axis.axvline(edge, color="black", linewidth=0.8)
    axis.set_title("Task affinity T, ordered by group")
    axis.set_xlabel("task (by group)")
    axis.set_ylabel("task (by group)")
    figure.colorbar(image, ax=axis, shrink=0.8)
    return _png(figure)


def comparison_bars(summary: list[dict], metric: str = "test F1") -> bytes:
    """Mean and worst-task primary test metric per grouping, with the seed spread as error
    bars."""
    labels = [f"{line['grouping']} ({line['optimizer']})" for line in summary]
    positions = np.arange(len(summary))
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(summary)), 4))
    primary = summary[0]["metric"]
    for offset, key, name in ((-0.2, f"mean_{primary}", f"mean {metric}"),
                              (0.2, f"worst_{primary}", f"worst-task {metric}")):
        errors = [line[f"{key}_std"] or 0.0 for line in summary]
        axis.bar(positions + offset, [line[key] for line in summary], 0.4, yerr=errors,
                 capsize=3, label=name)
    axis.set_xticks(positions, labels, rotation=20, ha="right")
    axis.set_ylabel(metric)
    axis.set_title("Groupings compared (error bars: std over seeds)")
    axis.legend()
    return _png(figure)


def estimate_scatter(estimate: np.ndarray, truth: np.ndarray, base: np.ndarray) -> bytes:
    """f̂(S, i) and the base-loss predictor against true fine-tuning f(S, i)."""
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(truth, base, s=8, alpha=0.5, color="tab:gray", label="base loss (no fine-tuning)")
    axis.scatter(truth, estimate, s=8, alpha=0.7, label="Grad-TAG estimate f̂")
    low, high = float(min(truth.min(), estimate.min())), float(max(truth.max(), estimate.max()))
    axis.plot([low, high], [low, high], color="black", linewidth=0.8)
    axis.set_xlabel("true validation loss f(S, i)")
    axis.set_ylabel("predicted validation loss")
    axis.set_title("Estimated vs true subset losses")
    axis.legend()
    return _png(figure)


def dominance_bars(lines: list[dict]) -> bytes:
    """Dominance fraction per shared layer for each (grouping, optimizer) line."""
    layers = list(lines[0]["dominance"])
    positions = np.arange(len(layers))
    width = 0.8 / len(lines)
    figure, axis = plt.subplots(figsize=(max(5, 1.5 * len(layers)), 4))
    for number, line in enumerate(lines):
        axis.bar(positions + (number - (len(lines) - 1) / 2) * width,
                 [line["dominance"][layer] for layer in layers], width,
                 label=f"{line['grouping']} ({line['optimizer']})")
    axis.set_xticks(positions, layers, rotation=20, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction of parameters one task dominates")
    axis.set_title("Task dominance per shared layer")
    axis.legend()
    return _png(figure)
