"""Rows of comparison.json: one per trained grouping (and seed, for random groups) and
optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    """A grouping to train: its name, groups, the seconds its search took, and the seed of
    random groups."""

    name: str
    groups: list[list[int]]
    search_seconds: float = 0.0
    seed: int | None = None


def mean_dominance(results: list[dict]) -> dict[str, float] | None:
    """Per shared layer, the dominance fraction averaged over the models of three or more
    tasks (one task always dominates its own model, and of two tasks one almost always holds
    more than half)."""
    tracked = [result["dominance"] for result in results
               if result.get("dominance") and len(result["tasks"]) > 2]
    if not tracked:
        return None
    return {layer: float(np.mean([dominance[layer] for dominance in tracked]))
            for layer in tracked[0]}


METRIC_LABELS = {"test_f1": "test F1", "test_ap": "test AP",
                 "test_exact_match": "test exact match",
                 "test_token_accuracy": "test token accuracy"}


def metric_names(task: dict) -> tuple[str, str]:
    """The (primary, secondary) test metrics of a task's metrics: F1 and average precision
    for binary tasks, exact match and token accuracy for instruction tasks."""
    if "test_exact_match" in task:
        return "test_exact_match", "test_token_accuracy"
    return "test_f1", "test_ap"


def summary_keys(line: dict) -> tuple[str, str, str]:
    """The mean-primary, worst-primary and mean-secondary keys of a comparison row."""
    return (f"mean_{line['metric']}", f"worst_{line['metric']}",
            f"mean_{line['secondary_metric']}")


def comparison_row(plan: Plan, results: list[dict], optimizer: str) -> dict:
    """Mean and worst per-task primary test metric (F1, or exact match for instruction
    tasks), mean secondary metric (AP over tasks with a positive test example, or token
    accuracy), cost (the grouping search plus the summed wall time of its models' training)
    and, when tracked, the dominance fraction per shared layer."""
    tasks = [task for result in results for task in result["tasks"]]
    primary, secondary = metric_names(tasks[0])
    scores = np.array([task[primary] for task in tasks])
    others = np.array([task[secondary] for task in tasks])
    train_seconds = float(sum(result["seconds"] for result in results))
    return {"grouping": plan.name, "optimizer": optimizer, "num_groups": len(plan.groups),
            "seed": plan.seed, "metric": primary, "secondary_metric": secondary,
            f"mean_{primary}": float(scores.mean()), f"worst_{primary}": float(scores.min()),
            f"mean_{secondary}": float(np.nanmean(others)) if np.isfinite(others).any()
            else float("nan"),
            "search_seconds": float(plan.search_seconds), "train_seconds": train_seconds,
            "seconds": float(plan.search_seconds) + train_seconds,
            "lrs": sorted({result["lr"] for result in results if "lr" in result}),
            "dominance": mean_dominance(results)}


def summarize_rows(rows: list[dict]) -> list[dict]:
    """One line per grouping and optimizer: several seeds give mean and standard deviation."""
    summary = []
    for grouping, optimizer in dict.fromkeys((row["grouping"], row["optimizer"])
                                             for row in rows):
        mine = [row for row in rows
                if row["grouping"] == grouping and row["optimizer"] == optimizer]
        line = {"grouping": grouping, "optimizer": optimizer,
                "num_groups": mine[0]["num_groups"], "runs": len(mine),
                "dominance": mine[0].get("dominance"), "metric": mine[0]["metric"],
                "secondary_metric": mine[0]["secondary_metric"]}
        for key in (*summary_keys(mine[0]), "seconds"):
            values = np.array([row[key] for row in mine], dtype=float)
            line[key] = float(values.mean())
            line[f"{key}_std"] = float(values.std()) if len(mine) > 1 else None
        summary.append(line)
    return summary
