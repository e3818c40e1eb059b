"""DMTG one-shot task grouping on the SIGN-MLP.

Gao, Jiang, Li, Yu and Xia, "DMTG: One-Shot Differentiable Multi-Task Grouping", ICML 2024,
arXiv 2407.05082. Notation follows the paper: N tasks, K groups (encoder branches), K·N task
heads, and a Categorical distribution per task over the branches, relaxed with Gumbel-softmax.

**Search.** K branches, each a copy of :class:`~grouping.models.SignMLP`'s trunk (seeded
independently) with its own N heads, and task-to-branch logits S ∈ R^{N×K} (zeros at the
start). Every training step draws, for every task i, the relaxed one-hot

    z̃_i = softmax((S_i + g_i) / τ),   g_ik ~ Gumbel(0, 1)   (Gumbel-softmax)

and minimises, jointly in the weights θ and in S,

    L(θ, S) = Σ_i Σ_k z̃_ik · L_i(head_{k,i})                                            (★)

where L_i(head_{k,i}) is the mean binary cross-entropy of task i's head on branch k over the
mini-batch's training rows. Adam updates θ at ``train.lr`` (with ``train.weight_decay``) and S
at ``dmtg.logits_lr``. τ anneals exponentially from ``dmtg.temperature`` at the first epoch to
``dmtg.final_temperature`` at the last epoch of the budget (constant when that is unset).

**Warm-up** (an option, not in the paper, whose branches start from pretrained encoders):
``dmtg.warmup_epochs`` epochs first train θ alone with z̃_ik = 1/K (S frozen at zero), so that
every head has learnt something before S compares them. Without it, on small from-scratch
trunks S locks in within a few epochs on differences between freshly initialised heads: a
head that z̃ happens to favour trains faster, lowers its loss and is favoured further, and
Adam moves S at the full ``logits_lr`` per step even while those differences are noise.

**Early stopping** uses the validation loss of the argmax-selected heads,
(1/N) Σ_i L_i^val(head_{a(i), i}) with a(i) = argmax_k S_ik: the loss of the grouped model the
search would read off at that epoch (free of the Gumbel noise and of τ). The checkpoint (θ and
S together) with the lowest value is kept; ``train.patience`` epochs without improvement end
the search. Budget: ``dmtg.max_epochs`` when set, else ``train.max_epochs``, for the search and
for the fine-tuning alike.

**Read-off.** Task i goes to branch a(i) = argmax_k S_ik of the kept S; branches no task chose
are dropped, leaving K' ≤ K groups.

**Final model.** The paper prunes the K·N heads down to N and trains on with the pruned
network. Here: the K' surviving branches keep their kept-checkpoint trunks, and task i keeps
head_{a(i), i}, i.e. z is fixed to the one-hot argmax. This model is fine-tuned with the
project's training loop (:func:`grouping.training.train_model`: BCE over all N tasks, Adam at
``train.lr``, ``train.batch_size``, early stopping on validation loss with ``train.patience``,
best checkpoint kept; its epoch 0 is the search's model, so fine-tuning never raises the
validation loss). Reported logits are those of the fine-tuned selected heads.

**Memory.** Parameters grow as O(K·(trunk + H·N)) (H the last hidden width) plus N·K for S;
each is held as weight, gradient, two Adam moments and a best-checkpoint copy. Activations of
a training step grow as O(K·batch·(ΣH + N)), of a validation chunk as O(K·chunk·(H + N)); the
features and targets of all n examples live on the device, O(n·(F + N)).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, gumbel_softmax

from grouping.config import DMTGConfig, PositiveWeighting, TrainConfig
from grouping.evaluation.metrics import task_metrics
from grouping.models import ModelSpec, build_model
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import TRAIN, VAL, TaskSet
from grouping.training import positive_weights, predict, train_model

FLOAT_BYTES = 4
PARAMETER_COPIES = 5
EVAL_ROWS = 8192


class BranchedMLP(nn.Module):
    """K SIGN-MLP trunks and K·N heads; the heads are a batched weight [K, H, N] and bias
    [K, N], so one forward evaluates every branch and head: [batch, F] → [K, batch, N]. With
    the spec's per-task linear skip, one skip weight [F, N] (task i's column, whichever branch
    it picks) is added to every branch's logits."""

    def __init__(self, trunks: Sequence[nn.Module], weight: torch.Tensor,
                 bias: torch.Tensor, skip: torch.Tensor | None = None,
                 trainable_skip: bool = True) -> None:
        super().__init__()
        self.trunks = nn.ModuleList(trunks)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.skip = None if skip is None else nn.Parameter(skip, requires_grad=trainable_skip)

    @classmethod
    def build(cls, spec: ModelSpec, num_branches: int, seed: int,
              linear: PerTaskLinear | None = None) -> BranchedMLP:
        """K branches, branch k initialised as ``build_model(spec, seed_k, linear)`` with seeds
        drawn from ``seed``; ``spec.num_heads`` is the number of tasks N."""
        seeds = np.random.SeedSequence(seed).generate_state(num_branches)
        models = [build_model(spec, int(branch_seed), linear) for branch_seed in seeds]
        weight = torch.stack([model.heads.weight.detach().T for model in models])
        bias = torch.stack([model.heads.bias.detach() for model in models])
        skip = None if models[0].skip is None else models[0].skip.weight.detach().T.clone()
        return cls([model.trunk for model in models], weight, bias, skip, spec.skip_trainable)

    @property
    def num_branches(self) -> int:
        return len(self.trunks)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.stack([trunk(inputs) for trunk in self.trunks])
        logits = torch.baddbmm(self.bias.unsqueeze(1), hidden, self.weight)
        return logits if self.skip is None else logits + (inputs @ self.skip).unsqueeze(0)

    def select(self, branches: Sequence[int]) -> BranchedMLP:
        """A copy holding only ``branches`` (trunks and heads), in that order."""
        index = torch.as_tensor(list(branches), device=self.weight.device)
        return BranchedMLP([copy.deepcopy(self.trunks[k]) for k in branches],
                           self.weight.detach()[index].clone(), self.bias.detach()[index].clone(),
                           None if self.skip is None else self.skip.detach().clone(),
                           self.skip is None or self.skip.requires_grad)


