"""The error report of a run: the estimate f̂(S, i) saved by the surrogate stage against the
true fine-tuning f(S, i) saved by the true-affinity stage, plus the linearisation check and the
counted cost of each side."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grouping.affinity.gradients import output_gradients
from grouping.affinity.kronecker import head_logits, make_projector, projected_output_gradients
from grouping.affinity.projection import dense_projection
from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate import subset_losses
from grouping.affinity.true_affinity import fine_tune, linearization_error
from grouping.artifacts import RunDirectory
from grouping.config import RunConfig
from grouping.evaluation.error_report import error_report
from grouping.evaluation.flops import count_flops, flop_comparison
from grouping.tasksets import VAL, TaskSet

CPU = torch.device("cpu")


class ErrorStage:
    """Reads a run's gradient features, estimated and true subset losses; computes the
    figures of error_report.json."""

    def __init__(self, run: RunDirectory, taskset: TaskSet, config: RunConfig,
                 base: nn.Module) -> None:
        self.run, self.taskset, self.config, self.base = run, taskset, config, base
        self.rows = RowTable(**run.load_arrays("gradients/rows.npz"))
        self.f0 = run.load_array("gradients/f0.npy")
        self.gradients = run.load_array("gradients/features.npy", mmap=True)
        options = config.affinity
        self.projector = None if options.projection == "dense" else make_projector(
            options.projection, base, options.projection_dim, config.seed,
            options.intermediate_dim)
        shapes = {name: param.shape for name, param in base.named_parameters()}
        self.projection = dense_projection(shapes, options.projection_dim, config.seed)

    def report(self) -> dict:
        """Every figure of error_report.json except the grouping ARI (added by the caller)."""
        true = self.run.load_arrays("true_losses.npz")
        estimated = self.run.load_arrays("subset_losses.npz")
        tasks = true["subsets"].ravel()
        has_positive = self.taskset.labels[self.taskset.indices(VAL)].sum(0) > 0
        keep = has_positive[tasks]
        estimate = estimated["losses"][true["subset_index"]].ravel()
        repeat = true["losses_repeat"].ravel()[keep] if "losses_repeat" in true else None
        report = error_report(estimate[keep], true["losses"].ravel()[keep],
                              true["base_losses"][tasks][keep], tasks[keep], repeat)
        seconds = self.run.stage_seconds()
        num_subsets = len(estimated["subsets"])
        report["estimate_seconds"] = seconds["gradients"] + seconds["surrogates"]
        report["estimate_seconds_with_base"] = report["estimate_seconds"] + seconds["base"]
        report["true_seconds_per_subset"] = float(np.median(true["seconds"]))
        report["true_seconds_extrapolated"] = report["true_seconds_per_subset"] * num_subsets
        report["cost_ratio"] = report["estimate_seconds"] / report["true_seconds_extrapolated"]
        report["num_subsets"] = num_subsets
        report["flops"] = self.flops(estimated["subsets"], true["subsets"][0])
        report["linearization_error"] = self.linearization(true["subsets"][:3])
        report["tasks_without_validation_positive"] = np.flatnonzero(~has_positive).tolist()
        report["fine_tuning"] = self.config.true_affinity.model_dump()
        return report

    def _fine_tune(self, subset: np.ndarray) -> nn.Module:
        return fine_tune(self.base, self.taskset, subset, self.config.fine_tuning(),
                         self.config.true_affinity.epochs, self.config.seed, CPU)

    def _inputs(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.taskset.features[self.rows.example[index]]),
                torch.tensor(self.rows.task[index]))

    def linearization(self, subsets: np.ndarray) -> list[float]:
        """Linearised vs really fine-tuned logits on the validation rows of a few subsets
        (with the dense projection, whose Pᵀ Δθ is taken per parameter; none otherwise)."""
        errors = []
        if self.projector is not None:
            return errors
        for subset in subsets:
            index = self.rows.rows_of(subset, 1)
            errors.append(linearization_error(
                self.base, self._fine_tune(subset), self.projection, *self._inputs(index),
                self.f0[index].astype(np.float64), self.gradients[index]))
        return errors

    def flops(self, subsets: np.ndarray, true_subset: np.ndarray) -> dict[str, float]:
        """Counted FLOPs: gradient features per row and surrogate fits per subset (measured
        on a sample and scaled to all rows and subsets) against one true fine-tuning."""
        sample = np.arange(min(256, len(self.rows.example)))
        inputs, tasks = self._inputs(sample)
        if self.projector is None:
            per_row = count_flops(lambda: output_gradients(self.base, self.projection, inputs,
                                                           tasks)) / len(sample)
        else:
            per_row = count_flops(lambda: projected_output_gradients(
                self.base, self.projector, head_logits, (inputs, tasks))) / len(sample)
        options = self.config.affinity
        fitted = subsets[:2]
        per_subset = count_flops(lambda: subset_losses(
            fitted, self.rows, self.f0, self.gradients, options.l2, options.newton_iterations,
            options.tolerance)) / len(fitted)
        true = count_flops(lambda: self._fine_tune(true_subset))
        return flop_comparison(per_row, len(self.rows.example), per_subset, true, len(subsets))
