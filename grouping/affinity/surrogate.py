"""Linear surrogate of fine-tuning on a task subset (Grad-TAG, Sec. 3.2, with an offset).

For subset S, fit logistic regression on the stacked training rows of S's tasks with the base
logit as an offset: p = σ(f0 + gᵀw), minimising the weighted mean cross-entropy plus λ‖w‖².
Then f̂(S, i) is the weighted mean validation cross-entropy of task i under f0 + gᵀw_S.

Many subsets are solved at once by a batched, damped Newton method. Each Newton system
(Gᵀ C G + 2λI) p = ∇ is solved by conjugate gradients with Hessian-vector products Gᵀ(C(Gv)),
never forming the d × d Hessian, and the step length is searched on the logits f0 + Gw, which
move along the already known G p: a Newton iteration costs one pass over the rows for the
gradient and two per conjugate-gradient iteration.

The passes are task-major (:class:`TaskBlocks`): the rows of each task are stored once, and
one pass multiplies them by the vectors of all subsets that hold the task, X_t [w_S1 … w_Sm],
a matrix product, where a subset-by-subset pass would read the task's rows m times for m
matrix-vector products. The passes run in the features' dtype (float64, or float32 at half
the memory traffic), the rest in float64.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import softplus

from grouping.tasksets import TRAIN, VAL

CPU_PAIR_ROWS = 1 << 21
"""On the CPU, subsets are solved in groups of at most this many (subset, row) pairs; each
per-pair array of a group (logits, curvature, …) then takes 16 MiB in float64."""

CPU_CACHE_BYTES = 16 << 20
"""Subsets whose features fit in this many bytes may be solved in groups whose tasks'
features fit in it together, so that every pass of a group reads from the processor's
cache (see :data:`MIN_SHARING`)."""

MIN_SHARING = 8
"""Subsets are grouped up to :data:`CPU_PAIR_ROWS`, so that each pass streams a task's rows
from memory once for all the subsets of the group that hold it, when such a group holds
each of its tasks this many times on average or their features do not fit in cache."""

PRECONDITION_ROWS = 1 / 16
"""Subsets are preconditioned when their mean number of training rows is at least this
fraction of d²: forming, factoring and inverting a d × d Hessian costs about d³ operations
per subset, while each Newton-CG pass it saves costs about 2nd, and it saves twenty or so
of them."""

BUCKET_SLACK = 0.8
"""Tasks padded to a common length share one batched product when the shortest is at least
this fraction of the longest."""

TaskRows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One task's rows in one split: features [n, d], offset f0, label, weight [n]."""


@dataclass(frozen=True)
class Bucket:
    """T tasks of similar length, padded to n rows, and the m slots of each task: the subsets
    that hold it. ``features`` [T, n, d]; ``slot_subset`` [T, m], B for an empty slot."""

    features: torch.Tensor
    slot_subset: torch.Tensor

    @property
    def pairs(self) -> int:
        return self.slot_subset.numel() * self.features.shape[1]