class SelectedHeads(nn.Module):
    """The grouped model: task i predicted by its head on branch ``assignment[i]`` (z fixed
    to a one-hot); [batch, F] → [batch, N]. Heads of other tasks on a branch stay unused."""

    def __init__(self, branches: BranchedMLP, assignment: torch.Tensor) -> None:
        super().__init__()
        self.branches = branches
        self.register_buffer("assignment", assignment.long())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.branches(inputs)
        index = self.assignment.view(1, 1, -1).expand(1, logits.shape[1], -1)
        return logits.gather(0, index).squeeze(0)


@dataclass(frozen=True)
class _Data:
    """Features and targets of all examples on the device, and the split's row indices."""

    features: torch.Tensor
    targets: torch.Tensor
    train_rows: torch.Tensor
    val_rows: torch.Tensor
    pos_weight: torch.Tensor

    @classmethod
    def of(cls, taskset: TaskSet, device: torch.device, rule: PositiveWeighting) -> _Data:
        """The task set on ``device``, with each task's positive weight under ``rule``
        (:func:`grouping.training.positive_weights`, from training labels)."""
        train = taskset.indices(TRAIN)
        return cls(torch.tensor(taskset.features, device=device),
                   torch.from_numpy(taskset.labels.astype(np.float32)).to(device),
                   torch.from_numpy(train).to(device),
                   torch.from_numpy(taskset.indices(VAL)).to(device),
                   positive_weights(taskset.labels[train], rule).to(device))


@dataclass
class DMTGResult:
    """Groups (sorted task indices, ordered by first task), S at the kept search checkpoint,
    the fine-tuned selected model and its logits for every example ([n, N], the input of
    :func:`grouping.evaluation.metrics.task_metrics` with columns 0..N-1), per-task test
    metrics, epochs run, best epochs and wall times."""

    groups: list[list[int]]
    branch_logits: np.ndarray
    model: SelectedHeads
    logits: np.ndarray
    tasks: list[dict]
    search_epochs: int
    search_best_epoch: int
    search_val_curve: list[float]
    finetune_epochs: int
    finetune_best_epoch: int
    search_seconds: float
    finetune_seconds: float


def dmtg_memory_bytes(spec_or_dims: ModelSpec | Sequence[int], num_tasks: int,
                      num_branches: int, batch_size: int, num_examples: int,
                      feature_dim: int) -> int:
    """Estimated peak device bytes of a DMTG search (float32).

    ``spec_or_dims`` gives the hidden widths (a ModelSpec or the widths themselves). Counts
    parameters K·(trunk + H·N + N) + N·K (and F·N for a spec's per-task skip) five times
    (weights, gradients, two Adam moments, best checkpoint); the larger of a training step's
    activations, 4·K·batch·(ΣH + N) (layer outputs and their gradients), and a validation
    chunk's, 2·K·chunk·(max H + N); the input batch; and the features and targets of all
    examples, n·(F + N).
    """
    hidden = tuple(spec_or_dims.hidden if isinstance(spec_or_dims, ModelSpec)
                   else spec_or_dims)
    widths = (feature_dim, *hidden)
    trunk = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:]))
    parameters = num_branches * (trunk + (widths[-1] + 1) * num_tasks) + num_tasks * num_branches
    if isinstance(spec_or_dims, ModelSpec) and spec_or_dims.skip:
        parameters += feature_dim * num_tasks
    chunk = min(num_examples, EVAL_ROWS)
    training = 4 * num_branches * batch_size * (sum(hidden) + num_tasks)
    validation = 2 * num_branches * chunk * (max(widths) + num_tasks)
    floats = (PARAMETER_COPIES * parameters + max(training, validation)
              + max(batch_size, chunk) * feature_dim + num_examples * (feature_dim + num_tasks))
    return FLOAT_BYTES * floats


