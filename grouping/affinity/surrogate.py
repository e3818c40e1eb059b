"""Linear surrogate of fine-tuning on a task subset (Grad-TAG: Li, Sharma, Zhang, "Scalable
Multitask Learning Using Gradient-based Estimation of Task Affinity", KDD 2024, arXiv
2409.06091, Sec. 3.2, with an offset).

For subset S, fit logistic regression on the stacked training rows of S's tasks with the base
logit as an offset: p = σ(f0 + gᵀw), minimising the weighted mean cross-entropy plus λ‖w‖².
Then f̂(S, i) is the weighted mean validation cross-entropy of task i under f0 + gᵀw_S.

:func:`subset_losses` is the entry point; the task-major layout of the rows is
:mod:`grouping.affinity.surrogate_layout`, the batched Newton-CG solver
:mod:`grouping.affinity.surrogate_solver`, and the policy that groups subsets on the CPU and
decides on preconditioning :mod:`grouping.affinity.surrogate_schedule`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate_layout import subset_blocks
from grouping.affinity.surrogate_schedule import preconditioned, subset_groups
from grouping.affinity.surrogate_solver import (
    fit_logistic_offset,
    sum_terms,
    task_curvatures,
    task_losses,
)
from grouping.tasksets import TRAIN, VAL


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory, which may be read-only (an object shared by
    Ray's object store); only read from, so the warning about writing to it does not
    apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def subset_losses(subsets: np.ndarray, rows: RowTable, f0: np.ndarray, gradients: np.ndarray,
                  l2: float, max_iterations: int = 50, tolerance: float = 1e-8,
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
    :func:`fit_logistic_offset`); on the CPU in groups of subsets (:func:`subset_groups`).
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
    for run in subset_groups(subsets, rows, gradients.shape[1], dtype, device):
        chunk = subsets[run]
        curvature = (sum_terms(terms, torch.from_numpy(members[run])).to(device)
                     if precondition else None)
        w = fit_logistic_offset(subset_blocks(chunk, TRAIN, rows, f0, gradients, dtype, device),
                                l2, max_iterations, tolerance, precondition, curvature)
        losses.append(task_losses(subset_blocks(chunk, VAL, rows, f0, gradients, dtype,
                                                device), w))
    return torch.cat(losses).cpu().numpy()
