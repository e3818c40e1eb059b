"""Training and evaluation of LoRA adapters on instruction tasks: base, group, single-task and
true fine-tuning runs all go through :func:`train_lm`.

The training loss is the answer tokens' cross-entropy (and the closing eos), averaged per
example. A task's loss for validation, early stopping, the surrogate and true affinity is the
output function's: the mean over its examples of −log σ(f(x)), with f the gold answer's
log-odds (:mod:`grouping.models.lm_outputs`). Test metrics: exact match (greedy decoding
reproduces the gold answer, judged by teacher forcing: every answer position's argmax is the
gold token, the eos included) and token accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy, softplus

from grouping.config import LanguageModelConfig, OptimizerName, TrainConfig
from grouping.models.lm_batches import EncodedExamples, encode_examples
from grouping.models.lm_outputs import logodds_from_logits, token_logits
from grouping.models.lora_lm import LMSpec, adapter_state, build_lm, load_adapter
from grouping.optim import ADATASK_OPTIMIZERS, task_gradients
from grouping.tasksets import TEST, TRAIN, VAL
from grouping.tasksets.instructions import InstructionTaskSet
from grouping.training import TrainResult, run_epochs

EVAL_BATCH = 256


def encode_for(model: nn.Module, taskset: InstructionTaskSet, spec: LMSpec) -> EncodedExamples:
    """The task set's examples encoded for ``model`` (its decoder start token, if any)."""
    return encode_examples(taskset, spec, getattr(model.config, "decoder_start_token_id", None))


def example_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per example, the mean cross-entropy of its answer positions: [B]."""
    logits = token_logits(model, batch).float()
    tokens = cross_entropy(logits.transpose(1, 2), batch["targets"], reduction="none")
    mask = batch["answer_mask"]
    return (tokens * mask).sum(1) / mask.sum(1)


@torch.no_grad()
def evaluate_examples(model: nn.Module, encoded: EncodedExamples, examples: np.ndarray,
                      device: torch.device) -> dict[str, np.ndarray]:
    """Per example: the output f(x) (``logodds``), ``exact`` match and ``token_accuracy``."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"logodds": [], "exact": [], "token_accuracy": []}
    for start in range(0, len(examples), EVAL_BATCH):
        batch = {key: value.to(device) for key, value in
                 encoded.rows(examples[start:start + EVAL_BATCH]).items()}
        logits = token_logits(model, batch).float()
        correct = (logits.argmax(-1) == batch["targets"]).float() * batch["answer_mask"]
        count = batch["answer_mask"].sum(1)
        parts["exact"].append((correct.sum(1) == count).cpu().numpy())
        parts["token_accuracy"].append((correct.sum(1) / count).cpu().numpy())
        parts["logodds"].append(logodds_from_logits(logits, batch).double().cpu().numpy())
    return {key: np.concatenate(value) if value else np.zeros(0)
            for key, value in parts.items()}


def task_losses(taskset: InstructionTaskSet, outputs: np.ndarray, examples: np.ndarray,
                tasks: np.ndarray) -> np.ndarray:
    """Mean −log σ(f) over each task's examples among ``examples`` (outputs in that order)."""
    owners = taskset.task[examples]
    return np.array([softplus(torch.from_numpy(-outputs[owners == task])).mean().item()
                     for task in tasks])


def validation_losses(model: nn.Module, taskset: InstructionTaskSet, encoded: EncodedExamples,
                      tasks: np.ndarray, device: torch.device) -> np.ndarray:
    """f(S, i) of each task: the output function's mean validation loss."""
    examples = taskset.examples_of(tasks, VAL)
    outputs = evaluate_examples(model, encoded, examples, device)["logodds"]
    return task_losses(taskset, outputs, examples, np.asarray(tasks))


