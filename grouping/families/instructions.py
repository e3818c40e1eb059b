"""Instruction task sets: a language model fine-tuned through LoRA adapters, its output
f(x) the gold answer's log-odds (Grad-TAG, Sec. 3.1, for instruction tuning), its per-task
figure the output function's mean −log σ(f) (:mod:`grouping.models.lm_outputs`)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from grouping import lm_training
from grouping.affinity.lm_outputs import lm_output_gradients
from grouping.affinity.rows import RowTable, instruction_rows
from grouping.config import RunConfig, TrainConfig, TruthTarget
from grouping.families.base import OutputRows, TaskFamily
from grouping.models.lm_outputs import answer_logodds
from grouping.models.lora_lm import LMSpec
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import VAL, InstructionTaskSet


class AnswerOutputs(OutputRows):
    """f(x): the gold answer's log-odds of example x (its task is the example's own)."""

    output = staticmethod(answer_logodds)

    def __init__(self, model: nn.Module, spec: LMSpec, taskset: InstructionTaskSet,
                 device: torch.device) -> None:
        self.device = device
        self.encoded = lm_training.encode_for(model, taskset, spec)

    def batch(self, examples: np.ndarray, tasks: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: value.to(self.device) for key, value in self.encoded.rows(examples).items()}

    def vmap_gradients(self, model: nn.Module, projection: dict[str, torch.Tensor],
                       batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return lm_output_gradients(model, projection, batch)


class InstructionFamily(TaskFamily):
    name = "instructions"
    binary_labels = False
    supports_dmtg = False
    tracks_dominance = False
    checks_linearization = False
    metric_names = ("test_exact_match", "test_token_accuracy")

    def rows(self, taskset: InstructionTaskSet, max_negatives: int | None,
             seed: int) -> RowTable:
        """Each task's examples, label 1 (instruction tasks have no negatives)."""
        return instruction_rows(taskset)

    def scorable_tasks(self, taskset: InstructionTaskSet) -> np.ndarray:
        """Tasks with a validation example (all labelled 1)."""
        return np.bincount(taskset.task[taskset.indices(VAL)], minlength=taskset.num_tasks) > 0

    def train_group(self, taskset: InstructionTaskSet, tasks: list[int], config: RunConfig,
                    train_config: TrainConfig, device: torch.device, optimizer: str = "adam",
                    track_dominance: bool = False, seed: int | None = None,
                    linear: PerTaskLinear | None = None) -> dict:
        """One fresh LoRA adapter on ``tasks`` (:func:`grouping.lm_training.train_lm_group`);
        dominance is not tracked and there is no linear start."""
        seed = config.seed if seed is None else seed
        return lm_training.train_lm_group(taskset, tasks, config.language_model, train_config,
                                          seed, device, optimizer)

    def fine_tune(self, base: nn.Module, spec: LMSpec, taskset: InstructionTaskSet,
                  subset: np.ndarray, config: TrainConfig, epochs: int | None, seed: int,
                  device: torch.device, keep_best: bool = False) -> nn.Module:
        """A copy of θ0 whose adapter is trained on ``subset``'s examples."""
        model = copy.deepcopy(base)
        encoded = lm_training.encode_for(model, taskset, spec)
        schedule = config if epochs is None else config.model_copy(update={"max_epochs": epochs})
        lm_training.train_lm(model, taskset, encoded, subset, schedule, seed, device,
                             keep_best=keep_best or epochs is None)
        return model

    def validation_losses(self, model: nn.Module, spec: LMSpec, taskset: InstructionTaskSet,
                          tasks: np.ndarray, device: torch.device,
                          heads: np.ndarray | None = None,
                          target: TruthTarget = "loss") -> np.ndarray:
        """The output function's mean validation loss of each task (one model output for
        every task: ``heads`` does not apply; ``target`` is always the loss)."""
        encoded = lm_training.encode_for(model, taskset, spec)
        return lm_training.validation_losses(model, taskset, encoded, tasks, device)

    def output_rows(self, model: nn.Module, spec: LMSpec, taskset: InstructionTaskSet,
                    device: torch.device) -> AnswerOutputs:
        return AnswerOutputs(model, spec, taskset, device)
