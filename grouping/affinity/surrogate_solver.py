"""Batched Newton-CG solver of the surrogate fits of Grad-TAG (Li, Sharma, Zhang, "Scalable
Multitask Learning Using Gradient-based Estimation of Task Affinity", KDD 2024, arXiv
2409.06091, Sec. 3.2): for every subset S, the logistic regression on the projected gradients
g of the training rows of S's tasks with the base logit f0 as offset, p = σ(f0 + gᵀw),
minimising the weighted mean cross-entropy plus λ‖w‖²; then the weighted mean cross-entropy
of each task under f0 + gᵀw_S.

Many subsets are solved at once by a batched, damped Newton method. Each Newton system
(Gᵀ C G + 2λI) p = ∇ is solved by conjugate gradients with Hessian-vector products Gᵀ(C(Gv)),
never forming the d × d Hessian, and the step length is searched on the logits f0 + Gw, which
move along the already known G p: a Newton iteration costs one pass over the rows for the
gradient and two per conjugate-gradient iteration. The passes are those of the task-major
layout of :mod:`grouping.affinity.surrogate_layout`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import softplus

from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate_layout import TaskBlocks
from grouping.tasksets import TRAIN


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1)


def _pair_losses(blocks: TaskBlocks, logits: torch.Tensor) -> torch.Tensor:
    """ℓ(z, y) = log(1 + e^z) − y z of every pair, from its logit z: [pairs]."""
    return softplus(logits) - blocks.label * logits


def _objective(blocks: TaskBlocks, logits: torch.Tensor, w: torch.Tensor, share: torch.Tensor,
               l2: float) -> torch.Tensor:
    """Σ ω ℓ(z, y) / Σ ω + λ‖w‖² of each subset, from its logits z = f0 + Gw."""
    return blocks.per_subset(share * _pair_losses(blocks, logits)) + l2 * _dot(w, w)


def _curvature_gram(features: torch.Tensor, offset: torch.Tensor,
                    weight: torch.Tensor) -> torch.Tensor:
    """Xᵀ C X with C = diag(ω σ(f0)(1 − σ(f0))): [..., n, d], [..., n], [..., n] → [..., d, d]
    in float64, the un-normalised Hessian at w = 0 of the rows' cross-entropy."""
    prob = torch.sigmoid(offset)
    scale = (weight * prob * (1 - prob)).sqrt().unsqueeze(-1).to(features.dtype)
    scaled = features * scale
    return (scaled.transpose(-1, -2) @ scaled).to(torch.float64)


def task_curvatures(rows: RowTable, f0: np.ndarray, gradients: np.ndarray,
                    tasks: np.ndarray | None = None) -> np.ndarray:
    """X_tᵀ C_t X_t over each task's training rows (all tasks, or ``tasks``): [T, d, d].

    A subset's Hessian at w = 0 is the sum of its tasks' terms over its Σω plus 2λI, so the
    terms are formed once, one pass over the rows, and shared by every subset. Kept in
    float32: they only precondition the Newton systems (:func:`fit_logistic_offset`).
    """
    tasks = np.arange(len(rows.offsets)) if tasks is None else tasks
    out = np.empty((len(tasks), gradients.shape[1], gradients.shape[1]), np.float32)
    for place, task in enumerate(tasks):
        span = np.arange(rows.offsets[task, TRAIN], rows.offsets[task, TRAIN + 1])
        out[place] = _curvature_gram(torch.from_numpy(np.asarray(gradients[span])),
                                     torch.from_numpy(np.asarray(f0[span], np.float64)),
                                     torch.from_numpy(rows.weight[span].astype(np.float64)))
    return out


def _block_curvatures(blocks: TaskBlocks) -> torch.Tensor:
    """Σ_{t ∈ S} X_tᵀ C_t X_t of each subset [B, d, d], from the blocks' own rows."""
    grams, tasks, base = [], [], 0
    for bucket, offset, weight in zip(blocks.buckets, blocks.views(blocks.offset),
                                      blocks.views(blocks.weight)):
        grams.append(_curvature_gram(bucket.features, offset[:, 0], weight[:, 0]))
        count, slots = bucket.slot_subset.shape
        tasks.append(torch.arange(base, base + count, device=offset.device)
                     .repeat_interleave(slots))
        base += count
    return sum_terms(torch.cat(grams), torch.cat(tasks)[blocks.pair_slot])


