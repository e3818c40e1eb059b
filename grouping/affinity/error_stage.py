"""The error-report stage of a run: the estimate f̂(S, i) saved by the estimates stage against
the true f(S, i) saved by the true-affinity stage (figures: :mod:`grouping.affinity.error_report`),
plus what it computes itself: the linearisation check (θ0 fine-tuned again, its gradient
features recomputed) and the counted FLOPs of each side (:mod:`grouping.flops`)."""

from __future__ import annotations

import numpy as np
import torch

from grouping import run_files
from grouping.affinity.computers import GradientComputer
from grouping.affinity.error_report import error_report
from grouping.affinity.estimators import (
    ESTIMATORS,
    BaseModel,
    EstimatorInputs,
    gradient_projection_dim,
    make_estimator,
)
from grouping.affinity.rows import RowTable
from grouping.affinity.true_affinity import linearization_error, train_subset_from_scratch
from grouping.artifacts import RunDirectory
from grouping.config import RunConfig
from grouping.families import family_of
from grouping.flops import count_flops, flop_comparison
from grouping.models import Spec, restore
from grouping.models.per_task_linear import PerTaskLinear
from grouping.tasksets import AnyTaskSet

CPU = torch.device("cpu")


LOSS_SCALE_FIGURES = ("relative_distance", "mean_relative_error", "median_relative_error",
                      "mean_change")
"""Figures that compare f̂ with f on their own scale: not defined for an estimator whose f̂
is a score (``Estimator.predicts_losses`` false), nor where f̂ predicts another figure than
the truth records (a loss against 1 − AP: ``Estimator.predicted_figure``,
``true_affinity.target``)."""


def true_wall_seconds(seconds: np.ndarray, num_subsets: int, num_workers: int) -> float:
    """The wall time of truly training ``num_subsets`` subsets on the ``num_workers`` workers
    the estimate's stages ran on: the median seconds of one trained subset, times the
    subsets, over the workers (estimate and truth are then timed alike)."""
    return float(np.median(seconds)) * num_subsets / max(1, num_workers)


def against_truth(estimate: np.ndarray, true: dict[str, np.ndarray], scorable: np.ndarray,
                  same_scale: bool = True) -> dict:
    """:func:`error_report` of estimated losses [m, s] of all sampled subsets against the
    arrays of ``true_losses.npz``, over the pairs whose task is ``scorable`` [T]."""
    tasks = true["subsets"].ravel()
    keep = scorable[tasks]
    estimate = estimate[true["subset_index"]].ravel()
    repeat = true["losses_repeat"].ravel()[keep] if "losses_repeat" in true else None
    report = error_report(estimate[keep], true["losses"].ravel()[keep],
                          true["base_losses"][tasks][keep], tasks[keep], repeat)
    if not same_scale:
        report.update(dict.fromkeys(LOSS_SCALE_FIGURES, float("nan")))
    return report


