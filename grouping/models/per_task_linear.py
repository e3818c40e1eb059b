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
OWN_WEIGHT_GRID = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Weights of a task's own column (standardised) tried beside each C, on validation AP."""
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


def fit_task(features: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray,
             own: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """(weight [F], intercept, C) of one task: each C of :data:`INVERSE_L2_GRID` fitted on the
    training rows, the one of highest validation AP kept (C = 1 when the validation rows hold
    no positive). A task whose training rows hold one class gets a zero weight and the
    log-odds of its training labels with half a pseudo-count per class.

    ``own`` ([n], the task's own column, e.g. its propagated training labels): its weight is
    not fitted on the training rows but chosen with C on validation AP from
    :data:`OWN_WEIGHT_GRID`, and appended to the weight (F + 1 entries). A training row's own
    column is built without its own label and so from fewer of the task's positives than a
    held-out row's (a rare label's training positives see one or two others); a weight
    fitted there would under-rate the column on every held-out row. Among settings of equal
    validation AP the largest own weight is kept."""
    train_labels = labels[train]
    own_weights = (0.0,) if own is None else OWN_WEIGHT_GRID
    width = features.shape[1] + (own is not None)
    if train_labels.min() == train_labels.max():
        positives = float(train_labels.sum())
        log_odds = np.log((positives + 0.5) / (len(train_labels) - positives + 0.5))
        return np.zeros(width), float(log_odds), float("nan")
    best: tuple[np.ndarray, float, float] | None = None
    best_score, best_own_weight = -np.inf, 0.0
    for inverse_l2 in INVERSE_L2_GRID:
        model = LogisticRegression(C=inverse_l2, class_weight="balanced",
                                   max_iter=MAX_ITERATIONS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], train_labels)
        decision = model.decision_function(features[val])
        for own_weight in own_weights:
            scores = decision if own is None else decision + own_weight * own[val]
            score = (average_precision_score(labels[val], scores) if labels[val].any()
                     else -float(inverse_l2 != 1.0) - float(own_weight != 0.0))
            # on a tie (AP 1 is common with a handful of validation positives) the larger
            # own weight wins: the column was not fitted to the training rows
            if score > best_score or (score == best_score and own_weight > best_own_weight):
                best_score, best_own_weight = score, own_weight
                weight = model.coef_[0].copy()
                best = (weight if own is None else np.append(weight, own_weight),
                        float(model.intercept_[0]), inverse_l2)
    assert best is not None
    return best


def fit_per_task_linear(taskset: TaskSet, tasks: np.ndarray | list[int] | None = None
                        ) -> PerTaskLinear:
    """One logistic regression per task of ``tasks`` (default: all), in that order, on the
    columns the task reads (:meth:`TaskSet.columns_of`: all, or the shared ones, fitted, and
    its own, weighted on validation: :func:`fit_task`); a column it does not read gets
    weight 0."""
    tasks = np.arange(taskset.num_tasks) if tasks is None else np.asarray(tasks)
    features = np.asarray(taskset.features, dtype=np.float64)
    train, val = taskset.indices(TRAIN), taskset.indices(VAL)
    weights = np.zeros((len(tasks), features.shape[1]))
    intercepts, inverse_l2 = np.zeros(len(tasks)), np.zeros(len(tasks))
    shared = None if taskset.own_columns is None else features[:, taskset.shared_columns]
    for index, task in enumerate(tasks):
        weights[index, taskset.columns_of(task)], intercepts[index], inverse_l2[index] = (
            fit_task(features, taskset.labels[:, task], train, val) if shared is None else
            fit_task(shared, taskset.labels[:, task], train, val,
                     features[:, taskset.own_columns[task]]))
    return PerTaskLinear(weights, intercepts, inverse_l2)
