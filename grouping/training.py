"""The one training loop used for base, group and single-task models.

Binary cross-entropy on the logits of the active heads, Adam or AdaTask, mini-batches over the
training split, early stopping on the validation loss of the active heads, best checkpoint
kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import OptimizerName, TrainConfig
from grouping.optim import ADATASK_OPTIMIZERS, AdamTaskSplit, DominanceTracker, task_gradients
from grouping.tasksets import TRAIN, VAL, TaskSet

Step = Callable[[torch.Tensor, torch.Tensor], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    """Best state (by validation loss), its epoch and loss, the per-epoch curve and, when
    tracked, the task-dominance fraction of each shared layer at the end of training."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    val_curve: list[float]
    dominance: dict[str, float] | None = None

    def record(self, epoch: int, loss: float,
               snapshot: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Add an epoch's validation loss to the curve; when it is the best so far, keep
        ``snapshot()`` as the best state and return True."""
        self.val_curve.append(loss)
        if loss >= self.best_val_loss:
            return False
        self.state, self.best_epoch, self.best_val_loss = snapshot(), epoch, loss
        return True


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return binary_cross_entropy_with_logits(logits, targets)


def _task_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_k = batch-mean BCE of head k / number of heads, so that Σ_k L_k = ``_loss``."""
    losses = binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)
    return losses / logits.shape[1]


def make_step(model: nn.Module, name: OptimizerName, config: TrainConfig,
              tracker: DominanceTracker | None) -> Step:
    """The optimisation step of :func:`train_model`: a function of a batch's logits (with
    their graph) and targets. For per-task updates the model's ``trunk`` is shared and every
    other parameter (the heads) task-specific; the tracker, if any, gets each step's task
    updates of the trunk."""
    if name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        split = None if tracker is None else AdamTaskSplit(
            optimizer, list(model.trunk.parameters()), tracker)

        def adam_step(logits: torch.Tensor, targets: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            _loss(logits, targets).backward(retain_graph=split is not None)
            if split is None:
                optimizer.step()
            else:
                split.step(task_gradients(_task_losses(logits, targets), split.params))
        return adam_step
    shared = list(model.trunk.parameters())
    specific = [param for param_name, param in model.named_parameters()
                if not param_name.startswith("trunk.")]
    adatask = ADATASK_OPTIMIZERS[name]([{"params": shared}, {"params": specific,
                                                              "shared": False}],
                                       lr=config.lr, weight_decay=config.weight_decay,
                                       tracker=tracker)

    def adatask_step(logits: torch.Tensor, targets: torch.Tensor) -> None:
        adatask.zero_grad(set_to_none=True)
        losses = _task_losses(logits, targets)
        losses.sum().backward(inputs=specific, retain_graph=True)
        adatask.step(task_gradients(losses, shared))
    return adatask_step


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of every head for every row, [n, num_heads], in eval mode."""
    model.eval()
    return torch.cat([model(features[start:start + batch_size])
                      for start in range(0, len(features), batch_size)])


def train_model(model: nn.Module, taskset: TaskSet, label_columns: np.ndarray,
                config: TrainConfig, seed: int, device: torch.device,
                active_heads: np.ndarray | None = None,
                max_epochs: int | None = None, keep_best: bool = True,
                optimizer: OptimizerName = "adam", track_dominance: bool = False,
                dominance_decay: float = 0.9) -> TrainResult:
    """Train ``model`` whose head k predicts label column ``label_columns[k]``.

    Only ``active_heads`` (default: all) enter the loss. ``max_epochs`` overrides the
    config's. ``keep_best=False`` runs a fixed schedule: no early stopping, and the model
    keeps its final state (the result still reports the best epoch seen).

    ``optimizer`` is ``adam`` (``config.weight_decay`` as an L2 term) or an AdaTask variant
    (:mod:`grouping.optim.adatask`; decoupled weight decay) over the model's ``trunk``, each
    active head's loss a task. AdaTask models need a ``trunk`` module and treat every other
    parameter as task-specific. ``track_dominance`` reports the task dominance of each trunk
    parameter at the end of training (:mod:`grouping.optim.dominance`, AU decay
    ``dominance_decay``); it costs per-task gradients of the trunk at every Adam step and
    leaves Adam's trajectory unchanged.
    """
    heads = np.arange(len(label_columns)) if active_heads is None else np.asarray(active_heads)
    columns = np.asarray(label_columns)[heads]
    features = torch.tensor(taskset.features, device=device)
    targets = torch.from_numpy(taskset.labels[:, columns].astype(np.float32)).to(device)
    train_rows = torch.from_numpy(taskset.indices(TRAIN)).to(device)
    val_rows = torch.from_numpy(taskset.indices(VAL)).to(device)
    head_index = torch.tensor(heads, device=device)
    model = model.to(device)
    tracker = DominanceTracker([f"trunk.{name}" for name, _ in model.trunk.named_parameters()],
                               dominance_decay) if track_dominance else None
    step = make_step(model, optimizer, config, tracker)
    generator = torch.Generator().manual_seed(seed)

    def val_loss() -> float:
        logits = predict(model, features[val_rows])[:, head_index]
        return float(_loss(logits, targets[val_rows]))

    best = TrainResult(copy.deepcopy(model.state_dict()), 0, val_loss(), [])
    best.val_curve.append(best.best_val_loss)
    since_best = 0
    for epoch in range(1, (max_epochs or config.max_epochs) + 1):
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).to(device)]
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            step(model(features[rows])[:, head_index], targets[rows])
        improved = best.record(epoch, val_loss(), lambda: copy.deepcopy(model.state_dict()))
        since_best = 0 if improved else since_best + 1
        if keep_best and since_best >= config.patience:
            break
    if keep_best:
        model.load_state_dict(best.state)
    if tracker is not None:
        best.dominance = tracker.fractions()
    return best
