"""Per-task test metrics: F1 at a threshold chosen on validation, and average precision."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from grouping.tasksets import TEST, VAL, TaskSet


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on (validation) labels; +inf without positives."""
    if labels.sum() == 0:
        return float("inf")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    predicted = scores >= threshold
    true_positive = float((predicted & (labels == 1)).sum())
    denominator = float(predicted.sum() + labels.sum())
    return 2 * true_positive / denominator if denominator > 0 else 0.0


def task_metrics(taskset: TaskSet, logits: np.ndarray, columns: np.ndarray) -> list[dict]:
    """Test F1 (threshold tuned on validation F1) and test AP of each head.

    ``logits`` is [n, len(columns)]; head k scores label column ``columns[k]``. AP is NaN for
    a task with no positive test example.
    """
    val, test = taskset.indices(VAL), taskset.indices(TEST)
    rows = []
    for head, column in enumerate(columns):
        labels = taskset.labels[:, column]
        threshold = best_f1_threshold(labels[val], logits[val, head])
        test_labels, test_scores = labels[test], logits[test, head]
        has_positive = test_labels.sum() > 0
        rows.append({
            "task": int(column),
            "test_f1": f1_at(test_labels, test_scores, threshold),
            "test_ap": float(average_precision_score(test_labels, test_scores))
            if has_positive else float("nan"),
        })
    return rows
