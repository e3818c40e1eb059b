"""Per-task gradients of the shared parameters, the input of an AdaTask step.

Yang et al., "A Task-aware Adaptive Learning Rate Approach to Multi-task Learning" (AAAI 2023,
arXiv 2211.15055) accumulate each task's gradient g_k = ∇_θ L_k separately, so the shared
parameters need the Jacobian of the task losses rather than the gradient of their sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

TaskGradientMethod = Literal["vmap", "loop"]


def task_gradients(losses: Tensor, params: Sequence[Tensor],
                   method: TaskGradientMethod = "vmap") -> list[Tensor]:
    """Per parameter, the gradients of every task loss: a tensor [K, *param.shape] whose row
    k is ∇ losses[k].

    ``losses`` is the vector [K] of task losses, still attached to its graph, which this
    frees. ``vmap`` runs one backward pass vectorised over the K one-hot output cotangents
    with :func:`torch.func.vmap`; ``loop`` runs K backward passes. Both give the same
    numbers; ``scripts/bench_adatask.py`` times them.
    """
    if not params:
        return []
    num_tasks = losses.shape[0]
    if method == "loop":
        per_task = [torch.autograd.grad(losses[task], params, retain_graph=task < num_tasks - 1)
                    for task in range(num_tasks)]
        return [torch.stack(grads) for grads in zip(*per_task)]
    basis = torch.eye(num_tasks, dtype=losses.dtype, device=losses.device)
    return list(torch.func.vmap(lambda cotangent: torch.autograd.grad(
        losses, params, cotangent))(basis))