@dataclass(frozen=True)
class TaskBlocks:
    """The rows of the tasks of B subsets in one split, each task's rows stored once.

    A (subset, row) pair lives in a flat float64 array of ``pairs`` entries, bucket after
    bucket, each bucket's part shaped [T, m, n] (task, slot, row). ``offset``, ``label`` and
    ``weight`` are the pairs' f0, y and ω (ω = 0 on padding rows and empty slots);
    ``row_subset`` holds each pair's subset (B when empty); ``pair_slot`` [B, s] holds the
    global slot (bucket by bucket, task-major) of each subset's k-th task.
    """

    buckets: list[Bucket]
    offset: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    row_subset: torch.Tensor
    pair_slot: torch.Tensor

    @property
    def num_subsets(self) -> int:
        return self.pair_slot.shape[0]

    @property
    def dim(self) -> int:
        return self.buckets[0].features.shape[2]

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each bucket's part of a per-pair array, shaped [T, m, n]."""
        parts, start = [], 0
        for bucket in self.buckets:
            tasks, slots = bucket.slot_subset.shape
            parts.append(flat[start:start + bucket.pairs].view(tasks, slots, -1))
            start += bucket.pairs
        return parts

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """G_S w_S for every subset: [B, d] → per-pair logits increments [pairs], one batched
        matrix product per bucket, X_t [w_S1 … w_Sm] for every task t of the bucket."""
        dtype = self.buckets[0].features.dtype
        padded = torch.cat([vectors, vectors.new_zeros(1, self.dim)]).to(dtype)
        out = torch.empty(len(self.offset), dtype=dtype, device=self.offset.device)
        for bucket, view in zip(self.buckets, self.views(out)):
            torch.bmm(padded[bucket.slot_subset], bucket.features.transpose(1, 2), out=view)
        return out.to(vectors.dtype)

    def backward(self, residuals: torch.Tensor) -> torch.Tensor:
        """G_Sᵀ r_S for every subset: per-pair values [pairs] → [B, d]. Each task's rows give
        all its slots' sums in one product; a subset then adds its s slots in a fixed order."""
        dtype = self.buckets[0].features.dtype
        slots = torch.cat([torch.bmm(view, bucket.features).flatten(0, 1) for bucket, view
                           in zip(self.buckets, self.views(residuals.to(dtype)))])
        return slots.to(residuals.dtype)[self.pair_slot].sum(1)

    def per_slot(self, flat: torch.Tensor) -> torch.Tensor:
        """Sums over the rows of each slot: [pairs] → [slots]."""
        return torch.cat([view.sum(2).flatten() for view in self.views(flat)])

    def per_subset(self, flat: torch.Tensor) -> torch.Tensor:
        """Sums over the pairs of each subset: [pairs] → [B]."""
        return self.per_slot(flat)[self.pair_slot].sum(1)

    def expand(self, values: torch.Tensor) -> torch.Tensor:
        """A value per subset repeated on its pairs, 0 on empty slots: [B] → [pairs]."""
        return torch.cat([values, values.new_zeros(1)])[self.row_subset]

    def resolution(self) -> torch.Tensor:
        """How exactly a pass computes the gradient Gᵀ(ω(σ(z) − y)/Σω) of each subset: [B].

        Its terms are at most max|G| · ω_i/Σω, which sum to max|G|, so its rounding error is
        about ε·max|G| for the features' machine epsilon ε: negligible in float64, near 1e-7
        in float32, where it replaces a smaller tolerance.
        """
        largest = torch.cat([
            torch.maximum(bucket.features.amax((1, 2)), -bucket.features.amin((1, 2)))
            .unsqueeze(1).expand(bucket.slot_subset.shape).flatten() for bucket in self.buckets])
        eps = torch.finfo(self.buckets[0].features.dtype).eps
        return eps * largest[self.pair_slot].amax(1).to(self.offset.dtype)


def _runs_of(values: np.ndarray) -> list[np.ndarray]:
    """Positions grouped by value (largest first): a group's smallest value is at least
    :data:`BUCKET_SLACK` of its largest."""
    order = np.argsort(-values, kind="stable")
    groups, current = [], [order[0]]
    for position in order[1:]:
        if values[position] < BUCKET_SLACK * values[current[0]]:
            groups.append(np.array(current))
            current = []
        current.append(position)
    groups.append(np.array(current))
    return groups


def _buckets_of(lengths: np.ndarray, slots: np.ndarray) -> list[np.ndarray]:
    """Tasks grouped by length, then by number of slots, so that padding either to the
    bucket's longest task or to its most held one wastes at most 1 − :data:`BUCKET_SLACK`."""
    return [members[part] for members in _runs_of(lengths) for part in _runs_of(slots[members])]


