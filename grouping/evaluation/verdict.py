"""The bottom line of a run, in words a newcomer reads: which grouping to use, by how much the
estimated groups beat (or lose to) each alternative trained the same way, and whether the
affinity estimate carried information on this task set.

"Beats" means a gap beyond two standard errors of the difference, √(se_a² + se_b²), with the
standard errors over initialisation seeds (:class:`grouping.evaluation.comparison.Gap`).
Rows are compared only under the same optimizer; DMTG (its own Adam search and fine-tuning)
is set against the estimated groups' Adam row, and the per-task logistic regression (no
optimizer choice) against the leading row.
"""

from __future__ import annotations

from dataclasses import dataclass

from grouping.affinity.error_report import ROOM_FIGURES
from grouping.evaluation.comparison import (
    METRIC_LABELS,
    Gap,
    format_mean,
    gap,
    models_at_start,
)

ROW_LABELS = {"all": "all tasks in one model", "gradtag": "estimated groups",
              "spectral": "spectral groups of the estimate", "true": "true-affinity groups",
              "random": "random groups", "single": "one model per task", "dmtg": "DMTG",
              "dmtg_groups": "DMTG's groups, trained as the others",
              "per_task_linear": "one logistic regression per task"}
OPTIMIZER_LABELS = {"adam": "Adam", "adatask_adam": "AdaTask-Adam",
                    "adatask_adam_mean": "AdaTask-Adam (mean of task steps)",
                    "adatask_rmsprop": "AdaTask-RMSprop", "adatask_adagrad": "AdaTask-Adagrad",
                    "lbfgs": "L-BFGS"}
OWN_TRAINING = ("dmtg", "per_task_linear")


def grouping_label(grouping: str) -> str:
    """``estimated groups``: the readable name of a comparison row's grouping."""
    return ROW_LABELS.get(grouping, grouping)


def optimizer_label(optimizer: str) -> str:
    """``AdaTask-Adam``: the readable name of an optimizer."""
    return OPTIMIZER_LABELS.get(optimizer, optimizer)


def row_label(line: dict) -> str:
    """``estimated groups (AdaTask-Adam)``: the row's readable name and its optimizer."""
    return f"{grouping_label(line['grouping'])} ({optimizer_label(line['optimizer'])})"


def estimate_information(report: dict | None) -> str | None:
    """Whether the estimate ranked the subsets of each task: its within-task Spearman
    correlation with the truth against the truth's own agreement between two training seeds
    (the noise floor)."""
    if report is None or report.get("within_task_spearman") is None:
        return None
    rho, floor = report["within_task_spearman"], report.get("true_noise_floor")
    if rho != rho:
        return ("The affinity estimate's within-task agreement with the truth could not be "
                "measured: too few truly trained subsets per task.")
    if floor is None or floor != floor or floor <= 0:
        return (f"The affinity estimate's within-task Spearman correlation with the truth is "
                f"{rho:.2f}; without a repeated truth there is no noise floor to judge it by.")
    ratio = rho / floor
    judgement = ("carried no information about which subsets help a task" if ratio < 0.1
                 else "carried weak information" if ratio < 0.5
                 else "ranked each task's subsets well")
    sentence = (f"The affinity estimate {judgement} on this task set: within-task Spearman "
                f"{rho:.2f} against the truth, whose own seed-to-seed agreement is {floor:.2f} "
                f"({ratio:.0%} of it; 0 is chance).")
    room = [report.get(f"true_{key}") for key in ROOM_FIGURES]
    if all(value is not None and value == value for value in room):
        sentence += (f" The room grouping has: a task's subsets move its true figure by "
                     f"{room[0]:.1%} (standard deviation, what repeats between seeds), one "
                     f"training seed by {room[1]:.1%}; its best subset under one seed saves "
                     f"{room[2]:.1%} under the other.")
    return sentence


def _singular(difference: Gap) -> str:
    return ("beats" if difference.beats else "loses to" if difference.loses
            else "is indistinguishable from")


@dataclass(frozen=True)
class Comparison:
    """One of the leading grouping's rows (``own``) against an alternative row."""

    own: dict
    other: dict
    difference: Gap

    @property
    def gain(self) -> str:
        """``+0.071 ± 0.021``: the gain with its standard error (none without a spread)."""
        spread = f" ± {self.difference.se:.3f}" if self.difference.se else ""
        return f"{self.difference.gain:+.3f}{spread}"

    def short(self) -> str:
        """``estimated groups vs random groups +0.071 ± 0.021, beats``."""
        difference = self.difference
        word = ("beats" if difference.beats else "loses" if difference.loses
                else "indistinguishable")
        return (f"{grouping_label(self.own['grouping'])} vs "
                f"{grouping_label(self.other['grouping'])} {self.gain}, {word}")


