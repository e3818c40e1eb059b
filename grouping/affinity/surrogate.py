"""Linear surrogate of fine-tuning on a task subset (Grad-TAG, Sec. 3.2, with an offset).

For subset S, fit logistic regression on the stacked training rows of S's tasks with the base
logit as an offset: p = σ(f0 + gᵀw), minimising the weighted mean cross-entropy plus λ‖w‖².
Then f̂(S, i) is the weighted mean validation cross-entropy of task i under f0 + gᵀw_S.

Many subsets are solved at once by a batched, damped Newton method. Each Newton system
(Gᵀ C G + 2λI) p = ∇ is solved by conjugate gradients with Hessian-vector products Gᵀ(C(Gv)),
never forming the d × d Hessian, and the step length is searched on the logits f0 + Gw, which
move along the already known G p: a Newton iteration costs one pass over the rows for the
gradient and two per conjugate-gradient iteration, each one batched matrix product. The
passes run in the features' dtype (float64, or float32 at half the memory traffic), the rest
in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import softplus

from grouping.tasksets import TRAIN, VAL

CPU_CHUNK_BYTES = 8 << 20
"""On the CPU, problems are solved in groups of at most this many bytes of features, so that
the repeated passes over a group's rows read from cache rather than from memory."""


@dataclass(frozen=True)
class SurrogateBatch:
    """B padded problems: features [B, n, d] in the dtype of the passes over the rows;
    offset/label/weight [B, n] in float64 (weight 0 = padding)."""

    features: torch.Tensor
    offset: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor

    def __getitem__(self, index: slice) -> SurrogateBatch:
        return SurrogateBatch(self.features[index], self.offset[index], self.label[index],
                              self.weight[index])


