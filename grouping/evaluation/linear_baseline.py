"""The baseline a practitioner tries first for many binary tasks: one logistic regression per
task on the task set's own input features (scikit-learn), class-balanced, its L2 strength
chosen on the validation split and its F1 threshold on validation F1 (as every compared model's
is, :func:`grouping.evaluation.metrics.task_metrics`). Trained on training rows only."""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from grouping.evaluation.metrics import task_metrics
from grouping.tasksets import TRAIN, VAL, TaskSet

INVERSE_L2_GRID = (0.01, 0.1, 1.0, 10.0)


def _fit_task(features: np.ndarray, labels: np.ndarray, train: np.ndarray,
              val: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Scores of every row for one task and the chosen C (None: constant scores, when the
    training rows hold one class only)."""
    if labels[train].min() == labels[train].max():
        return np.full(len(features), float(labels[train][0])), None
    best, best_score, best_c = None, -np.inf, None
    for inverse_l2 in INVERSE_L2_GRID:
        model = LogisticRegression(C=inverse_l2, class_weight="balanced", max_iter=500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], labels[train])
        scores = model.decision_function(features)
        score = (average_precision_score(labels[val], scores[val]) if labels[val].any()
                 else -float(inverse_l2 != 1.0))
        if score > best_score:
            best, best_score, best_c = scores, score, inverse_l2
    return best, best_c


def per_task_linear(taskset: TaskSet, tasks: np.ndarray | None = None) -> dict:
    """Per-task test metrics of one logistic regression per task (C from
    :data:`INVERSE_L2_GRID` by validation average precision; C = 1 for a task with no
    validation positive), the chosen C of each task and the wall time."""
    start = time.perf_counter()
    tasks = np.arange(taskset.num_tasks) if tasks is None else np.asarray(tasks)
    features = np.asarray(taskset.features, dtype=np.float64)
    train, val = taskset.indices(TRAIN), taskset.indices(VAL)
    scores, chosen = np.zeros((len(features), len(tasks))), []
    for column, task in enumerate(tasks):
        scores[:, column], inverse_l2 = _fit_task(features, taskset.labels[:, task], train, val)
        chosen.append(inverse_l2)
    return {"tasks": task_metrics(taskset, scores, tasks), "inverse_l2": chosen,
            "seconds": time.perf_counter() - start}
