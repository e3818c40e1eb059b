"""Rows of comparison.json: one per trained grouping (and seed, for random groups)."""

from __future__ import annotations

import numpy as np


def comparison_row(grouping: str, groups: list[list[int]], results: list[dict],
                   search_seconds: float = 0.0, seed: int | None = None,
                   optimizer: str = "adam") -> dict:
    """Mean and worst per-task test F1, mean test AP (tasks with a positive test example),
    and cost: the grouping search plus the training of its models (summed wall time)."""
    tasks = [task for result in results for task in result["tasks"]]
    f1 = np.array([task["test_f1"] for task in tasks])
    ap = np.array([task["test_ap"] for task in tasks])
    train_seconds = float(sum(result["seconds"] for result in results))
    return {"grouping": grouping, "optimizer": optimizer, "num_groups": len(groups),
            "seed": seed, "mean_test_f1": float(f1.mean()), "worst_test_f1": float(f1.min()),
            "mean_test_ap": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
            "search_seconds": float(search_seconds), "train_seconds": train_seconds,
            "seconds": float(search_seconds) + train_seconds}


def summarize_rows(rows: list[dict]) -> list[dict]:
    """One line per grouping: groupings with several seeds get mean and standard deviation."""
    summary = []
    for grouping in dict.fromkeys(row["grouping"] for row in rows):
        mine = [row for row in rows if row["grouping"] == grouping]
        line = {"grouping": grouping, "optimizer": mine[0]["optimizer"],
                "num_groups": mine[0]["num_groups"], "runs": len(mine)}
        for key in ("mean_test_f1", "worst_test_f1", "mean_test_ap", "seconds"):
            values = np.array([row[key] for row in mine], dtype=float)
            line[key] = float(values.mean())
            line[f"{key}_std"] = float(values.std()) if len(mine) > 1 else None
        summary.append(line)
    return summary