def sum_terms(terms: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Σ_k terms[members[:, k]], summed in the terms' dtype: [U, d, d], [B, s] → [B, d, d]
    in float64."""
    total = terms[members[:, 0]]
    for column in range(1, members.shape[1]):
        total += terms[members[:, column]]
    return total.to(torch.float64)


def _preconditioner(curvature: torch.Tensor, total: torch.Tensor, l2: float) -> torch.Tensor:
    """L⁻¹ [B, d, d] for the Cholesky factor L of each subset's Hessian at w = 0,
    H_S(0) = Σ_{t ∈ S} X_tᵀ C_t X_t / Σω + 2λI."""
    hessian = curvature / total.view(-1, 1, 1)
    hessian.diagonal(dim1=1, dim2=2).add_(2 * l2)
    factor = torch.linalg.cholesky(hessian)
    identity = torch.eye(hessian.shape[1], dtype=hessian.dtype, device=hessian.device)
    return torch.linalg.solve_triangular(factor, identity.expand_as(factor), upper=False)


def _precondition(inverse: torch.Tensor | None, vectors: torch.Tensor) -> torch.Tensor:
    """M⁻¹ v = L⁻ᵀ L⁻¹ v for every subset: [B, d] (v itself without a preconditioner)."""
    if inverse is None:
        return vectors
    half = torch.bmm(inverse, vectors.unsqueeze(2))
    return torch.bmm(inverse.transpose(1, 2), half).squeeze(2)


def _newton_direction(blocks: TaskBlocks, inverse: torch.Tensor | None, curvature: torch.Tensor,
                      gradient: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p ≈ (Gᵀ diag(c) G + 2λI)⁻¹ ∇ by conjugate gradients preconditioned with the Hessian
    at w = 0, M = L Lᵀ (``inverse`` = L⁻¹, None for plain conjugate gradients), and G p:
    ([B, d], [pairs]). The first Newton system has M as its matrix and is solved in one
    iteration.

    Each subset stops once its residual is below η‖∇‖, η = min(1/5, √‖∇‖) (inexact Newton
    with a superlinear forcing sequence, Nocedal & Wright, Sec. 7.1; preconditioned
    conjugate gradients, their Algorithm 5.3), η at least the square root of the features'
    machine epsilon; exact after d iterations.
    """
    eps = torch.finfo(blocks.buckets[0].features.dtype).eps
    residual = gradient.clone()
    step, moved = torch.zeros_like(residual), torch.zeros_like(curvature)
    preconditioned = _precondition(inverse, residual)
    direction = preconditioned.clone()
    squared, inner = _dot(residual, residual), _dot(residual, preconditioned)
    target = torch.clamp(squared.sqrt(), eps, 0.04) * squared
    for _ in range(gradient.shape[1]):
        running = squared > target
        if not bool(running.any()):
            break
        projected = blocks.forward(direction)
        product = blocks.backward(curvature * projected).add_(direction, alpha=2 * l2)
        alpha = torch.where(running, inner / _dot(direction, product), 0.0)
        step.addcmul_(alpha.unsqueeze(1), direction)
        moved.addcmul_(blocks.expand(alpha), projected)
        residual.addcmul_(alpha.unsqueeze(1), product, value=-1)
        preconditioned = _precondition(inverse, residual)
        squared, previous, inner = _dot(residual, residual), inner, _dot(residual, preconditioned)
        beta = torch.where(running, inner / previous, 0.0).unsqueeze(1)
        direction = preconditioned.addcmul(beta, direction)
    return step, moved


def _step_sizes(blocks: TaskBlocks, logits: torch.Tensor, w: torch.Tensor, step: torch.Tensor,
                moved: torch.Tensor, share: torch.Tensor, l2: float, current: torch.Tensor,
                decrease: torch.Tensor) -> torch.Tensor:
    """Armijo backtracking from the Newton step, per subset: the candidate logits are
    z − t G p, so each trial costs O(pairs), not a pass over the features."""
    size = torch.ones_like(current)
    for _ in range(30):
        candidate = _objective(blocks, logits - blocks.expand(size) * moved,
                               w - size.unsqueeze(1) * step, share, l2)
        accepted = candidate <= current - 1e-4 * size * decrease
        if bool(accepted.all()):
            break
        size = torch.where(accepted, size, size / 2)
    return size


def fit_logistic_offset(blocks: TaskBlocks, l2: float, max_iterations: int = 50,
                        tolerance: float = 1e-8,
                        precondition: bool = True,
                        curvature: torch.Tensor | None = None) -> torch.Tensor:
    """Minimise Σ ω ℓ(f0 + gᵀw, y) / Σ ω + λ‖w‖² over each subset's rows: [B, d].

    Damped Newton, up to ``max_iterations`` steps (conjugate-gradient solves, Armijo
    backtracking); a subset stops when its gradient's largest entry is below ``tolerance``,
    so its solution does not depend on the other subsets of the blocks. Equals
    scikit-learn's LogisticRegression without intercept at C = 1 / (2 λ Σ ω) when the offset
    is zero. A tolerance below the rounding error of the passes (about 1e-7 · max|G| in
    float32) is raised to it. With ``precondition``, the Newton systems are preconditioned
    with each subset's Hessian at w = 0, from ``curvature`` [B, d, d] (Σ_{t ∈ S} X_tᵀ C_t
    X_t, see :func:`task_curvatures`) or, when omitted, from the blocks' rows.
    """
    total = blocks.per_subset(blocks.weight)
    share = blocks.weight * blocks.expand(1 / total)
    threshold = torch.clamp(blocks.resolution(), min=tolerance)
    inverse = None
    if precondition:
        curvature = _block_curvatures(blocks) if curvature is None else curvature
        inverse = _preconditioner(curvature, total, l2)
    w = total.new_zeros(blocks.num_subsets, blocks.dim)
    logits = blocks.offset.clone()
    for _ in range(max_iterations):
        prob = torch.sigmoid(logits)
        gradient = blocks.backward(share * (prob - blocks.label)) + 2 * l2 * w
        running = gradient.abs().amax(1) >= threshold
        if not bool(running.any()):
            break
        gradient = gradient * running.unsqueeze(1)
        step, moved = _newton_direction(blocks, inverse, share * prob * (1 - prob), gradient, l2)
        current = _objective(blocks, logits, w, share, l2)
        size = _step_sizes(blocks, logits, w, step, moved, share, l2, current,
                           _dot(gradient, step))
        w = w - size.unsqueeze(1) * step
        logits = logits - blocks.expand(size) * moved
    return w


def task_losses(blocks: TaskBlocks, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy of each subset's tasks under f0 + Gw: [B, s]."""
    losses = blocks.weight * _pair_losses(blocks, blocks.offset + blocks.forward(w))
    return (blocks.per_slot(losses) / blocks.per_slot(blocks.weight))[blocks.pair_slot]
