"""The stages of a run, declared once as data: each stage's name, the config sections its
inputs depend on (their digest decides whether a resumed run reuses it), the files it writes,
the :class:`~workers.pipeline.Pipeline` method that computes them and when a config runs it.

The pipeline runs them in this order; the driver's ``--until`` choices are their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grouping import run_files
from grouping.config import RunConfig

LINEAR_SECTIONS = ("seed", "taskset", "features")
BASE_SECTIONS = (*LINEAR_SECTIONS, "model", "language_model", "train")
ESTIMATE_SECTIONS = (*BASE_SECTIONS, "affinity")


def true_sections(config: RunConfig) -> tuple[str, ...]:
    """What a true training of a subset depends on: the estimate's inputs, its own section
    and, when each subset is trained from scratch as a group model is, the group training."""
    scratch = config.true_affinity.protocol == "from_scratch"
    return (*ESTIMATE_SECTIONS, "true_affinity", *(("group_training",) if scratch else ()))


def clusters_truth(config: RunConfig) -> bool:
    """Whether the run also groups the true affinity of every subset (the oracle groups)."""
    return config.true_affinity.enabled and config.true_affinity.all_subsets


def estimates_by_gradients(config: RunConfig) -> bool:
    """``affinity.method: gradtag`` (an estimator) rather than true training of each subset."""
    return config.affinity.method == "gradtag"


def fits_linear(config: RunConfig, binary_labels: bool) -> bool:
    """Whether the run fits one logistic regression per task: binary-label task sets, when
    models start from it or it is a compared row."""
    return binary_labels and (config.model.linear_start or config.groups.per_task_linear)


def affinity_sections(config: RunConfig) -> tuple[str, ...]:
    """What the affinity matrix depends on: the estimate's inputs, or the true training's."""
    return ESTIMATE_SECTIONS if estimates_by_gradients(config) else true_sections(config)


def group_sections(config: RunConfig) -> tuple[str, ...]:
    base = true_sections(config) if clusters_truth(config) else affinity_sections(config)
    return (*base, "clustering")


def _error_sections(config: RunConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*group_sections(config), *true_sections(config))))


def _true_affinity_files(config: RunConfig) -> tuple[str, ...]:
    return (run_files.TRUE_LOSSES, *((run_files.TRUE_AFFINITY,) if clusters_truth(config) else ()))


def _fixed(*items: str) -> Callable[[RunConfig], tuple[str, ...]]:
    return lambda config: items


def _always(config: RunConfig, binary_labels: bool) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage: ``sections(config)`` and ``files(config)``; ``method`` names the Pipeline
    method that writes the files; ``runs(config, binary_labels)`` whether this config runs it
    (``binary_labels``: the task set has binary labels, not instructions)."""

    name: str
    sections: Callable[[RunConfig], tuple[str, ...]]
    files: Callable[[RunConfig], tuple[str, ...]]
    method: str
    runs: Callable[[RunConfig, bool], bool] = _always


STAGES: tuple[Stage, ...] = (
    Stage("linear", _fixed(*LINEAR_SECTIONS),
          _fixed(run_files.LINEAR_MODEL, run_files.PER_TASK_LINEAR), "_linear",
          fits_linear),
    Stage("base", _fixed(*BASE_SECTIONS), _fixed(run_files.BASE_MODEL, run_files.BASE_METRICS),
          "_base"),
    Stage("gradients", _fixed(*ESTIMATE_SECTIONS),
          _fixed(run_files.GRADIENT_ROWS, run_files.GRADIENT_F0, run_files.GRADIENT_FEATURES),
          "_gradients", lambda config, binary: estimates_by_gradients(config)),
    Stage("estimates", _fixed(*ESTIMATE_SECTIONS),
          _fixed(run_files.SUBSET_LOSSES, run_files.SUBSET_LOSSES_CSV), "_estimates",
          lambda config, binary: estimates_by_gradients(config)),
    Stage("true_subsets", true_sections,
          _fixed(run_files.SUBSET_LOSSES, run_files.SUBSET_LOSSES_CSV), "_true_subsets",
          lambda config, binary: not estimates_by_gradients(config)),
    Stage("affinity", affinity_sections, _fixed(run_files.AFFINITY), "_affinity"),
    Stage("true_affinity", true_sections, _true_affinity_files, "_true_losses",
          lambda config, binary: config.true_affinity.enabled),
    Stage("groups", group_sections, _fixed(run_files.GROUPS), "_groups"),
    Stage("error_report", _error_sections, _fixed(run_files.ERROR_REPORT), "_error_report",
          lambda config, binary: config.true_affinity.enabled),
    Stage("dmtg", lambda config: (*affinity_sections(config), "clustering", "dmtg",
                                  "group_training"),
          _fixed(run_files.DMTG), "_dmtg", lambda config, binary: config.dmtg.enabled),
    Stage("comparison", lambda config: (*group_sections(config), "groups", "group_training",
                                        "dmtg"),
          _fixed(run_files.COMPARISON, run_files.TASK_METRICS), "_comparison"),
)

STAGE_NAMES = tuple(stage.name for stage in STAGES)