def task_blocks(subsets: np.ndarray, tasks: list[TaskRows], dtype: torch.dtype = torch.float64,
                device: torch.device | str = "cpu") -> TaskBlocks:
    """:class:`TaskBlocks` of subsets [B, s] of tasks 0 … len(tasks) − 1 (each subset of
    distinct tasks), features in ``dtype`` on ``device``."""
    count, size = subsets.shape
    holders = [[] for _ in tasks]
    for number, subset in enumerate(subsets):
        for task in subset:
            holders[task].append(number)
    used = np.array([task for task, held in enumerate(holders) if held])
    lengths = np.array([len(tasks[task][1]) for task in used])
    counts = np.array([len(holders[task]) for task in used])
    dim = tasks[used[0]][0].shape[1]
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    buckets, columns, pair_slot, base = [], [], np.zeros((count, size), np.int64), 0
    for members in _buckets_of(lengths, counts):
        chosen = used[members]
        longest, slots = lengths[members].max(), counts[members].max()
        features = np.zeros((len(chosen), longest, dim), numpy_dtype)
        slot_subset = np.full((len(chosen), slots), count)
        values = np.zeros((3, len(chosen), slots, longest))
        for place, task in enumerate(chosen):
            rows, f0, label, weight = tasks[task]
            held = holders[task]
            features[place, :len(f0)] = rows
            slot_subset[place, :len(held)] = held
            values[:, place, :len(held), :len(f0)] = np.stack([f0, label, weight])[:, None]
            for column, number in enumerate(held):
                pair_slot[number, list(subsets[number]).index(task)] = base + place * slots + column
        base += slot_subset.size
        buckets.append(Bucket(torch.from_numpy(features).to(device),
                              torch.from_numpy(slot_subset).to(device)))
        columns.append((values.reshape(3, -1), np.repeat(slot_subset.ravel(), longest)))
    offset, label, weight = torch.from_numpy(np.concatenate([c[0] for c in columns], 1)).to(device)
    row_subset = torch.from_numpy(np.concatenate([c[1] for c in columns])).to(device)
    return TaskBlocks(buckets, offset, label, weight, row_subset,
                      torch.from_numpy(pair_slot).to(device))


