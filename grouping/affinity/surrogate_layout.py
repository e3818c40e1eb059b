"""Task-major data layout of the batched surrogate fits of Grad-TAG (Li, Sharma, Zhang,
"Scalable Multitask Learning Using Gradient-based Estimation of Task Affinity", KDD 2024,
arXiv 2409.06091, Sec. 3.2: the per-subset logistic regression on projected gradients g with
the base logit f0 as offset, p = σ(f0 + gᵀw), fitted on the stacked rows of the subset's
tasks).

The passes over the rows are task-major (:class:`TaskBlocks`): the rows of each task are
stored once, and one pass multiplies them by the vectors of all subsets that hold the task,
X_t [w_S1 … w_Sm], a matrix product, where a subset-by-subset pass would read the task's rows
m times for m matrix-vector products. The passes run in the features' dtype (float64, or
float32 at half the memory traffic), the rest in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grouping.affinity.rows import RowTable

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


def subset_blocks(subsets: np.ndarray, split: int, rows: RowTable, f0: np.ndarray,
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
