"""Task dominance of shared parameters: the AU metric of Yang et al., "A Task-aware Adaptive
Learning Rate Approach to Multi-task Learning" (AAAI 2023, arXiv 2211.15055).

For a shared parameter θ and task k, AU_k is the exponentially decaying average of the
squared update that task k contributes to θ,

    AU_{k,t} = β AU_{k,t−1} + (1 − β) u_{k,t}²,

and the relative share rAU_k = AU_k / Σ_j AU_j says how much of the parameter's recent
movement task k caused. A parameter is dominated when one task's share exceeds a threshold
(one half by default); the dominance of a layer is the fraction of its parameters that are.
With two tasks one share always exceeds one half unless they tie, so the half threshold
separates optimizers only from three tasks on; pass a higher threshold for pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class DominanceTracker:
    """AU per task for each named shared parameter, fed one step's task updates at a time.

    Any optimizer can feed it: :class:`grouping.optim.AdaTask` does when given the tracker,
    and :class:`AdamTaskSplit` splits a ``torch.optim.Adam`` step by task.
    """

    def __init__(self, names: Sequence[str], decay: float = 0.9) -> None:
        if not 0 < decay < 1:
            raise ValueError("decay must lie in (0, 1)")
        self.names = list(names)
        self.decay = decay
        self.average_updates: dict[str, Tensor] = {}

    @torch.no_grad()
    def update(self, task_updates: Sequence[Tensor | None]) -> None:
        """Fold in one step: per parameter (in ``names`` order) its updates [K, *shape],
        row k the update task k contributed, or ``None`` where it did not move."""
        if len(task_updates) != len(self.names):
            raise ValueError(f"{len(task_updates)} updates for {len(self.names)} parameters")
        for name, updates in zip(self.names, task_updates):
            if updates is None:
                continue
            average = self.average_updates.setdefault(name, torch.zeros_like(updates))
            average.mul_(self.decay).addcmul_(updates, updates, value=1 - self.decay)

    def fractions(self, threshold: float = 0.5) -> dict[str, float]:
        """Per tracked parameter, the fraction of its entries where one task's share
        AU_k / Σ_j AU_j exceeds ``threshold``; entries that never moved count as not
        dominated."""
        fractions = {name: 0.0 for name in self.names}
        for name, average in self.average_updates.items():
            dominated = average.amax(0) > threshold * average.sum(0)
            fractions[name] = float(dominated.float().mean())
        return fractions


class AdamTaskSplit:
    """Take the steps of a ``torch.optim.Adam`` baseline and feed their split by task to a
    :class:`DominanceTracker`.

    Adam has no per-task update, so this defines one by decomposing the step linearly
    through its first moment: m_k tracks the task gradient g_k with Adam's β₁ (so Σ_k m_k is
    Adam's m without the weight-decay term), while the denominator stays Adam's own, built
    from the summed gradient:

        u_k = −η m̂_k / (√v̂ + ε),   m̂_k = m_k / (1 − β₁ᵗ),   v̂ = v / (1 − β₂ᵗ).

    The u_k sum to Adam's step (exactly, without weight decay).
    """

    def __init__(self, optimizer: torch.optim.Adam, params: Sequence[Tensor],
                 tracker: DominanceTracker) -> None:
        groups = {id(param): group for group in optimizer.param_groups
                  for param in group["params"]}
        if any(groups[id(param)]["amsgrad"] for param in params):
            raise ValueError("the task split of Adam does not cover amsgrad")
        self.optimizer = optimizer
        self.params = list(params)
        self.groups = [groups[id(param)] for param in self.params]
        self.tracker = tracker
        self.task_averages: list[Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, task_grads: Sequence[Tensor]) -> list[Tensor]:
        """``optimizer.step()`` on the gradients already in ``.grad``; then each tracked
        parameter's task updates [K, *shape] for that step, computed from the same step's
        task gradients [K, *shape] (in ``params`` order), fed to the tracker and returned."""
        self.optimizer.step()
        updates = []
        for index, (param, group, grads) in enumerate(zip(self.params, self.groups,
                                                          task_grads)):
            beta1, beta2 = group["betas"]
            state = self.optimizer.state[param]
            step = float(state["step"])
            average = self.task_averages[index]
            if average is None:
                average = self.task_averages[index] = torch.zeros_like(grads)
            average.lerp_(grads, 1 - beta1)
            denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** step) ** 0.5).add_(group["eps"])
            updates.append(average * (-group["lr"] / (1 - beta1 ** step)) / denom)
        self.tracker.update(updates)
        return updates
