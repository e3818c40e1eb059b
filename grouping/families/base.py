"""One interface per kind of task set (LibMTL's and TRAK's pattern: the task behaviour is an
object passed in, one subclass per family, never a string or type special case in a stage).

A :class:`TaskFamily` says, for its kind of task set, what the rows of the affinity estimate
are, how a model of a group of tasks is trained and measured, how θ0 is fine-tuned on a
subset, what the model-output function f(x) of Grad-TAG (Li, Sharma, Zhang, KDD 2024, Sec.
3.1) is and how its per-example gradients are taken, and which options apply to it. The
family of a task set is resolved once (:func:`grouping.families.family_of`) and every stage
asks it; a new family (a graph network, a vision backbone) is one new module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from grouping.affinity.rows import RowTable
    from grouping.config import RunConfig, TrainConfig, TruthTarget
    from grouping.models import Spec
    from grouping.models.per_task_linear import PerTaskLinear
    from grouping.tasksets import AnyTaskSet


class OutputRows(ABC):
    """The model-output function f of a family on rows of one task set, built once per worker
    for a model: batches of (example, task) rows, f itself (for the hook gradient engine) and
    its per-example projected gradients by vmap of grad (for the ``dense`` projection)."""

    output: Callable[[nn.Module, object], torch.Tensor]

    @abstractmethod
    def batch(self, examples: np.ndarray, tasks: np.ndarray) -> object:
        """The model inputs of rows (examples[b], tasks[b]) on the model's device."""

    @abstractmethod
    def vmap_gradients(self, model: nn.Module, projection: dict[str, torch.Tensor],
                       batch: object) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 [B] and Pᵀ∇f [B, d] with respect to the parameters ``projection`` names."""


class TaskFamily(ABC):
    """The behaviour of one kind of task set. Capability flags:

    ``binary_labels``: examples carry a 0/1 label per task (per-task logistic regressions, an
    AP truth, estimators that read labels, a linear start apply); ``supports_dmtg``: DMTG's
    one-shot grouping applies; ``tracks_dominance``: group models report task dominance;
    ``checks_linearization``: the error report compares linearised with fine-tuned outputs.
    ``metric_names``: the (primary, secondary) per-task test metrics of its models.
    """

    name: ClassVar[str]
    binary_labels: ClassVar[bool]
    supports_dmtg: ClassVar[bool]
    tracks_dominance: ClassVar[bool]
    checks_linearization: ClassVar[bool]
    metric_names: ClassVar[tuple[str, str]]

    @abstractmethod
    def rows(self, taskset: AnyTaskSet, max_negatives: int | None, seed: int) -> RowTable:
        """Every training and validation (example, task) row the affinity estimate uses."""

    @abstractmethod
    def scorable_tasks(self, taskset: AnyTaskSet) -> np.ndarray:
        """[T] bool: tasks whose validation loss measures something."""

    @abstractmethod
    def train_group(self, taskset: AnyTaskSet, tasks: list[int], config: RunConfig,
                    train_config: TrainConfig, device: torch.device, optimizer: str = "adam",
                    track_dominance: bool = False, seed: int | None = None,
                    linear: PerTaskLinear | None = None) -> dict:
        """A fresh model trained on ``tasks`` from scratch (seed default ``config.seed``):
        per-task test metrics (``tasks``), ``spec``, best ``state`` (CPU tensors),
        ``best_epoch``, ``best_criterion``, ``dominance`` (or None) and ``seconds``."""

    @abstractmethod
    def fine_tune(self, base: nn.Module, spec: Spec, taskset: AnyTaskSet, subset: np.ndarray,
                  config: TrainConfig, epochs: int | None, seed: int,
                  device: torch.device, keep_best: bool = False) -> nn.Module:
        """A copy of θ0 fine-tuned on ``subset``'s tasks: ``epochs`` set, a fixed schedule
        of that many epochs (last state kept; with ``keep_best``, the state of the best
        validation criterion among epochs 0..epochs, as early stopping keeps); None, early
        stopping as ``config`` says."""

    def fine_tuned_figures(self, base: nn.Module, spec: Spec, taskset: AnyTaskSet,
                           subsets: np.ndarray, config: TrainConfig, epochs: int, seed: int,
                           device: torch.device, keep_best: bool = False,
                           target: TruthTarget = "loss",
                           budgets: np.ndarray | None = None) -> np.ndarray:
        """[b, s] validation figures (``target``) of each subset's tasks after θ0 is fine-tuned
        on the subset (:meth:`fine_tune` with ``epochs`` and ``keep_best``, then
        :meth:`validation_losses`); with ``budgets`` [b], min(budget, ``epochs``) epochs per
        subset instead (0: θ0 itself). One subset at a time here, a family may train several
        at once."""
        subsets = np.asarray(subsets)
        if budgets is None:
            budgets = np.full(len(subsets), epochs)
        return np.stack([
            self.validation_losses(
                base if budget == 0 else self.fine_tune(base, spec, taskset, subset, config,
                                                        int(min(budget, epochs)), seed, device,
                                                        keep_best),
                spec, taskset, subset, device, target=target)
            for subset, budget in zip(subsets, budgets, strict=True)])

    @abstractmethod
    def validation_losses(self, model: nn.Module, spec: Spec, taskset: AnyTaskSet,
                          tasks: np.ndarray, device: torch.device,
                          heads: np.ndarray | None = None,
                          target: TruthTarget = "loss") -> np.ndarray:
        """Each of ``tasks``' validation figure under ``model`` (head ``heads[k]`` for
        ``tasks[k]``, default head = task): its loss, or 1 − AP (``target``) where the
        family has labels to rank."""

    @abstractmethod
    def output_rows(self, model: nn.Module, spec: Spec, taskset: AnyTaskSet,
                    device: torch.device) -> OutputRows:
        """The output function of ``model`` on this task set's rows."""
