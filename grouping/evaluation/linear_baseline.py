"""The baseline a practitioner tries first for many binary tasks: one logistic regression per
task on the task set's own input features (:mod:`grouping.models.per_task_linear`: trained on
training rows, class-balanced, C chosen on validation AP), its F1 threshold on validation F1
as every compared model's is (:func:`grouping.evaluation.metrics.task_metrics`)."""

from __future__ import annotations

import time

import numpy as np

from grouping.evaluation.metrics import task_metrics
from grouping.models.per_task_linear import PerTaskLinear, fit_per_task_linear
from grouping.tasksets import TaskSet


def per_task_linear(taskset: TaskSet, tasks: np.ndarray | None = None,
                    fit: PerTaskLinear | None = None, fit_seconds: float | None = None) -> dict:
    """Per-task test metrics of one logistic regression per task of ``tasks`` (default: all),
    the chosen C of each task (None: one training class only) and the seconds of the fit.
    ``fit``: the regressions of those tasks when already fitted (in ``fit_seconds``)."""
    start = time.perf_counter()
    tasks = np.arange(taskset.num_tasks) if tasks is None else np.asarray(tasks)
    fit = fit_per_task_linear(taskset, tasks) if fit is None else fit
    seconds = time.perf_counter() - start if fit_seconds is None else fit_seconds
    return {"tasks": task_metrics(taskset, fit.logits(taskset.features), tasks),
            "inverse_l2": [None if np.isnan(value) else float(value)
                           for value in fit.inverse_l2],
            "seconds": seconds}