class ErrorStage:
    """Reads a run's gradient features, estimated and true subset losses; computes the
    figures of error_report.json."""

    def __init__(self, run: RunDirectory, taskset: AnyTaskSet, config: RunConfig, spec: Spec,
                 state: dict[str, torch.Tensor], linear: PerTaskLinear | None = None) -> None:
        """``linear``: the per-task regressions the run's models start from
        (``model.skip_init``), for the from-scratch truth's FLOP count."""
        self.run, self.taskset, self.config, self.spec = run, taskset, config, spec
        self.linear = linear
        self.base, self.state = restore(spec, state), state
        self.family = family_of(taskset)
        self.rows = RowTable(**run.load_arrays(run_files.GRADIENT_ROWS))
        self.f0 = run.load_array(run_files.GRADIENT_F0)
        self.gradients = run.load_array(run_files.GRADIENT_FEATURES, mmap=True)
        options = config.affinity
        self.computer = GradientComputer(spec, state, taskset, gradient_projection_dim(options),
                                         config.seed, options.projection,
                                         options.intermediate_dim)

    def report(self) -> dict:
        """Every figure of error_report.json except the grouping ARI (added by the caller)."""
        true = self.run.load_arrays(run_files.TRUE_LOSSES)
        estimated = self.run.load_arrays(run_files.SUBSET_LOSSES)
        has_positive = self.family.scorable_tasks(self.taskset)
        estimator = ESTIMATORS[self.config.affinity.estimator]
        report = against_truth(estimated["losses"], true, has_positive,
                               estimator.predicted_figure(self.config.affinity)
                               == self.config.true_affinity.target)
        report["estimator"] = estimator.name
        seconds = self.run.stage_seconds()
        num_subsets = len(estimated["subsets"])
        report["estimate_seconds"] = seconds["estimates"] + (
            seconds["gradients"] if estimator.uses_gradient_features else 0.0)
        report["estimate_seconds_with_base"] = report["estimate_seconds"] + seconds["base"] + (
            seconds.get("linear", 0.0) if self.config.model.linear_start else 0.0)
        report["true_seconds_per_subset"] = float(np.median(true["seconds"]))
        report["true_seconds_extrapolated"] = true_wall_seconds(
            true["seconds"], num_subsets, self.config.ray.num_workers)
        report["cost_ratio"] = report["estimate_seconds"] / report["true_seconds_extrapolated"]
        report["num_subsets"] = num_subsets
        report["flops"] = self.flops(estimated["subsets"], true["subsets"][0])
        report["linearization_error"] = (
            self.linearization(true["subsets"][:3])
            if self.config.true_affinity.protocol == "fine_tune" else [])
        report["tasks_without_validation_positive"] = np.flatnonzero(~has_positive).tolist()
        report["fine_tuning"] = self.config.true_affinity.model_dump()
        return report

    def _fine_tune(self, subset: np.ndarray) -> torch.nn.Module:
        """θ0 truly fine-tuned on ``subset`` (``true_affinity.epochs``)."""
        return self.family.fine_tune(self.base, self.spec, self.taskset, subset,
                                     self.config.fine_tuning(), self.config.true_affinity.epochs,
                                     self.config.seed, CPU)

    def linearization(self, subsets: np.ndarray) -> list[float]:
        """Linearised vs really fine-tuned logits on the validation rows of a few subsets
        (a family that checks it, with the dense projection, whose Pᵀ Δθ is taken per
        parameter, where the run computed gradient features; none otherwise)."""
        errors = []
        if (not self.family.checks_linearization or self.computer.projector is not None
                or self.computer.dim == 0):
            return errors
        for subset in subsets:
            index = self.rows.rows_of(subset, 1)
            inputs = torch.tensor(self.taskset.features[self.rows.example[index]])
            errors.append(linearization_error(
                self.base, self._fine_tune(subset), self.computer.projection, inputs,
                torch.tensor(self.rows.task[index]), self.f0[index].astype(np.float64),
                self.gradients[index]))
        return errors

    def flops(self, subsets: np.ndarray, true_subset: np.ndarray) -> dict[str, float]:
        """Counted FLOPs: gradient features per row (for an estimator that uses them), the
        estimator's preparation once and its estimate per subset (measured on a sample and
        scaled to all rows and subsets) against one true fine-tuning."""
        estimator = make_estimator(self.config.affinity)
        sample = np.arange(min(256, len(self.rows.example)))
        per_row = (count_flops(lambda: self.computer(self.rows.example[sample],
                                                     self.rows.task[sample])) / len(sample)
                   if estimator.uses_gradient_features else 0.0)
        table = EstimatorInputs(self.rows, self.f0, self.gradients, BaseModel(
            self.taskset, self.spec, self.state, self.config.fine_tuning(), self.config.seed,
            self.config, self.linear))
        prepared: list = []
        preparation = count_flops(lambda: prepared.append(estimator.prepare(subsets, table)))
        fitted = subsets[:2]
        per_subset = count_flops(lambda: estimator.estimate(fitted, table, prepared[0]))
        if self.config.true_affinity.protocol == "from_scratch":
            true = count_flops(lambda: train_subset_from_scratch(
                self.taskset, true_subset, self.config, self.config.seed, CPU, self.linear))
        else:
            true = count_flops(lambda: self._fine_tune(true_subset))
        return flop_comparison(per_row, len(self.rows.example), per_subset / len(fitted), true,
                               len(subsets), preparation)
