"""Linear surrogate of fine-tuning on a task subset (Grad-TAG, Sec. 3.2, with an offset).

For subset S, fit logistic regression on the stacked training rows of S's tasks with the base
logit as an offset: p = σ(f0 + gᵀw), minimising the weighted mean cross-entropy plus λ‖w‖².
Then f̂(S, i) is the weighted mean validation cross-entropy of task i under f0 + gᵀw_S.
Many subsets are solved at once by a batched, damped Newton method in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import softplus


@dataclass(frozen=True)
class SurrogateBatch:
    """B padded problems: features [B, n, d], offset/label/weight [B, n] (weight 0 = padding)."""

    features: torch.Tensor
    offset: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor


def pad_problems(problems: list[tuple[np.ndarray, ...]], dtype=torch.float64) -> SurrogateBatch:
    """Stack (features, offset, label, weight) problems of different lengths, zero-padded."""
    longest = max(len(problem[1]) for problem in problems)
    dim = problems[0][0].shape[1]
    features = torch.zeros(len(problems), longest, dim, dtype=dtype)
    offset, label, weight = (torch.zeros(len(problems), longest, dtype=dtype) for _ in range(3))
    for index, (g, f0, y, omega) in enumerate(problems):
        count = len(f0)
        features[index, :count] = torch.from_numpy(np.asarray(g)).to(dtype)
        offset[index, :count] = torch.from_numpy(np.asarray(f0)).to(dtype)
        label[index, :count] = torch.from_numpy(np.asarray(y)).to(dtype)
        weight[index, :count] = torch.from_numpy(np.asarray(omega)).to(dtype)
    return SurrogateBatch(features, offset, label, weight)


def _objective(batch: SurrogateBatch, w: torch.Tensor, l2: float) -> torch.Tensor:
    logits = batch.offset + torch.einsum("bnd,bd->bn", batch.features, w)
    losses = softplus(logits) - batch.label * logits
    return (batch.weight * losses).sum(1) / batch.weight.sum(1) + l2 * (w * w).sum(1)


def fit_logistic_offset(batch: SurrogateBatch, l2: float, max_iterations: int = 50,
                        tolerance: float = 1e-8) -> torch.Tensor:
    """Minimise Σ ω ℓ(f0 + gᵀw, y) / Σ ω + λ‖w‖² for every problem in the batch: [B, d].

    Newton steps with backtracking (Armijo) per problem; stops when every gradient's
    largest entry is below ``tolerance``. Equals scikit-learn's LogisticRegression without
    intercept at C = 1 / (2 λ Σ ω) when the offset is zero.
    """
    features, weight = batch.features, batch.weight
    total = weight.sum(1, keepdim=True)
    num, dim = features.shape[0], features.shape[2]
    w = torch.zeros(num, dim, dtype=features.dtype)
    eye = torch.eye(dim, dtype=features.dtype)
    current = _objective(batch, w, l2)
    for _ in range(max_iterations):
        logits = batch.offset + torch.einsum("bnd,bd->bn", features, w)
        prob = torch.sigmoid(logits)
        gradient = torch.einsum("bnd,bn->bd", features, weight * (prob - batch.label) / total)
        gradient = gradient + 2 * l2 * w
        if float(gradient.abs().max()) < tolerance:
            break
        curvature = weight * prob * (1 - prob) / total
        hessian = torch.einsum("bnd,bne->bde", features * curvature.unsqueeze(2), features)
        factor = torch.linalg.cholesky(hessian + 2 * l2 * eye)
        step = torch.cholesky_solve(gradient.unsqueeze(2), factor).squeeze(2)
        decrease = (gradient * step).sum(1)
        size = torch.ones(num, dtype=features.dtype)
        for _ in range(30):
            candidate = _objective(batch, w - size.unsqueeze(1) * step, l2)
            accepted = candidate <= current - 1e-4 * size * decrease
            if bool(accepted.all()):
                break
            size = torch.where(accepted, size, size / 2)
        w = w - size.unsqueeze(1) * step
        current = _objective(batch, w, l2)
    return w


def weighted_task_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         segments: list[slice]) -> np.ndarray:
    """Weighted mean binary cross-entropy of each row segment (one segment per task)."""
    losses = np.logaddexp(0.0, logits) - labels * logits
    return np.array([np.average(losses[s], weights=weights[s]) for s in segments])


def subset_losses(subsets: np.ndarray, rows, f0: np.ndarray, gradients: np.ndarray, l2: float,
                  max_iterations: int = 50, tolerance: float = 1e-8) -> np.ndarray:
    """f̂(S, i) for a batch of subsets [b, s] → [b, s], fitted in one batched solve.

    ``rows`` is the :class:`~grouping.affinity.rows.RowTable`; ``f0`` [R] and ``gradients``
    [R, d] are its base logits and projected gradients (any array supporting fancy indexing,
    memory maps included).
    """
    problems = []
    for subset in subsets:
        index = rows.rows_of(subset, 0)
        problems.append((gradients[index], f0[index], rows.label[index], rows.weight[index]))
    weights = fit_logistic_offset(pad_problems(problems), l2, max_iterations, tolerance).numpy()
    losses = np.zeros(subsets.shape)
    for number, subset in enumerate(subsets):
        index = rows.rows_of(subset, 1)
        logits = f0[index] + gradients[index].astype(np.float64) @ weights[number]
        lengths = rows.offsets[subset, 2] - rows.offsets[subset, 1]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        segments = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        losses[number] = weighted_task_losses(logits, rows.label[index], rows.weight[index],
                                              segments)
    return losses
