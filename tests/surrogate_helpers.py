"""Surrogate fits on independent problems and their reference losses, for the tests."""

from __future__ import annotations

import numpy as np
import torch

from grouping.affinity.surrogate_layout import TaskBlocks, TaskRows, task_blocks


def problem_blocks(problems: list[TaskRows], dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> TaskBlocks:
    """Independent problems (features, offset, label, weight) as :class:`TaskBlocks`: one
    task per problem, one subset per task."""
    return task_blocks(np.arange(len(problems))[:, None], problems, dtype, device)


def weighted_task_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         segments: list[slice]) -> np.ndarray:
    """Weighted mean binary cross-entropy of each row segment (one segment per task)."""
    losses = np.logaddexp(0.0, logits) - labels * logits
    return np.array([np.average(losses[s], weights=weights[s]) for s in segments])
