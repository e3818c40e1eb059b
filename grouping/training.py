"""The one training loop used for base, group and single-task models.

Binary cross-entropy on the logits of the active heads, Adam, mini-batches over the training
split, early stopping on the validation loss of the active heads, best checkpoint kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import TrainConfig
from grouping.tasksets import TRAIN, VAL, TaskSet


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    """Best state (by validation loss), its epoch and loss, and the per-epoch curve."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    val_curve: list[float]


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return binary_cross_entropy_with_logits(logits, targets)


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of every head for every row, [n, num_heads], in eval mode."""
    model.eval()
    return torch.cat([model(features[start:start + batch_size])
                      for start in range(0, len(features), batch_size)])


def train_model(model: nn.Module, taskset: TaskSet, label_columns: np.ndarray,
                config: TrainConfig, seed: int, device: torch.device,
                active_heads: np.ndarray | None = None,
                max_epochs: int | None = None, keep_best: bool = True) -> TrainResult:
    """Train ``model`` whose head k predicts label column ``label_columns[k]``.

    Only ``active_heads`` (default: all) enter the loss. ``max_epochs`` overrides the
    config's. ``keep_best=False`` runs a fixed schedule: no early stopping, and the model
    keeps its final state (the result still reports the best epoch seen).
    """
    heads = np.arange(len(label_columns)) if active_heads is None else np.asarray(active_heads)
    columns = np.asarray(label_columns)[heads]
    features = torch.tensor(taskset.features, device=device)
    targets = torch.from_numpy(taskset.labels[:, columns].astype(np.float32)).to(device)
    train_rows = torch.from_numpy(taskset.indices(TRAIN)).to(device)
    val_rows = torch.from_numpy(taskset.indices(VAL)).to(device)
    head_index = torch.tensor(heads, device=device)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
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
            optimizer.zero_grad(set_to_none=True)
            _loss(model(features[rows])[:, head_index], targets[rows]).backward()
            optimizer.step()
        current = val_loss()
        best.val_curve.append(current)
        if current < best.best_val_loss:
            best.state = copy.deepcopy(model.state_dict())
            best.best_epoch, best.best_val_loss, since_best = epoch, current, 0
        else:
            since_best += 1
            if keep_best and since_best >= config.patience:
                break
    if keep_best:
        model.load_state_dict(best.state)
    return best
