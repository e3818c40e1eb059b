"""AdaTask: task-wise adaptive learning rates for the shared parameters of a multitask model.

Yang et al., "A Task-aware Adaptive Learning Rate Approach to Multi-task Learning", AAAI 2023
(arXiv 2211.15055). An adaptive optimizer accumulates the squared gradient (and, for Adam,
the gradient) of a shared parameter over all tasks at once, so the task with the largest
gradients sets the learning rate of every task on that parameter. AdaTask keeps the
accumulators of each task k apart, built from that task's own gradient g_k, and the update of a
shared parameter θ is the sum over tasks of each task's adaptive step:

    AdaGrad:  v_k ← v_k + g_k²,                       θ ← θ − η Σ_k g_k / (√v_k + ε)
    RMSProp:  v_k ← α v_k + (1 − α) g_k²,             θ ← θ − η Σ_k g_k / (√v_k + ε)
    Adam:     m_k ← β₁ m_k + (1 − β₁) g_k,
              v_k ← β₂ v_k + (1 − β₂) g_k²,           θ ← θ − η Σ_k m̂_k / (√v̂_k + ε),
              m̂_k = m_k / (1 − β₁ᵗ),  v̂_k = v_k / (1 − β₂ᵗ).

Task-specific parameters take the ordinary optimizer step on the gradient of the summed loss.
Constants and the placement of ε follow ``torch.optim.Adam``, ``RMSprop`` (no bias correction,
no centering, no momentum) and ``Adagrad`` (no learning-rate decay, zero initial accumulator),
so that with one task each optimizer reproduces its torch counterpart. Weight decay is
decoupled (θ ← θ(1 − η λ) before the step, as in AdamW) for all three: an L2 term added to
every task's gradient would count the penalty once per task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from grouping.optim.dominance import DominanceTracker


class AdaTask(Optimizer):
    """The AdaTask step shared by the three variants; a subclass defines one task-wise rule.

    Parameter groups take the usual options plus ``shared`` (default ``True``): the
    parameters of a shared group are updated task-wise from the per-task gradients handed to
    :meth:`step`, those of a group with ``shared=False`` from their ``.grad`` (the gradient
    of the summed loss) with the same rule and hyperparameters as one task.

    A ``tracker`` receives each step's per-task updates of the shared parameters (weight decay
    excluded), in the order of :meth:`shared_params`.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any],
                 tracker: DominanceTracker | None = None) -> None:
        if defaults["lr"] < 0 or defaults["eps"] < 0 or defaults["weight_decay"] < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        super().__init__(params, {**defaults, "shared": True})
        self.tracker = tracker

    def shared_params(self) -> list[Tensor]:
        """The shared parameters, in the order :meth:`step` expects their task gradients."""
        return [param for group in self.param_groups if group["shared"]
                for param in group["params"]]

    @torch.no_grad()
    def step(self, task_grads: Sequence[Tensor | None] = ()) -> None:  # type: ignore[override]
        """One AdaTask step.

        Args:
            task_grads: per shared parameter (in :meth:`shared_params` order) a tensor
                [num_tasks, *param.shape] whose row k is the gradient of task k's loss, or
                ``None`` to leave that parameter alone this step. See
                :func:`grouping.optim.task_gradients`.
        """
        if len(task_grads) != len(self.shared_params()):
            raise ValueError(f"task_grads has {len(task_grads)} entries for "
                             f"{len(self.shared_params())} shared parameters")
        shared_grads = iter(task_grads)
        updates: list[Tensor | None] = []
        for group in self.param_groups:
            for param in group["params"]:
                if group["shared"]:
                    grads = next(shared_grads)
                else:
                    grads = None if param.grad is None else param.grad.unsqueeze(0)
                if grads is None:
                    if group["shared"]:
                        updates.append(None)
                    continue
                if grads.shape[1:] != param.shape:
                    raise ValueError(f"task gradients of shape {tuple(grads.shape)} for a "
                                     f"parameter of shape {tuple(param.shape)}")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    self._init_state(state, grads)
                state["step"] += 1
                if group["weight_decay"]:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
                task_steps = self._task_steps(state, grads, group)
                param.add_(task_steps.sum(0))
                if group["shared"]:
                    updates.append(task_steps)
        if self.tracker is not None:
            self.tracker.update(updates)

    def _init_state(self, state: dict[str, Any], grads: Tensor) -> None:
        raise NotImplementedError

    def _task_steps(self, state: dict[str, Any], grads: Tensor,
                    group: dict[str, Any]) -> Tensor:
        """Update the task-wise accumulators with ``grads`` [K, ...] and return each task's
        step [K, ...] (the learning rate and sign included)."""
        raise NotImplementedError


