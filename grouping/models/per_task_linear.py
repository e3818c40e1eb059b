"""One logistic regression per task on a task set's input features (scikit-learn), fitted on
the training rows, class-balanced, its inverse L2 strength C chosen per task on validation
average precision.

It is both the baseline a practitioner tries first (grouping.evaluation.linear_baseline) and
the starting point of a SIGN-MLP with a per-task skip (``model.skip_init: linear``,
:func:`grouping.models.sign_mlp.build_model`): the skip and each head's bias start at the
task's logistic regression, so training starts from the per-task linear model and the shared
trunk learns what it misses (a residual start, as in stacked generalisation: Wolpert,
"Stacked generalization", Neural Networks 1992).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from grouping.tasksets import TRAIN, VAL, TaskSet

INVERSE_L2_GRID = (0.01, 0.1, 1.0, 10.0)
MAX_ITERATIONS = 500


@dataclass(frozen=True)
class PerTaskLinear:
    """Task k's logit z_k(x) = weights[k]·x + intercepts[k]; ``inverse_l2[k]`` its chosen C
    (NaN: the training rows hold one class only, and the logit is that class's smoothed
    log-odds, a constant)."""

    weights: np.ndarray
    intercepts: np.ndarray
    inverse_l2: np.ndarray

    def select(self, tasks: np.ndarray | list[int]) -> PerTaskLinear:
        """The regressions of ``tasks``, in that order."""
        index = np.asarray(tasks)
        return PerTaskLinear(self.weights[index], self.intercepts[index], self.inverse_l2[index])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[n, F] → [n, tasks]."""
        return np.asarray(features, dtype=np.float64) @ self.weights.T + self.intercepts

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "intercepts": self.intercepts,
                "inverse_l2": self.inverse_l2}

    @classmethod
    def concatenate(cls, parts: list[PerTaskLinear]) -> PerTaskLinear:
        """The regressions of several task chunks, in order."""
        return cls(*(np.concatenate([getattr(part, name) for part in parts])
                     for name in ("weights", "intercepts", "inverse_l2")))


def fit_task(features: np.ndarray, labels: np.ndarray, train: np.ndarray,
             val: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(weight [F], intercept, C) of one task: each C of :data:`INVERSE_L2_GRID` fitted on the
    training rows, the one of highest validation AP kept (C = 1 when the validation rows hold
    no positive). A task whose training rows hold one class gets a zero weight and the
    log-odds of its training labels with half a pseudo-count per class."""
    train_labels = labels[train]
    if train_labels.min() == train_labels.max():
        positives = float(train_labels.sum())
        log_odds = np.log((positives + 0.5) / (len(train_labels) - positives + 0.5))
        return np.zeros(features.shape[1]), float(log_odds), float("nan")
    best: tuple[np.ndarray, float, float] | None = None
    best_score = -np.inf
    for inverse_l2 in INVERSE_L2_GRID:
        model = LogisticRegression(C=inverse_l2, class_weight="balanced",
                                   max_iter=MAX_ITERATIONS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], train_labels)
        score = (average_precision_score(labels[val], model.decision_function(features[val]))
                 if labels[val].any() else -float(inverse_l2 != 1.0))
        if score > best_score:
            best_score = score
            best = (model.coef_[0].copy(), float(model.intercept_[0]), inverse_l2)
    assert best is not None
    return best


def fit_per_task_linear(taskset: TaskSet, tasks: np.ndarray | list[int] | None = None
                        ) -> PerTaskLinear:
    """One logistic regression per task of ``tasks`` (default: all), in that order."""
    tasks = np.arange(taskset.num_tasks) if tasks is None else np.asarray(tasks)
    features = np.asarray(taskset.features, dtype=np.float64)
    train, val = taskset.indices(TRAIN), taskset.indices(VAL)
    fits = [fit_task(features, taskset.labels[:, task], train, val) for task in tasks]
    return PerTaskLinear(np.stack([fit[0] for fit in fits]).reshape(len(tasks), -1),
                         np.array([fit[1] for fit in fits]),
                         np.array([fit[2] for fit in fits]))
