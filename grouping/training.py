"""The one training loop used for base, group and single-task models.

Binary cross-entropy on the logits of the active heads (each task's positives optionally
up-weighted, ``train.pos_weight``), Adam or AdaTask, mini-batches over the training split,
early stopping on a validation criterion of the active heads (``train.early_stopping``: the
loss, or one minus the mean per-task average precision), best checkpoint kept. The epoch loop
itself, :func:`run_epochs`, is shared with the LoRA adapters (:mod:`grouping.lm_training`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import OptimizerName, PositiveWeighting, TrainConfig, TruthTarget
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
    """Best state (by the validation criterion, lower is better), its epoch and criterion,
    the per-epoch criterion curve (entry 0: before training) and, when tracked, the
    task-dominance fraction of each shared layer at the end of training."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_criterion: float
    criterion_curve: list[float]
    dominance: dict[str, float] | None = None

    def record(self, epoch: int, criterion: float,
               snapshot: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Add an epoch's validation criterion to the curve; when it is the best so far, keep
        ``snapshot()`` as the best state and return True."""
        self.criterion_curve.append(criterion)
        if criterion >= self.best_criterion:
            return False
        self.state, self.best_epoch, self.best_criterion = snapshot(), epoch, criterion
        return True


def positive_weights(labels: np.ndarray, rule: PositiveWeighting) -> torch.Tensor:
    """Per-column weight of the positive term of the BCE, from training labels [n, k].

    With r = (negatives / positives) of a column: ``none`` → 1, ``sqrt`` → √r, ``balanced`` → r
    (positives and negatives then carry equal total weight, as scikit-learn's
    ``class_weight="balanced"`` up to a common factor). A column without a positive (or
    without a negative) gets 1.
    """
    positives = labels.sum(axis=0).astype(np.float64)
    negatives = len(labels) - positives
    ratio = np.where((positives > 0) & (negatives > 0), negatives / np.maximum(positives, 1),
                     1.0)
    weights = {"none": np.ones_like(ratio), "sqrt": np.sqrt(ratio), "balanced": ratio}[rule]
    return torch.tensor(weights, dtype=torch.float32)


def _loss(logits: torch.Tensor, targets: torch.Tensor,
          pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows and heads of −[w_k·y·log σ(z) + (1 − y)·log(1 − σ(z))]."""
    return binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def _task_losses(logits: torch.Tensor, targets: torch.Tensor,
                 pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_k = batch-mean BCE of head k / number of heads, so that Σ_k L_k = ``_loss``."""
    losses = binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight,
                                              reduction="none").mean(0)
    return losses / logits.shape[1]


def average_precisions(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each column's average precision, AP = Σ_n (R_n − R_{n−1}) P_n over the distinct score
    thresholds n (tied scores form one threshold, as scikit-learn's
    ``average_precision_score``); NaN for a column without a positive."""
    ordered, order = torch.sort(scores, dim=0, descending=True)
    ranked = torch.gather(targets, 0, order).to(torch.float64)
    hits = ranked.cumsum(0)
    ranks = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float64)
    threshold_end = torch.ones_like(ranked, dtype=torch.bool)
    threshold_end[:-1] = ordered[:-1] != ordered[1:]
    hits_at_ends = torch.where(threshold_end, hits, torch.zeros_like(hits))
    previous = torch.cat([torch.zeros_like(hits[:1]), hits_at_ends.cummax(0).values[:-1]])
    new_hits = torch.where(threshold_end, hits - previous, torch.zeros_like(hits))
    positives = ranked.sum(0)
    precision_sum = (new_hits * hits / ranks[:, None]).sum(0)
    return torch.where(positives > 0, precision_sum / positives.clamp(min=1),
                       torch.full_like(positives, float("nan")))


def validation_figures(logits: torch.Tensor, labels: torch.Tensor,
                       target: TruthTarget = "loss") -> np.ndarray:
    """Each column's figure from logits and 0/1 labels [n, k] (float64): its mean
    cross-entropy (``target: loss``) or 1 − its average precision (``ap``; 1 for a column
    without a positive, a constant that ranks nothing)."""
    if target == "ap":
        return 1.0 - np.nan_to_num(average_precisions(logits, labels).cpu().numpy())
    losses = torch.nn.functional.softplus(logits) - labels * logits
    return losses.mean(0).cpu().numpy()


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over columns with a positive of each column's :func:`average_precisions`; NaN
    when no column has a positive."""
    precisions = average_precisions(scores, targets)
    present = ~torch.isnan(precisions)
    if not bool(present.any()):
        return float("nan")
    return float(precisions[present].mean())


def make_step(model: nn.Module, name: OptimizerName, config: TrainConfig,
              tracker: DominanceTracker | None,
              pos_weight: torch.Tensor | None = None) -> Step:
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
            _loss(logits, targets, pos_weight).backward(retain_graph=split is not None)
            if split is None:
                optimizer.step()
            else:
                split.step(task_gradients(_task_losses(logits, targets, pos_weight),
                                           split.params))
        return adam_step
    shared = list(model.trunk.parameters())
    specific = [param for param_name, param in model.named_parameters()
                if not param_name.startswith("trunk.") and param.requires_grad]
    adatask = ADATASK_OPTIMIZERS[name]([{"params": shared}, {"params": specific,
                                                              "shared": False}],
                                       lr=config.lr, weight_decay=config.weight_decay,
                                       tracker=tracker)

    def adatask_step(logits: torch.Tensor, targets: torch.Tensor) -> None:
        adatask.zero_grad(set_to_none=True)
        losses = _task_losses(logits, targets, pos_weight)
        losses.sum().backward(inputs=specific, retain_graph=True)
        adatask.step(task_gradients(losses, shared))
    return adatask_step


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of every head for every row, [n, num_heads], in eval mode."""
    model.eval()
    return torch.cat([model(features[start:start + batch_size])
                      for start in range(0, len(features), batch_size)])


def run_epochs(model: nn.Module, train_rows: torch.Tensor,
               train_batch: Callable[[torch.Tensor], None], criterion: Callable[[], float],
               snapshot: Callable[[], dict[str, torch.Tensor]],
               restore: Callable[[dict[str, torch.Tensor]], object], config: TrainConfig,
               seed: int, max_epochs: int | None = None, keep_best: bool = True) -> TrainResult:
    """The epoch loop of every model family, with early stopping on a validation criterion.

    Each epoch puts ``model`` in train mode, shuffles ``train_rows`` (a permutation drawn
    from a generator seeded with ``seed``, moved to the rows' device) and hands them to
    ``train_batch`` in consecutive batches of ``config.batch_size`` rows. ``criterion()`` is
    the validation criterion (lower is better); ``snapshot()`` copies the state worth keeping
    (the whole model, or only its trainable part) and ``restore(state)`` loads one back.
    ``max_epochs`` overrides ``config.max_epochs``. Dropout masks are drawn from the global
    random state seeded with ``seed`` for the loop (and restored after it), so that a model's
    training depends on its seed alone, not on what the worker ran before.

    With ``keep_best`` (early stopping), the criterion is evaluated before training (epoch 0,
    the starting state the first best) and after every epoch, each value appended to the
    criterion curve; an epoch that improves on the best so far keeps a snapshot, and training
    stops once ``config.patience`` epochs in a row have not improved. The best state is then
    restored into the model. With ``keep_best=False`` (a fixed schedule), every epoch runs,
    the criterion is evaluated before and after the schedule only (a curve of two entries)
    and the model keeps its final state, while the result's state, epoch and criterion are
    those of the better of the two evaluations.
    """
    generator = torch.Generator().manual_seed(seed)
    best = TrainResult(snapshot(), 0, criterion(), [])
    best.criterion_curve.append(best.best_criterion)
    since_best = 0
    epochs = max_epochs or config.max_epochs
    cuda = [train_rows.device] if train_rows.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            order = train_rows[torch.randperm(len(train_rows), generator=generator)
                               .to(train_rows.device)]
            for start in range(0, len(order), config.batch_size):
                train_batch(order[start:start + config.batch_size])
            if not keep_best and epoch < epochs:
                continue
            since_best = 0 if best.record(epoch, criterion(), snapshot) else since_best + 1
            if keep_best and since_best >= config.patience:
                break
    if keep_best:
        restore(best.state)
    return best


def train_model(model: nn.Module, taskset: TaskSet, label_columns: np.ndarray,
                config: TrainConfig, seed: int, device: torch.device,
                active_heads: np.ndarray | None = None,
                max_epochs: int | None = None, keep_best: bool = True,
                optimizer: OptimizerName = "adam", track_dominance: bool = False,
                dominance_decay: float = 0.9) -> TrainResult:
    """Train ``model`` whose head k predicts label column ``label_columns[k]``.

    Only ``active_heads`` (default: all) enter the loss. The epochs are :func:`run_epochs`'s;
    ``max_epochs`` overrides the config's. ``keep_best=False`` runs a fixed schedule: no early
    stopping, the model keeps its final state, and the criterion is evaluated before and
    after the schedule only (a curve of two entries; nothing in between reads it).

    The validation criterion (lower is better) is ``config.early_stopping``: ``val_loss``, the
    training objective (with its positive weights) on the validation rows, or ``val_ap``,
    1 − the mean over active heads of validation average precision (the loss when no active
    head has a validation positive).

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
    pos_weight = positive_weights(taskset.labels[taskset.indices(TRAIN)][:, columns],
                                  config.pos_weight).to(device)
    step = make_step(model, optimizer, config, tracker, pos_weight)
    val_targets = targets[val_rows]
    use_ap = config.early_stopping == "val_ap" and bool(val_targets.any())

    def train_batch(rows: torch.Tensor) -> None:
        step(model(features[rows])[:, head_index], targets[rows])

    def val_criterion() -> float:
        logits = predict(model, features[val_rows])[:, head_index]
        if use_ap:
            return 1.0 - mean_average_precision(logits, val_targets)
        return float(_loss(logits, val_targets, pos_weight))

    best = run_epochs(model, train_rows, train_batch, val_criterion,
                      lambda: copy.deepcopy(model.state_dict()), model.load_state_dict, config,
                      seed, max_epochs, keep_best)
    if tracker is not None:
        best.dominance = tracker.fractions()
    return best
