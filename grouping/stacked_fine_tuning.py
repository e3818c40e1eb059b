"""Fine-tuning θ0 on many subsets at once: one SIGN-MLP copy per subset (its trunk and the
subset's heads, :func:`grouping.models.sign_mlp.select_heads`), stacked along a leading
model axis and run through one forward by ``torch.func.vmap`` over ``functional_call``
(the ensembling recipe of ``torch.func.stack_module_state``).

The copies are trained exactly as :func:`grouping.training.train_model` trains each of them
alone with ``optimizer="adam"``: the same batch order (one generator seeded with ``seed``,
so every copy sees the same rows in each step), the same loss per copy (each copy's mean
positive-weighted BCE over its batch and heads), Adam on the stacked tensors (Adam is
elementwise, so one optimizer over the stack is one Adam per copy: the sum of the copies'
losses gives each copy's slice its own gradient), the same validation criterion per copy
(``train.early_stopping``), the same checkpoint rule (strict improvement, ``patience``
epochs in a row without one stop a copy; the loop ends when every copy has stopped) and the
same final figures. Only float rounding differs (batched matrix products), which is why the
copies are cut into stacks of :data:`STACK_SIZE`, padded with repeats of the last subset:
a subset's figures then do not depend on how many subsets a batch held (except where only
some subsets of a batch train, per-subset budgets, whose few copies share a smaller stack).

What it saves is the per-step overhead of a small model (Python, optimizer and kernel
launches), which dominates a lookahead of a few epochs on a task set of a few thousand
rows; the arithmetic per copy is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import TrainConfig, TruthTarget
from grouping.models.sign_mlp import ModelSpec, SignMLP, select_heads
from grouping.tasksets import TRAIN, VAL, TaskSet
from grouping.training import (
    average_precisions,
    positive_weights,
    predict,
    validation_figures,
)

STACK_SIZE = 16
"""Copies trained together (a batch of subsets is cut into stacks of this many, the last one
padded), fixed so that a subset's rounding does not depend on its batch-mates' number (a
batch with per-subset budgets stacks the few that train in a smaller stack)."""


def fine_tuned_figures(base: SignMLP, spec: ModelSpec, taskset: TaskSet, subsets: np.ndarray,
                       config: TrainConfig, epochs: int, seed: int, device: torch.device,
                       keep_best: bool, target: TruthTarget = "loss",
                       stack_size: int = STACK_SIZE,
                       budgets: np.ndarray | None = None) -> np.ndarray:
    """[b, s] validation figures (``target``: mean cross-entropy, or 1 − average precision)
    of each subset's tasks after fine-tuning θ0 on the subset for ``epochs`` epochs, with
    early stopping when ``keep_best`` (:func:`grouping.training.run_epochs`'s rule), as
    :meth:`grouping.families.binary.BinaryLabelFamily.fine_tune` followed by
    ``validation_losses`` computes them one subset at a time; ``stack_size`` copies at a
    time (another size than :data:`STACK_SIZE` only for benchmarks: the figures then differ
    from the pipeline's in float rounding).

    ``budgets`` [b] gives each subset a number of epochs of its own (at most ``epochs``): a
    fixed schedule of that length, its state taken after its own budget, or with
    ``keep_best`` the best of epochs 0..budget; the subsets are stacked in order of their
    budgets, so that a stack trains only as long as its longest budget, and a budget of 0 is
    θ0's own figures. The copies that train are stacked ``stack_size`` at a time, or, when
    fewer train, in one stack of the smallest power of two that holds them (padded as
    always): a subset's figures then depend, in float rounding only, on which of its
    batch's subsets train (the config fixes the batches, so not on the number of workers)."""
    if spec.dropout > 0:
        raise ValueError("stacked fine-tuning draws no dropout masks; use the one-copy loop")
    subsets = np.asarray(subsets)
    if budgets is None:
        order, budgets = np.arange(len(subsets)), None
    else:
        budgets = np.minimum(np.asarray(budgets, dtype=np.int64), epochs)
        order = np.argsort(budgets, kind="stable")
    figures = np.empty(subsets.shape)
    if budgets is not None and (budgets == 0).any():
        untrained = budgets == 0
        every_task = np.arange(taskset.num_tasks)
        figures[untrained] = validation_head_figures(base, spec, taskset, every_task, device,
                                                     target=target)[subsets[untrained]]
        order = order[~untrained[order]]
    if budgets is not None and 0 < len(order) < stack_size:
        stack_size = min(stack_size, 1 << (len(order) - 1).bit_length())
    for start in range(0, len(order), stack_size):
        chosen = order[start:start + stack_size]
        padded = _padded(chosen, stack_size)
        stack_budgets = None if budgets is None else budgets[padded]
        figures[chosen] = _fine_tune_stack(
            base, spec, taskset, subsets[padded], config,
            epochs if stack_budgets is None else int(stack_budgets.max()), seed, device,
            keep_best, target, stack_budgets)[:len(chosen)]
    return figures


@torch.no_grad()
def validation_head_figures(model: SignMLP, spec: ModelSpec, taskset: TaskSet,
                            tasks: np.ndarray, device: torch.device,
                            heads: np.ndarray | None = None,
                            target: TruthTarget = "loss") -> np.ndarray:
    """Each of ``tasks``' validation figure (:func:`grouping.training.validation_figures`)
    under head ``heads[k]`` of ``model`` (default: head = task), from one forward of a copy
    holding only those heads, ``model`` left as it was."""
    val = taskset.indices(VAL)
    logits = predict(select_heads(model, spec, tasks if heads is None else heads),
                     torch.tensor(taskset.features[val], device=device)).double()
    labels = torch.tensor(taskset.labels[np.ix_(val, tasks)], dtype=torch.float64,
                          device=device)
    return validation_figures(logits, labels, target)


def _padded(indices: np.ndarray, size: int) -> np.ndarray:
    """``indices`` padded to ``size`` with repeats of its last entry (a full stack)."""
    return np.concatenate([indices, np.repeat(indices[-1:], size - len(indices), 0)])


@dataclass(frozen=True)
class FineTuningCurves:
    """Each of ``tasks``' validation curve when θ0 is fine-tuned on that task alone, at
    epochs 0..E ([tasks, E + 1] each): its average precision (NaN without a validation
    positive), its positive-weighted mean BCE (what the ``val_loss`` criterion averages) and
    its figure (``target``)."""

    tasks: np.ndarray
    precision: np.ndarray
    weighted_loss: np.ndarray
    figure: np.ndarray


def fine_tuning_curves(base: SignMLP, spec: ModelSpec, taskset: TaskSet, tasks: np.ndarray,
                       config: TrainConfig, epochs: int, seed: int, device: torch.device,
                       target: TruthTarget = "loss",
                       stack_size: int = STACK_SIZE) -> FineTuningCurves:
    """The :class:`FineTuningCurves` of ``tasks``: one copy of θ0 per task (its trunk, head
    and skip row) trained side by side for ``epochs`` epochs as :func:`fine_tuned_figures`
    trains a subset's copy (one batch order from ``seed``, Adam at ``config.lr``), every copy
    evaluated after each epoch; ``stack_size`` copies at a time, the last stack padded."""
    if spec.dropout > 0:
        raise ValueError("stacked fine-tuning draws no dropout masks; use a model without "
                         "dropout")
    tasks = np.asarray(tasks)
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(tasks), stack_size):
        chunk = tasks[start:start + stack_size]
        padded = _padded(chunk, stack_size)
        stack = _StackedCopies(base, spec, taskset, padded[:, None], config, device)
        generator = torch.Generator().manual_seed(seed)
        epochs_seen = []
        for epoch in range(epochs + 1):
            if epoch:
                stack.train_epoch(generator)
            logits = stack.validation_logits()
            epochs_seen.append((stack.precisions(logits)[:, 0].cpu().numpy(),
                                stack.weighted_losses(logits).mean(1)[:, 0].double()
                                .cpu().numpy(),
                                stack.figures(logits, target)[:, 0]))
        parts.append(tuple(np.stack(series, axis=1)[:len(chunk)]
                           for series in zip(*epochs_seen, strict=True)))
    precision, weighted_loss, figure = (np.concatenate(series)
                                        for series in zip(*parts, strict=True))
    return FineTuningCurves(tasks, precision, weighted_loss, figure)


class _StackedCopies:
    """One copy of θ0 per row of ``subsets`` (its trunk and that subset's heads), stacked,
    with each copy's training and validation targets, positive weights and Adam."""

    def __init__(self, base: SignMLP, spec: ModelSpec, taskset: TaskSet, subsets: np.ndarray,
                 config: TrainConfig, device: torch.device) -> None:
        copies = [select_heads(base, spec, subset).to(device) for subset in subsets]
        self.template = copies[0]
        self.params, self.buffers = stack_module_state(copies)
        self.config = config
        self.features = torch.tensor(taskset.features, device=device)
        self.train_rows = torch.from_numpy(taskset.indices(TRAIN)).to(device)
        val_rows = torch.from_numpy(taskset.indices(VAL)).to(device)
        # targets[model, row, head]: each copy's own label columns
        self.targets = torch.from_numpy(np.stack([taskset.labels[:, subset]
                                                  for subset in subsets])
                                        .astype(np.float32)).to(device)
        train_labels = taskset.labels[taskset.indices(TRAIN)]
        self.pos_weight = torch.stack([positive_weights(train_labels[:, subset],
                                                        config.pos_weight)
                                       for subset in subsets]).to(device)[:, None, :]
        self.val_features, self.val_targets = self.features[val_rows], self.targets[:, val_rows]
        trainable = [value for value in self.params.values() if value.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.lr,
                                          weight_decay=config.weight_decay)

    def logits(self, state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """[models, rows, heads] logits of every copy under ``state`` (stacked parameters)."""
        return vmap(lambda p, b, x: functional_call(self.template, (p, b), (x,)),
                    in_dims=(0, 0, None))(state, self.buffers, inputs)

    def train_epoch(self, generator: torch.Generator) -> None:
        """One epoch of every copy over the training rows, in one batch order drawn from
        ``generator``: each copy's mean positive-weighted BCE over its batch and heads."""
        order = self.train_rows[torch.randperm(len(self.train_rows), generator=generator)
                                .to(self.train_rows.device)]
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start:start + self.config.batch_size]
            self.optimizer.zero_grad(set_to_none=True)
            batch_losses = binary_cross_entropy_with_logits(
                self.logits(self.params, self.features[rows]), self.targets[:, rows],
                pos_weight=self.pos_weight, reduction="none").mean((1, 2))
            batch_losses.sum().backward()
            self.optimizer.step()

    @torch.no_grad()
    def validation_logits(self, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[models, validation rows, heads] logits under ``state`` (default: the current)."""
        return self.logits(self.params if state is None else state, self.val_features)

    def weighted_losses(self, logits: torch.Tensor) -> torch.Tensor:
        """[models, validation rows, heads] positive-weighted BCE of each copy's heads (what
        the ``val_loss`` criterion averages)."""
        return binary_cross_entropy_with_logits(logits, self.val_targets,
                                                pos_weight=self.pos_weight, reduction="none")

    def precisions(self, logits: torch.Tensor) -> torch.Tensor:
        """[models, heads] validation average precision of each copy's heads (NaN without a
        validation positive)."""
        return average_precisions(logits.permute(1, 0, 2).flatten(1),
                                  self.val_targets.permute(1, 0, 2).flatten(1)
                                  ).view(len(logits), -1)

    def figures(self, logits: torch.Tensor, target: TruthTarget) -> np.ndarray:
        """[models, heads] validation figures (``target``) of each copy's heads, one column
        per (copy, head) as the one-copy figure of each copy's heads."""
        figures = validation_figures(logits.double().permute(1, 0, 2).flatten(1),
                                     self.val_targets.double().permute(1, 0, 2).flatten(1),
                                     target)
        return figures.reshape(len(logits), -1)


