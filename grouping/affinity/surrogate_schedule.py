"""Scheduling policy of the batched surrogate fits of Grad-TAG (Li, Sharma, Zhang, "Scalable
Multitask Learning Using Gradient-based Estimation of Task Affinity", KDD 2024, arXiv
2409.06091, Sec. 3.2: the per-subset logistic regression on projected gradients with offset
f0): on the CPU, which subsets are solved together, so that each pass over a task's rows
serves many subsets or reads from the processor's cache; and whether the fits are
preconditioned with each subset's Hessian at w = 0.
"""

from __future__ import annotations

import numpy as np
import torch

from grouping.affinity.rows import RowTable
from grouping.tasksets import TRAIN

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


def _train_rows(rows: RowTable) -> np.ndarray:
    """The number of training rows of every task: [T]."""
    return rows.offsets[:, TRAIN + 1] - rows.offsets[:, TRAIN]


def preconditioned(subsets: np.ndarray, rows: RowTable, dim: int) -> bool:
    """Whether the fits of these subsets are preconditioned: their mean number of training
    rows is at least :data:`PRECONDITION_ROWS` · d²."""
    return bool(_train_rows(rows)[subsets].sum(1).mean() >= PRECONDITION_ROWS * dim ** 2)


def subset_groups(subsets: np.ndarray, rows: RowTable, dim: int, dtype: torch.dtype,
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
