"""The batched surrogate solver against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate import (
    fit_logistic_offset,
    pad_problems,
    subset_losses,
    weighted_task_losses,
)


def _problem(rng: np.random.Generator, rows: int, dim: int, offset_scale: float = 0.0):
    features = rng.normal(size=(rows, dim))
    truth = rng.normal(size=dim)
    offset = offset_scale * rng.normal(size=rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(features @ truth + offset)))).astype(float)
    return features, offset, labels, np.ones(rows)


def test_matches_sklearn_without_offset():
    rng = np.random.default_rng(0)
    problems = [_problem(rng, rows, 12) for rows in (300, 250, 400)]
    l2 = 0.05
    fitted = fit_logistic_offset(pad_problems(problems), l2, tolerance=1e-12).numpy()
    for (features, _, labels, weights), coefficients in zip(problems, fitted):
        reference = LogisticRegression(C=1 / (2 * l2 * weights.sum()), fit_intercept=False,
                                       tol=1e-12, max_iter=10_000).fit(features, labels).coef_[0]
        assert np.allclose(coefficients, reference, rtol=1e-3, atol=1e-6 * np.abs(reference).max())


def test_matches_scipy_with_offset_and_weights():
    rng = np.random.default_rng(1)
    features, offset, labels, _ = _problem(rng, 500, 8, offset_scale=2.0)
    weights = rng.uniform(0.5, 3.0, size=500)
    l2 = 0.01

    def objective(w):
        logits = offset + features @ w
        losses = np.logaddexp(0, logits) - labels * logits
        return weights @ losses / weights.sum() + l2 * w @ w

    reference = minimize(objective, np.zeros(8), method="L-BFGS-B",
                         options={"gtol": 1e-12, "ftol": 1e-15}).x
    fitted = fit_logistic_offset(pad_problems([(features, offset, labels, weights)]), l2,
                                 tolerance=1e-12)[0].numpy()
    assert np.allclose(fitted, reference, rtol=1e-4, atol=1e-6)


def test_padding_does_not_change_a_solution():
    rng = np.random.default_rng(2)
    short, long = _problem(rng, 50, 6), _problem(rng, 400, 6)
    alone = fit_logistic_offset(pad_problems([short]), 0.1)[0]
    batched = fit_logistic_offset(pad_problems([short, long]), 0.1)[0]
    assert torch.allclose(alone, batched, atol=1e-9)


def test_subset_losses_are_validation_losses_of_each_task():
    rng = np.random.default_rng(3)
    num_tasks, per_split, dim = 4, 60, 5
    tasks = np.repeat(np.arange(num_tasks), 2 * per_split)
    split = np.tile(np.repeat([0, 1], per_split), num_tasks).astype(np.int8)
    labels = rng.integers(0, 2, len(tasks)).astype(np.float32)
    offsets = np.stack([np.arange(num_tasks) * 2 * per_split,
                        np.arange(num_tasks) * 2 * per_split + per_split,
                        (np.arange(num_tasks) + 1) * 2 * per_split], axis=1)
    rows = RowTable(np.arange(len(tasks)), tasks, split, labels,
                    np.ones(len(tasks), np.float32), offsets)
    f0 = rng.normal(size=len(tasks))
    gradients = rng.normal(size=(len(tasks), dim))
    subset = np.array([[0, 2]])
    losses = subset_losses(subset, rows, f0, gradients, l2=0.1)
    train = rows.rows_of(subset[0], 0)
    weights = fit_logistic_offset(pad_problems([(gradients[train], f0[train], labels[train],
                                                 np.ones(len(train)))]), 0.1)[0].numpy()
    for position, task in enumerate(subset[0]):
        val = np.arange(offsets[task, 1], offsets[task, 2])
        expected = weighted_task_losses(f0[val] + gradients[val] @ weights, labels[val],
                                        np.ones(len(val)), [slice(0, len(val))])[0]
        assert losses[0, position] == pytest.approx(expected, rel=1e-9)