def _fine_tune_stack(base: SignMLP, spec: ModelSpec, taskset: TaskSet, subsets: np.ndarray,
                     config: TrainConfig, epochs: int, seed: int, device: torch.device,
                     keep_best: bool, target: TruthTarget,
                     budgets: np.ndarray | None = None) -> np.ndarray:
    stack = _StackedCopies(base, spec, taskset, subsets, config, device)
    if budgets is not None and not keep_best:
        return _budgeted_stack(stack, epochs, seed, budgets, target)
    reads_ap = config.early_stopping == "val_ap"
    use_ap = reads_ap & stack.val_targets.flatten(1).any(1)

    def criteria() -> torch.Tensor:
        """Each copy's validation criterion (lower is better), [models]."""
        logits = stack.validation_logits()
        losses = stack.weighted_losses(logits).mean((1, 2)).double()
        if not reads_ap:
            return losses.cpu()
        mean_ap = torch.nanmean(stack.precisions(logits), dim=1)
        return torch.where(use_ap, 1.0 - mean_ap, losses).cpu()

    def snapshot() -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in stack.params.items()}

    best_state, best = (snapshot(), criteria()) if keep_best else ({}, None)
    since_best = torch.zeros(len(subsets), dtype=torch.long)
    stopped = torch.zeros(len(subsets), dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        stack.train_epoch(generator)
        if not keep_best:  # a fixed schedule keeps its last state: nothing to evaluate
            continue
        current = criteria()
        improved = (current < best) & ~stopped
        with torch.no_grad():
            for name, value in stack.params.items():
                mask = improved.to(device).view(-1, *[1] * (value.dim() - 1))
                best_state[name] = torch.where(mask, value.detach(), best_state[name])
        best = torch.where(improved, current, best)
        since_best = torch.where(improved, 0, since_best + 1)
        stopped |= since_best >= config.patience
        if budgets is not None:  # a copy's candidates end at its own budget
            stopped |= torch.from_numpy(budgets <= epoch)
        if bool(stopped.all()):
            break
    return stack.figures(stack.validation_logits(best_state if keep_best else None), target)


def _budgeted_stack(stack: _StackedCopies, epochs: int, seed: int, budgets: np.ndarray,
                    target: TruthTarget) -> np.ndarray:
    """Figures of each copy after ``budgets[k]`` epochs of a fixed schedule (``epochs``, the
    largest, are run; a copy's state is taken when its budget is reached)."""
    kept = {name: value.detach().clone() for name, value in stack.params.items()}
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        stack.train_epoch(generator)
        reached = torch.from_numpy(budgets == epoch).to(stack.features.device)
        with torch.no_grad():
            for name, value in stack.params.items():
                mask = reached.view(-1, *[1] * (value.dim() - 1))
                kept[name] = torch.where(mask, value.detach(), kept[name])
    return stack.figures(stack.validation_logits(kept), target)