def pad_problems(problems: list[tuple[np.ndarray, ...]], dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> SurrogateBatch:
    """Stack (features, offset, label, weight) problems of different lengths, zero-padded,
    on ``device``, the features in ``dtype``. Built in numpy, which backs large arrays with
    huge pages: far fewer page faults than a fresh torch tensor of the same size."""
    longest = max(len(problem[1]) for problem in problems)
    dim = problems[0][0].shape[1]
    features = np.zeros((len(problems), longest, dim), torch.empty(0, dtype=dtype).numpy().dtype)
    columns = np.zeros((3, len(problems), longest))
    for index, (g, f0, y, omega) in enumerate(problems):
        features[index, :len(f0)] = g
        columns[:, index, :len(f0)] = f0, y, omega
    offset, label, weight = torch.from_numpy(columns).to(device)
    return SurrogateBatch(torch.from_numpy(features).to(device), offset, label, weight)


def _group_size(length: int, dim: int, dtype: torch.dtype, device: torch.device) -> int:
    """How many problems of ``length`` rows to solve together: on the CPU, as many as fit in
    :data:`CPU_CHUNK_BYTES`; on an accelerator, all of them."""
    if device.type != "cpu":
        return torch.iinfo(torch.int64).max
    return max(1, CPU_CHUNK_BYTES // (length * dim * torch.empty(0, dtype=dtype).element_size()))


def _forward(features: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """G v for every problem: [B, n, d], [B, d] → [B, n] in the dtype of ``vectors`` (as a
    row-vector product, which the CPU kernels run far faster than a matrix-vector one)."""
    rows = torch.bmm(vectors.to(features.dtype).unsqueeze(1), features.transpose(1, 2))
    return rows.squeeze(1).to(vectors.dtype)


def _backward(features: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
    """Gᵀ r for every problem: [B, n, d], [B, n] → [B, d] in the dtype of ``residuals``."""
    columns = torch.bmm(residuals.to(features.dtype).unsqueeze(1), features)
    return columns.squeeze(1).to(residuals.dtype)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1)


def _objective(logits: torch.Tensor, w: torch.Tensor, label: torch.Tensor, share: torch.Tensor,
               l2: float) -> torch.Tensor:
    """Σ ω ℓ(z, y) / Σ ω + λ‖w‖² of each problem, from its logits z = f0 + Gw."""
    return _dot(share, softplus(logits) - label * logits) + l2 * _dot(w, w)


def _newton_direction(features: torch.Tensor, curvature: torch.Tensor, gradient: torch.Tensor,
                      l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p ≈ (Gᵀ diag(c) G + 2λI)⁻¹ ∇ by conjugate gradients, and G p: ([B, d], [B, n]).

    Each problem stops once its residual is below η‖∇‖, η = min(1/5, √‖∇‖) (inexact Newton
    with a superlinear forcing sequence, Nocedal & Wright, Sec. 7.1), η at least the square
    root of the features' machine epsilon, in whose dtype the iterations run; exact after d
    iterations.
    """
    curvature, residual = curvature.to(features.dtype), gradient.to(features.dtype)
    step, moved = torch.zeros_like(residual), torch.zeros_like(curvature)
    direction = residual.clone()
    squared = _dot(residual, residual)
    target = torch.clamp(squared.sqrt(), torch.finfo(features.dtype).eps, 0.04) * squared
    for _ in range(gradient.shape[1]):
        running = squared > target
        if not bool(running.any()):
            break
        projected = _forward(features, direction)
        product = _backward(features, curvature * projected).add_(direction, alpha=2 * l2)
        alpha = torch.where(running, squared / _dot(direction, product), 0.0).unsqueeze(1)
        step.addcmul_(alpha, direction)
        moved.addcmul_(alpha, projected)
        residual.addcmul_(alpha, product, value=-1)
        previous, squared = squared, _dot(residual, residual)
        beta = torch.where(running, squared / previous, 0.0).unsqueeze(1)
        direction = residual.addcmul(beta, direction)
    return step.to(gradient.dtype), moved.to(gradient.dtype)


def _step_sizes(logits: torch.Tensor, w: torch.Tensor, step: torch.Tensor, moved: torch.Tensor,
                label: torch.Tensor, share: torch.Tensor, l2: float,
                current: torch.Tensor, decrease: torch.Tensor) -> torch.Tensor:
    """Armijo backtracking from the Newton step, per problem: the candidate logits are
    z − t G p, so each trial costs O(n), not a pass over the features."""
    size = torch.ones_like(current)
    for _ in range(30):
        candidate = _objective(logits - size.unsqueeze(1) * moved, w - size.unsqueeze(1) * step,
                               label, share, l2)
        accepted = candidate <= current - 1e-4 * size * decrease
        if bool(accepted.all()):
            break
        size = torch.where(accepted, size, size / 2)
    return size


def _resolution(features: torch.Tensor) -> torch.Tensor:
    """How exactly a pass computes the gradient Gᵀ(ω(σ(z) − y)/Σω) of each problem: [B].

    Its terms are at most max|G| · ω_i/Σω, which sum to max|G|, so its rounding error is
    about ε·max|G| for the features' machine epsilon ε: negligible in float64, near 1e-7
    in float32, where it replaces a smaller tolerance.
    """
    flat = features.flatten(1)
    return torch.finfo(features.dtype).eps * torch.maximum(flat.amax(1), -flat.amin(1))


def _fit_group(batch: SurrogateBatch, l2: float, max_iterations: int,
               tolerance: float) -> torch.Tensor:
    """Damped Newton on one group of problems; each stops at its own tolerance."""
    features, label = batch.features, batch.label
    share = batch.weight / batch.weight.sum(1, keepdim=True)
    threshold = torch.clamp(_resolution(features).to(share.dtype), min=tolerance)
    w = label.new_zeros(features.shape[0], features.shape[2])
    logits = batch.offset.clone()
    for _ in range(max_iterations):
        prob = torch.sigmoid(logits)
        gradient = _backward(features, share * (prob - label)) + 2 * l2 * w
        running = gradient.abs().amax(1) >= threshold
        if not bool(running.any()):
            break
        gradient = gradient * running.unsqueeze(1)
        step, moved = _newton_direction(features, share * prob * (1 - prob), gradient, l2)
        current = _objective(logits, w, label, share, l2)
        size = _step_sizes(logits, w, step, moved, label, share, l2, current,
                           _dot(gradient, step)).unsqueeze(1)
        w = w - size * step
        logits = logits - size * moved
    return w


def fit_logistic_offset(batch: SurrogateBatch, l2: float, max_iterations: int = 50,
                        tolerance: float = 1e-8) -> torch.Tensor:
    """Minimise Σ ω ℓ(f0 + gᵀw, y) / Σ ω + λ‖w‖² for every problem in the batch: [B, d].

    Up to ``max_iterations`` Newton steps (conjugate-gradient solves, Armijo backtracking)
    per problem; a problem stops when its gradient's largest entry is below ``tolerance``, so
    its solution does not depend on the other problems of the batch. Equals scikit-learn's
    LogisticRegression without intercept at C = 1 / (2 λ Σ ω) when the offset is zero.
    Runs on the batch's device, with the passes over the rows in the features' dtype and
    the rest in float64; a tolerance below the rounding error of those passes (about
    1e-7 · max|G| in float32) is raised to it.
    """
    size, length, dim = batch.features.shape
    group = _group_size(length, dim, batch.features.dtype, batch.features.device)
    return torch.cat([_fit_group(batch[start:start + group], l2, max_iterations, tolerance)
                      for start in range(0, size, group)])


def weighted_task_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         segments: list[slice]) -> np.ndarray:
    """Weighted mean binary cross-entropy of each row segment (one segment per task)."""
    losses = np.logaddexp(0.0, logits) - labels * logits
    return np.array([np.average(losses[s], weights=weights[s]) for s in segments])


def _task_losses(batch: SurrogateBatch, position: torch.Tensor, w: torch.Tensor,
                 num_tasks: int) -> torch.Tensor:
    """Weighted mean cross-entropy of each task under f0 + Gw: [B, num_tasks], where
    ``position`` [B, n] says which of the problem's tasks each row belongs to."""
    logits = batch.offset + _forward(batch.features, w)
    losses = batch.weight * (softplus(logits) - batch.label * logits)
    total = losses.new_zeros(len(losses), num_tasks).scatter_add_(1, position, losses)
    mass = losses.new_zeros(len(losses), num_tasks).scatter_add_(1, position, batch.weight)
    return total / mass


def _gather(subsets: np.ndarray, split: int, rows, f0: np.ndarray, gradients: np.ndarray,
            dtype: torch.dtype, device: torch.device) -> tuple[SurrogateBatch, torch.Tensor]:
    """The rows of each subset's tasks in one split as a batch, and the task position
    (0 … s − 1) of each row: [b, n]. Shorter subsets are padded with weight-0 copies of their
    first row, so ``gradients`` is read, in one fancy-indexing call, at the subsets' rows only.
    """
    counts = rows.offsets[subsets, split + 1] - rows.offsets[subsets, split]
    lengths = counts.sum(1)
    index = np.zeros((len(subsets), lengths.max()), np.int64)
    position = np.zeros_like(index)
    for number, subset in enumerate(subsets):
        own = rows.rows_of(subset, split)
        index[number] = own[0]
        index[number, :len(own)] = own
        position[number, :len(own)] = np.repeat(np.arange(len(subset)), counts[number])
    features = torch.from_numpy(np.asarray(gradients[index.ravel()]))
    weight = rows.weight[index] * (np.arange(index.shape[1]) < lengths[:, None])
    offset, label, weight = (torch.from_numpy(np.asarray(column, np.float64)).to(device)
                             for column in (f0[index], rows.label[index], weight))
    batch = SurrogateBatch(features.to(device, dtype).reshape(*index.shape, -1), offset, label,
                           weight)
    return batch, torch.from_numpy(position).to(device)


def subset_losses(subsets: np.ndarray, rows, f0: np.ndarray, gradients: np.ndarray, l2: float,
                  max_iterations: int = 50, tolerance: float = 1e-8,
                  device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float64) -> np.ndarray:
    """f̂(S, i) for a batch of subsets [b, s] → [b, s], fitted by batched solves.

    ``rows`` is the :class:`~grouping.affinity.rows.RowTable`; ``f0`` [R] and ``gradients``
    [R, d] are its base logits and projected gradients (any array supporting fancy indexing,
    memory maps included: only the rows of the subsets' tasks are read). The fits and the
    validation losses run on ``device`` with the features in ``dtype`` (see
    :func:`fit_logistic_offset`); on the CPU in cache-sized groups of subsets, each gathered
    just before it is solved.
    """
    device = torch.device(device)
    longest = (rows.offsets[subsets, TRAIN + 1] - rows.offsets[subsets, TRAIN]).sum(1).max()
    group = _group_size(longest, gradients.shape[1], dtype, device)
    losses = []
    for start in range(0, len(subsets), group):
        chunk = subsets[start:start + group]
        train, _ = _gather(chunk, TRAIN, rows, f0, gradients, dtype, device)
        w = fit_logistic_offset(train, l2, max_iterations, tolerance)
        losses.append(_task_losses(*_gather(chunk, VAL, rows, f0, gradients, dtype, device), w,
                                   chunk.shape[1]))
    return torch.cat(losses).cpu().numpy()