@dataclass(frozen=True)
class Verdict:
    """The best row and its runner-up, the leading grouping's comparisons, the estimate's
    information (None without an error report), the metric they are on and the primary
    optimizer (the one every grouping was trained with)."""

    best: dict
    runner_up: dict | None
    comparisons: list[Comparison]
    information: str | None
    metric: str
    primary: str

    @property
    def key(self) -> str:
        return f"mean_{self.metric}"

    @property
    def label(self) -> str:
        return METRIC_LABELS[self.metric]

    def recommendation(self) -> str:
        """"use X (optimizer; mean metric m ± se)", and whether the runner-up is
        distinguishable from it."""
        text = f"use {row_label(self.best)}: mean {self.label} {format_mean(self.best, self.key)}"
        if self.runner_up is None:
            return text
        margin, runner_up = gap(self.best, self.runner_up, self.key), row_label(self.runner_up)
        if margin.beats:
            return f"{text}, ahead of the next best, {runner_up}, by {margin.describe()}"
        if margin.se is None:
            return (f"{text}, ahead of {runner_up} by {margin.gain:+.3f}, a margin with no "
                    "spread to judge it by (a single run)")
        return f"{text}, indistinguishable from {runner_up} ({margin.describe()})"

    def headline(self) -> str:
        """One console line: the recommendation, then the estimated groups against all
        tasks in one model and against random groups."""
        parts = [f"verdict: {self.recommendation()}"]
        parts += [item.short() for item in self.comparisons
                  if item.other["grouping"] in ("all", "random")
                  and item.own["optimizer"] == self.primary]
        return "; ".join(parts)

    def models_at_start(self) -> str | None:
        """A line saying how many of the leading grouping's models (primary optimizer) kept
        their starting state, where any did: the partition cannot change those models."""
        leading = next((item.own for item in self.comparisons
                        if item.own["optimizer"] == self.primary), None)
        if leading is None or not leading.get("kept_start_fraction"):
            return None
        return f"- {models_at_start(leading, grouping_label(leading['grouping']))}."

    def versus(self, grouping: str) -> Comparison | None:
        """The leading grouping against ``grouping``'s row, both under the primary
        optimizer (None when the comparison has no such row)."""
        return next((item for item in self.comparisons if item.other["grouping"] == grouping
                     and item.own["optimizer"] == item.other["optimizer"] == self.primary),
                    None)

    def lines(self) -> list[str]:
        """The report's opening section (Markdown)."""
        recommendation = self.recommendation()
        lines = ["## Verdict", "", f"**{recommendation[0].upper()}{recommendation[1:]}.**", ""]
        lines += [f"- {row_label(item.own)} {_singular(item.difference)} "
                  f"{row_label(item.other)}: {item.difference.describe()} mean {self.label}."
                  for item in self.comparisons]
        at_start = self.models_at_start()
        if at_start:
            lines.append(at_start)
        if self.information:
            lines += ["", self.information]
        lines += ["", f"Mean {self.label} over tasks, on the test split. \"Beats\" means a gap "
                  "beyond two standard errors of the difference (over initialisation seeds); "
                  "rows are compared only when trained with the same optimizer."]
        return lines


def verdict(summary: list[dict], error_report: dict | None = None) -> Verdict:
    """The verdict of a comparison's summary lines (``summarize_rows``), whose first line is
    the all-in-one model under the primary optimizer."""
    metric = summary[0]["metric"]
    key = f"mean_{metric}"
    primary = summary[0]["optimizer"]
    by_key = {(line["grouping"], line["optimizer"]): line for line in summary}
    leading = "gradtag" if ("gradtag", primary) in by_key else "true"
    candidates = sorted((line for line in summary
                         if line["optimizer"] == primary or line["grouping"] in OWN_TRAINING),
                        key=lambda line: -line[key])
    comparisons = []
    for line in summary:
        if line["grouping"] == leading:
            continue
        if line["grouping"] == "dmtg":
            own = by_key.get((leading, "adam"))
        else:
            own = by_key.get((leading, line["optimizer"]))
            if line["grouping"] == "per_task_linear":
                own = by_key[(leading, primary)]
        if own is not None:
            comparisons.append(Comparison(own, line, gap(own, line, key)))
    return Verdict(candidates[0], candidates[1] if len(candidates) > 1 else None, comparisons,
                   estimate_information(error_report), metric, primary)