def check_memory(taskset: TaskSet, spec: ModelSpec, num_branches: int, batch_size: int,
                 limit_gib: float) -> None:
    """Raise ValueError, naming ``dmtg.max_memory_gib``, when :func:`dmtg_memory_bytes` of a
    search with ``num_branches`` branches on ``taskset`` exceeds ``limit_gib``."""
    estimate = dmtg_memory_bytes(spec, taskset.num_tasks, num_branches, batch_size,
                                 taskset.num_examples, taskset.features.shape[1])
    if estimate > limit_gib * 2**30:
        raise ValueError(
            f"dmtg.max_memory_gib: DMTG with K={num_branches} branches and "
            f"N={taskset.num_tasks} tasks needs an estimated {estimate / 2**30:.3f} GiB, above "
            f"the limit of {limit_gib} GiB; lower the number of groups or batch_size, raise "
            "max_memory_gib, or set dmtg.enabled: false")


def read_groups(branch_logits: np.ndarray) -> list[list[int]]:
    """Task i to branch argmax_k S_ik; empty branches dropped; groups ordered by first task."""
    assignment = np.asarray(branch_logits).argmax(axis=1)
    groups = [np.flatnonzero(assignment == k).tolist() for k in np.unique(assignment)]
    return sorted(groups)


def temperature_at(epoch: int, num_epochs: int, config: DMTGConfig) -> float:
    """τ at ``epoch`` (1-based): exponential from ``temperature`` at epoch 1 to
    ``final_temperature`` at ``num_epochs``; constant without a final temperature."""
    if config.final_temperature is None or num_epochs == 1:
        return config.temperature
    progress = (epoch - 1) / (num_epochs - 1)
    return config.temperature * (config.final_temperature / config.temperature) ** progress


@torch.no_grad()
def selected_logits(model: SelectedHeads, taskset: TaskSet, device: torch.device) -> np.ndarray:
    """Logits [n, N] of the selected heads for every example (test rows included)."""
    features = torch.tensor(taskset.features, device=device)
    return predict(model.to(device), features).cpu().numpy()


@torch.no_grad()
def _head_losses(model: BranchedMLP, data: _Data, rows: torch.Tensor) -> torch.Tensor:
    """Mean BCE (with the positive weights) of every head on every branch over ``rows``,
    [K, N], in eval mode."""
    model.eval()
    total = torch.zeros(model.num_branches, data.targets.shape[1], device=data.targets.device)
    for start in range(0, len(rows), EVAL_ROWS):
        chunk = rows[start:start + EVAL_ROWS]
        logits = model(data.features[chunk])
        targets = data.targets[chunk].expand_as(logits)
        total += binary_cross_entropy_with_logits(logits, targets, pos_weight=data.pos_weight,
                                                  reduction="none").sum(1)
    return total / len(rows)


def _selected_loss(losses: torch.Tensor, branch_logits: torch.Tensor) -> float:
    """(1/N) Σ_i losses[argmax_k S_ik, i]."""
    choice = branch_logits.argmax(dim=1)
    return float(losses[choice, torch.arange(len(choice), device=losses.device)].mean())


def _train_epoch(model: BranchedMLP, data: _Data, batch_size: int,
                 optimizer: torch.optim.Optimizer, weights: Callable[[], torch.Tensor]) -> None:
    """One pass over the training rows in a random order, minimising
    Σ_i Σ_k weights()_ik · L_i(head_{k,i}) on each mini-batch."""
    model.train()
    order = data.train_rows[torch.randperm(len(data.train_rows)).to(data.targets.device)]
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        logits = model(data.features[rows])
        losses = binary_cross_entropy_with_logits(
            logits, data.targets[rows].expand_as(logits), pos_weight=data.pos_weight,
            reduction="none").mean(1)
        optimizer.zero_grad(set_to_none=True)
        (weights().T * losses).sum().backward()
        optimizer.step()