def problem_blocks(problems: list[TaskRows], dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> TaskBlocks:
    """Independent problems (features, offset, label, weight) as :class:`TaskBlocks`: one
    task per problem, one subset per task."""
    return task_blocks(np.arange(len(problems))[:, None], problems, dtype, device)


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


def task_curvatures(rows, f0: np.ndarray, gradients: np.ndarray,
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
    return _sum_terms(torch.cat(grams), torch.cat(tasks)[blocks.pair_slot])


def _sum_terms(terms: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
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


def weighted_task_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         segments: list[slice]) -> np.ndarray:
    """Weighted mean binary cross-entropy of each row segment (one segment per task)."""
    losses = np.logaddexp(0.0, logits) - labels * logits
    return np.array([np.average(losses[s], weights=weights[s]) for s in segments])


def _task_losses(blocks: TaskBlocks, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy of each subset's tasks under f0 + Gw: [B, s]."""
    losses = blocks.weight * _pair_losses(blocks, blocks.offset + blocks.forward(w))
    return (blocks.per_slot(losses) / blocks.per_slot(blocks.weight))[blocks.pair_slot]


def _subset_blocks(subsets: np.ndarray, split: int, rows, f0: np.ndarray,
                   gradients: np.ndarray, dtype: torch.dtype,
                   device: torch.device) -> TaskBlocks:
    """:class:`TaskBlocks` of one split of the subsets' tasks, ``gradients`` read in one
    fancy-indexing call at those tasks' rows only."""
    used, local = np.unique(subsets, return_inverse=True)
    spans = [np.arange(rows.offsets[task, split], rows.offsets[task, split + 1]) for task in used]
    index = np.concatenate(spans)
    features, ends = np.asarray(gradients[index]), np.cumsum([len(span) for span in spans])
    tasks = [(features[end - len(span):end], f0[span].astype(np.float64),
              rows.label[span].astype(np.float64), rows.weight[span].astype(np.float64))
             for span, end in zip(spans, ends)]
    return task_blocks(local.reshape(subsets.shape), tasks, dtype, device)


def _train_rows(rows) -> np.ndarray:
    """The number of training rows of every task: [T]."""
    return rows.offsets[:, TRAIN + 1] - rows.offsets[:, TRAIN]


def preconditioned(subsets: np.ndarray, rows, dim: int) -> bool:
    """Whether the fits of these subsets are preconditioned: their mean number of training
    rows is at least :data:`PRECONDITION_ROWS` · d²."""
    return bool(_train_rows(rows)[subsets].sum(1).mean() >= PRECONDITION_ROWS * dim ** 2)


def _groups(subsets: np.ndarray, rows, dim: int, dtype: torch.dtype,
            device: torch.device) -> list[slice]:
    """Consecutive runs of subsets solved together: on an accelerator, all of them; on the CPU,
    runs of bounded pairs or cache-sized runs (:data:`MIN_SHARING`, :data:`CPU_CACHE_BYTES`)."""
    if device.type != "cpu":
        return [slice(0, len(subsets))]
    train = _train_rows(rows)
    row_bytes = dim * dtype.itemsize
    lengths = train[subsets].sum(1)
    size = max(1, int(CPU_PAIR_ROWS // lengths.max()))
    sharing = subsets[:size].size / len(np.unique(subsets[:size]))
    if sharing >= MIN_SHARING or lengths.mean() * row_bytes > CPU_CACHE_BYTES:
        return [slice(start, start + size) for start in range(0, len(subsets), size)]
    runs, start, held = [], 0, set()
    for number, subset in enumerate(subsets):
        grown = held | set(subset.tolist())
        if number > start and train[list(grown)].sum() * row_bytes > CPU_CACHE_BYTES:
            runs.append(slice(start, number))
            start, grown = number, set(subset.tolist())
        held = grown
    return runs + [slice(start, len(subsets))]


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory, which may be read-only (an object shared by
    Ray's object store); only read from, so the warning about writing to it does not
    apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def subset_losses(subsets: np.ndarray, rows, f0: np.ndarray, gradients: np.ndarray, l2: float,
                  max_iterations: int = 50, tolerance: float = 1e-8,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                  curvatures: np.ndarray | None = None,
                  precondition: bool | None = None) -> np.ndarray:
    """f̂(S, i) for a batch of subsets [b, s] → [b, s], fitted by batched solves.

    ``rows`` is the :class:`~grouping.affinity.rows.RowTable`; ``f0`` [R] and ``gradients``
    [R, d] are its base logits and projected gradients (any array supporting fancy indexing,
    memory maps included: only the rows of the subsets' tasks are read). With
    ``precondition`` (by default, decided by :func:`preconditioned` for these subsets), the
    fits are preconditioned with ``curvatures`` [T, d, d], every task's
    :func:`task_curvatures`, formed for the subsets' tasks when omitted. The
    fits and the validation losses run on ``device`` with the features in ``dtype`` (see
    :func:`fit_logistic_offset`); on the CPU in groups of subsets (:data:`CPU_CACHE_BYTES`).
    """
    device = torch.device(device)
    if precondition is None:
        precondition = preconditioned(subsets, rows, gradients.shape[1])
    members = subsets
    if precondition and curvatures is None:
        tasks = np.unique(subsets)
        curvatures = task_curvatures(rows, f0, gradients, tasks)
        members = np.searchsorted(tasks, subsets)
    terms = _read_only_tensor(curvatures) if precondition else None
    losses = []
    for run in _groups(subsets, rows, gradients.shape[1], dtype, device):
        chunk = subsets[run]
        curvature = (_sum_terms(terms, torch.from_numpy(members[run])).to(device)
                     if precondition else None)
        w = fit_logistic_offset(_subset_blocks(chunk, TRAIN, rows, f0, gradients, dtype, device),
                                l2, max_iterations, tolerance, precondition, curvature)
        losses.append(_task_losses(_subset_blocks(chunk, VAL, rows, f0, gradients, dtype,
                                                  device), w))
    return torch.cat(losses).cpu().numpy()