def task_metrics(model: nn.Module, taskset: InstructionTaskSet, encoded: EncodedExamples,
                 tasks: np.ndarray, device: torch.device) -> list[dict]:
    """Test exact match, token accuracy and loss of each task."""
    examples = taskset.examples_of(tasks, TEST)
    measured = evaluate_examples(model, encoded, examples, device)
    owners = taskset.task[examples]
    losses = task_losses(taskset, measured["logodds"], examples, np.asarray(tasks))
    return [{"task": int(task),
             "test_exact_match": float(measured["exact"][owners == task].mean()),
             "test_token_accuracy": float(measured["token_accuracy"][owners == task].mean()),
             "test_loss": float(loss)} for task, loss in zip(tasks, losses)]


def _step_function(model: nn.Module, name: OptimizerName, config: TrainConfig,
                   tasks: np.ndarray):
    """The optimisation step on a batch: Adam on the mean loss, or AdaTask over the LoRA
    parameters with one loss per task of ``tasks`` (absent tasks contribute zero)."""
    params = [param for param in model.parameters() if param.requires_grad]
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)

        def adam_step(batch: dict[str, torch.Tensor], owners: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            example_losses(model, batch).mean().backward()
            optimizer.step()
        return adam_step
    adatask = ADATASK_OPTIMIZERS[name]([{"params": params}], lr=config.lr,
                                       weight_decay=config.weight_decay)
    columns = torch.as_tensor(tasks)

    def adatask_step(batch: dict[str, torch.Tensor], owners: torch.Tensor) -> None:
        losses = example_losses(model, batch)
        onehot = (owners[:, None] == columns.to(owners.device)[None, :]).to(losses.dtype)
        adatask.zero_grad(set_to_none=True)
        adatask.step(task_gradients(onehot.T @ losses / len(losses), params))
    return adatask_step


def train_lm(model: nn.Module, taskset: InstructionTaskSet, encoded: EncodedExamples,
             tasks: np.ndarray, config: TrainConfig, seed: int, device: torch.device,
             max_epochs: int | None = None, keep_best: bool = True,
             optimizer: OptimizerName = "adam") -> TrainResult:
    """Train ``model``'s adapter on the training examples of ``tasks`` (the epochs of
    :func:`grouping.training.run_epochs`); early stopping on their validation loss (the output
    function's), best adapter state kept. ``keep_best=False`` runs
    a fixed schedule, keeps the final state and evaluates the validation loss before and
    after the schedule only."""
    tasks = np.asarray(tasks)
    model = model.to(device)
    train_rows = torch.from_numpy(taskset.examples_of(tasks, TRAIN))
    val_rows = taskset.examples_of(tasks, VAL)
    owners_all = torch.tensor(taskset.task)  # a copy: the task set's array may be read-only
    step = _step_function(model, optimizer, config, tasks)

    def train_batch(rows: torch.Tensor) -> None:
        batch = {key: value.to(device) for key, value in encoded.rows(rows).items()}
        step(batch, owners_all[rows].to(device))

    def val_loss() -> float:
        outputs = evaluate_examples(model, encoded, val_rows, device)["logodds"]
        return float(softplus(torch.from_numpy(-outputs)).mean())

    return run_epochs(model, train_rows, train_batch, val_loss, lambda: adapter_state(model),
                      lambda state: load_adapter(model, state), config, seed, max_epochs,
                      keep_best)


def train_lm_group(taskset: InstructionTaskSet, tasks: list[int], lm_config: LanguageModelConfig,
                   train_config: TrainConfig, seed: int, device: torch.device,
                   optimizer: OptimizerName = "adam") -> dict:
    """One fresh adapter trained on ``tasks``; the same result fields as a SIGN-MLP group
    (test metrics per task, spec, adapter state, best epoch and loss, wall time). Task
    dominance is not tracked for adapters."""
    start = time.perf_counter()
    spec = LMSpec.from_config(lm_config)
    model = build_lm(spec, seed)
    encoded = encode_for(model, taskset, spec)
    result = train_lm(model, taskset, encoded, np.asarray(tasks), train_config, seed, device,
                      optimizer=optimizer)
    return {"tasks": task_metrics(model, taskset, encoded, np.asarray(tasks), device),
            "best_epoch": result.best_epoch, "best_criterion": result.best_criterion,
            "spec": spec, "state": result.state, "dominance": None,
            "seconds": time.perf_counter() - start}