def _search(model: BranchedMLP, branch_logits: nn.Parameter, data: _Data, train: TrainConfig,
            dmtg: DMTGConfig, num_epochs: int) -> tuple[int, int, list[float]]:
    """``dmtg.warmup_epochs`` with uniform weights 1/K (S frozen), then (★) with Gumbel-softmax
    weights and early stopping on the argmax-selected validation loss; leaves the best
    checkpoint in ``model`` and ``branch_logits``. Returns epochs run after the warm-up, the
    best epoch and the validation curve (epoch 0, the end of the warm-up, first)."""
    optimizer = torch.optim.Adam([
        {"params": model.parameters(), "lr": train.lr, "weight_decay": train.weight_decay},
        {"params": [branch_logits], "lr": dmtg.logits_lr},
    ])
    uniform = torch.full_like(branch_logits, 1.0 / model.num_branches)
    for _ in range(dmtg.warmup_epochs):
        _train_epoch(model, data, train.batch_size, optimizer, lambda: uniform)

    def validation() -> float:
        return _selected_loss(_head_losses(model, data, data.val_rows), branch_logits.detach())

    curve = [validation()]
    best_state = copy.deepcopy((model.state_dict(), branch_logits.detach().clone()))
    best_epoch, since_best, epoch = 0, 0, 0
    for epoch in range(1, num_epochs + 1):
        tau = temperature_at(epoch, num_epochs, dmtg)
        _train_epoch(model, data, train.batch_size, optimizer,
                     lambda tau=tau: gumbel_softmax(branch_logits, tau=tau, dim=1))
        curve.append(validation())
        if curve[-1] < curve[best_epoch]:
            best_state = copy.deepcopy((model.state_dict(), branch_logits.detach().clone()))
            best_epoch, since_best = epoch, 0
        else:
            since_best += 1
            if since_best >= train.patience:
                break
    model.load_state_dict(best_state[0])
    with torch.no_grad():
        branch_logits.copy_(best_state[1])
    return epoch, best_epoch, curve


def search_groups(taskset: TaskSet, spec: ModelSpec, num_groups: int, train: TrainConfig,
                  dmtg: DMTGConfig, seed: int, device: torch.device,
                  linear: PerTaskLinear | None = None) -> DMTGResult:
    """Run the DMTG search with K = ``num_groups`` branches, read off the groups, fine-tune
    the selected heads, and evaluate them on the test split. With ``linear`` every branch
    starts from the per-task regressions (:func:`grouping.models.sign_mlp.build_model`).

    ``spec`` gives the trunk (in_dim, hidden, dropout); its ``num_heads`` is replaced by the
    number of tasks. Deterministic given ``seed`` on a given device: all randomness (branch
    initialisation, batch order, Gumbel noise, dropout) comes from torch's global generators
    seeded inside a fork that restores their state afterwards.

    Raises:
        ValueError: when K < 1, or before any training when :func:`dmtg_memory_bytes` exceeds
            ``dmtg.max_memory_gib``.
    """
    num_tasks = taskset.num_tasks
    if num_groups < 1:
        raise ValueError(f"DMTG needs at least one branch, got num_groups={num_groups}")
    check_memory(taskset, spec, num_groups, train.batch_size, dmtg.max_memory_gib)
    spec = replace(spec, num_heads=num_tasks)
    num_epochs = dmtg.max_epochs or train.max_epochs
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        data = _Data.of(taskset, device, train.pos_weight)
        model = BranchedMLP.build(spec, num_groups, seed, linear).to(device)
        branch_logits = nn.Parameter(torch.zeros(num_tasks, num_groups, device=device))

        start = time.perf_counter()
        search_epochs, search_best, curve = _search(model, branch_logits, data, train, dmtg,
                                                    num_epochs)
        search_seconds = time.perf_counter() - start
        del data

        start = time.perf_counter()
        groups = read_groups(branch_logits.detach().cpu().numpy())
        assignment = branch_logits.detach().argmax(dim=1)
        kept = torch.unique(assignment)
        selected = SelectedHeads(model.select(kept.tolist()),
                                 torch.searchsorted(kept, assignment))
        result = train_model(selected, taskset, np.arange(num_tasks), train, seed, device,
                             max_epochs=num_epochs)
        finetune_seconds = time.perf_counter() - start
    logits = selected_logits(selected, taskset, device)
    return DMTGResult(
        groups=groups, branch_logits=branch_logits.detach().cpu().numpy(),
        model=selected.cpu(), logits=logits,
        tasks=task_metrics(taskset, logits, np.arange(num_tasks)),
        search_epochs=search_epochs, search_best_epoch=search_best, search_val_curve=curve,
        finetune_epochs=len(result.criterion_curve) - 1, finetune_best_epoch=result.best_epoch,
        search_seconds=search_seconds, finetune_seconds=finetune_seconds)