class AdaTaskAdam(AdaTask):
    """AdaTask with Adam: per-task m_k, v_k and bias correction (Yang et al., AAAI 2023)."""

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, tracker: DominanceTracker | None = None) -> None:
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError("betas must lie in [0, 1)")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay}, tracker)

    def _init_state(self, state: dict[str, Any], grads: Tensor) -> None:
        state["exp_avg"] = torch.zeros_like(grads, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(grads, memory_format=torch.preserve_format)

    def _task_steps(self, state: dict[str, Any], grads: Tensor,
                    group: dict[str, Any]) -> Tensor:
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grads, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1 ** state["step"])
        denom = (exp_avg_sq.sqrt() / (1 - beta2 ** state["step"]) ** 0.5).add_(group["eps"])
        return (exp_avg * -step_size).div_(denom)


class AdaTaskAdamMean(AdaTaskAdam):
    """AdaTask with Adam, the shared update the mean instead of the sum of the task steps:
    θ ← θ − (η/K) Σ_k m̂_k / (√v̂_k + ε) over the K tasks of the step.

    Each term m̂_k / (√v̂_k + ε) is about ±1 wherever task k's gradient is steady, whatever its
    size, so the paper's sum (Yang et al., AAAI 2023, Algorithm 1) moves a shared parameter
    by up to K·η per step, and by about √K·η where the tasks' batch gradients are noise (rare
    labels: most tasks have no positive example in a batch). The mean keeps the per-task
    accumulators (and so the paper's protection of dominated tasks: the relative share of the
    task steps is unchanged) with a shared step no larger than one Adam step; the
    task-specific parameters keep their Adam step at η. With one task it is Adam.
    """

    def _task_steps(self, state: dict[str, Any], grads: Tensor,
                    group: dict[str, Any]) -> Tensor:
        return super()._task_steps(state, grads, group).div_(len(grads))


class AdaTaskRMSprop(AdaTask):
    """AdaTask with RMSProp: per-task v_k, no bias correction (Yang et al., AAAI 2023)."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 tracker: DominanceTracker | None = None) -> None:
        if not 0 <= alpha < 1:
            raise ValueError("alpha must lie in [0, 1)")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay}, tracker)

    def _init_state(self, state: dict[str, Any], grads: Tensor) -> None:
        state["square_avg"] = torch.zeros_like(grads, memory_format=torch.preserve_format)

    def _task_steps(self, state: dict[str, Any], grads: Tensor,
                    group: dict[str, Any]) -> Tensor:
        square_avg = state["square_avg"]
        square_avg.mul_(group["alpha"]).addcmul_(grads, grads, value=1 - group["alpha"])
        return (grads * -group["lr"]).div_(square_avg.sqrt().add_(group["eps"]))


class AdaTaskAdagrad(AdaTask):
    """AdaTask with AdaGrad: per-task sums of squared gradients (Yang et al., AAAI 2023)."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, eps: float = 1e-10,
                 weight_decay: float = 0.0, tracker: DominanceTracker | None = None) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "weight_decay": weight_decay}, tracker)

    def _init_state(self, state: dict[str, Any], grads: Tensor) -> None:
        state["sum"] = torch.zeros_like(grads, memory_format=torch.preserve_format)

    def _task_steps(self, state: dict[str, Any], grads: Tensor,
                    group: dict[str, Any]) -> Tensor:
        state["sum"].addcmul_(grads, grads, value=1)
        return (grads * -group["lr"]).div_(state["sum"].sqrt().add_(group["eps"]))


ADATASK_OPTIMIZERS: dict[str, Callable[..., AdaTask]] = {
    "adatask_adam": AdaTaskAdam,
    "adatask_adam_mean": AdaTaskAdamMean,
    "adatask_rmsprop": AdaTaskRMSprop,
    "adatask_adagrad": AdaTaskAdagrad,
}
