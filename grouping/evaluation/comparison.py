"""Rows of comparison.json: one per trained grouping (and seed, for random groups), optimizer
and initialisation seed; their summary over seeds (mean, standard deviation, standard error)
and the verdict logic: a grouping "beats" another only when the gap exceeds two standard
errors of the difference, √(se_a² + se_b²)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    """A grouping to train: its name, groups, the seconds its search took, and, for a
    grouping drawn once per initialisation seed (random groups, DMTG's groups), the number of
    that draw: its models are trained with the run's seed plus that number."""

    name: str
    groups: list[list[int]]
    search_seconds: float = 0.0
    seed: int | None = None


def mean_dominance(results: list[dict]) -> dict[str, float] | None:
    """Per shared layer, the dominance fraction averaged over the models of three or more
    tasks (one task always dominates its own model, and of two tasks one almost always holds
    more than half)."""
    tracked = [result["dominance"] for result in results
               if result.get("dominance") and len(result["tasks"]) > 2]
    if not tracked:
        return None
    return {layer: float(np.mean([dominance[layer] for dominance in tracked]))
            for layer in tracked[0]}


METRIC_LABELS = {"test_f1": "test F1", "test_ap": "test AP",
                 "test_exact_match": "test exact match",
                 "test_token_accuracy": "test token accuracy"}


def summary_keys(line: dict) -> tuple[str, str, str]:
    """The mean-primary, worst-primary and mean-secondary keys of a comparison row."""
    return (f"mean_{line['metric']}", f"worst_{line['metric']}",
            f"mean_{line['secondary_metric']}")


def kept_start_fraction(results: list[dict]) -> float | None:
    """The fraction of a grouping's models whose early stopping kept their starting state
    (best epoch 0: the per-task regressions under the linear start): such a model is the
    same whatever tasks share it, so a partition of them cannot change the outcome. None
    where no model records a best epoch (a deterministic baseline; DMTG, whose models start
    from its search)."""
    epochs = [result["best_epoch"] for result in results if "best_epoch" in result]
    return float(np.mean([epoch == 0 for epoch in epochs])) if epochs else None


def comparison_row(plan: Plan, results: list[dict], optimizer: str, init_seed: int | None,
                   metric_names: tuple[str, str]) -> dict:
    """Mean and worst per-task primary test metric (F1, or exact match for instruction
    tasks), mean secondary metric (AP over tasks with a positive test example, or token
    accuracy), cost (the grouping search plus the summed wall time of its models' training),
    the fraction of its models that kept their start (:func:`kept_start_fraction`) and,
    when tracked, the dominance fraction per shared layer. ``init_seed``: the seed its
    models were initialised with (None for a deterministic baseline); ``metric_names``: the
    task family's (primary, secondary) metrics."""
    tasks = [task for result in results for task in result["tasks"]]
    primary, secondary = metric_names
    scores = np.array([task[primary] for task in tasks])
    others = np.array([task[secondary] for task in tasks])
    train_seconds = float(sum(result["seconds"] for result in results))
    return {"grouping": plan.name, "optimizer": optimizer, "num_groups": len(plan.groups),
            "seed": plan.seed, "init_seed": init_seed, "metric": primary,
            "secondary_metric": secondary,
            f"mean_{primary}": float(scores.mean()), f"worst_{primary}": float(scores.min()),
            f"mean_{secondary}": float(np.nanmean(others)) if np.isfinite(others).any()
            else float("nan"),
            "search_seconds": float(plan.search_seconds), "train_seconds": train_seconds,
            "seconds": float(plan.search_seconds) + train_seconds,
            "lrs": sorted({result["lr"] for result in results if "lr" in result}),
            "kept_start_fraction": kept_start_fraction(results),
            "dominance": mean_dominance(results)}


def format_value(value: float | None, se: float | None = None) -> str:
    """``0.412 ± 0.013``: a figure and its standard error (left out when None or 0), or "–"
    for a figure that is missing or not finite."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3f}" + (f" ± {se:.3f}" if se else "")


def format_fraction(value: float | None) -> str:
    """``83%`` of a fraction, or "–" where it is not recorded."""
    return "–" if value is None else f"{100 * value:.0f}%"


def models_at_start(line: dict, label: str) -> str | None:
    """``75% of the estimated groups' models kept their starting state ...``: the sentence
    on a summary line's ``kept_start_fraction`` (``label``: the row's readable name), None
    where the line records none."""
    share = line.get("kept_start_fraction")
    if share is None:
        return None
    return (f"{format_fraction(share)} of the {label}' models kept their starting state "
            "(early stopping at epoch 0; under the linear start, the per-task regressions): "
            "a partition of those changes nothing")


def format_mean(line: dict, key: str) -> str:
    """:func:`format_value` of a summary line's ``key`` with its standard error ``key_se``."""
    return format_value(line[key], line.get(f"{key}_se"))


def summarize_rows(rows: list[dict]) -> list[dict]:
    """One line per grouping and optimizer: the mean over its runs (seeds) and, with two
    runs or more, their standard deviation (``_std``, ddof 1) and the standard error of the
    mean (``_se``). A row whose ``init_seed`` is null is deterministic (its ``_se`` is 0);
    a single seeded run, or seeded runs that agree exactly, have no standard error (None).
    ``kept_start_fraction``: the mean over its runs (None where none records it)."""
    summary = []
    for grouping, optimizer in dict.fromkeys((row["grouping"], row["optimizer"])
                                             for row in rows):
        mine = [row for row in rows
                if row["grouping"] == grouping and row["optimizer"] == optimizer]
        deterministic = all("init_seed" in row and row["init_seed"] is None
                            and row.get("seed") is None for row in mine)
        line = {"grouping": grouping, "optimizer": optimizer,
                "num_groups": mine[0]["num_groups"], "runs": len(mine),
                "deterministic": deterministic,
                "dominance": mine[0].get("dominance"), "metric": mine[0]["metric"],
                "kept_start_fraction": _mean_of_known(
                    [row.get("kept_start_fraction") for row in mine]),
                "secondary_metric": mine[0]["secondary_metric"]}
        for key in (*summary_keys(mine[0]), "seconds"):
            values = np.array([row[key] for row in mine], dtype=float)
            line[key] = float(values.mean())
            spread = len(mine) > 1
            std = float(values.std(ddof=1)) if spread else None
            line[f"{key}_std"] = std
            # Seeded runs that agree exactly say nothing about the noise: no standard error.
            line[f"{key}_se"] = (0.0 if deterministic else None if not std
                                 else std / float(np.sqrt(len(mine))))
        summary.append(line)
    return summary


def _mean_of_known(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


@dataclass(frozen=True)
class Gap:
    """The gap between two summary lines on one metric: ``gain`` (first minus second), its
    standard error √(se_a² + se_b²) (None when a line has no spread), and whether the first
    beats (or loses to) the second beyond two standard errors."""

    gain: float
    se: float | None

    @property
    def z(self) -> float | None:
        if self.se is None:
            return None
        if self.se == 0:
            return 0.0 if self.gain == 0 else float(np.copysign(np.inf, self.gain))
        return self.gain / self.se

    @property
    def beats(self) -> bool:
        return self.z is not None and self.z > 2

    @property
    def loses(self) -> bool:
        return self.z is not None and self.z < -2

    def verb(self, singular: bool = False) -> str:
        """``beat``, ``lose to`` or ``are indistinguishable from`` (``beats``, ``loses to``,
        ``is indistinguishable from`` for a ``singular`` subject)."""
        if singular:
            return "beats" if self.beats else "loses to" if self.loses else (
                "is indistinguishable from")
        return "beat" if self.beats else "lose to" if self.loses else "are indistinguishable from"

    def describe(self) -> str:
        """``+0.053 ± 0.017 (3.1 standard errors)``, or the gain alone without a spread."""
        if self.se is None:
            return f"{self.gain:+.3f} (no spread: a single run)"
        if self.se == 0:
            return f"{self.gain:+.3f} (both rows deterministic)"
        return f"{self.gain:+.3f} ± {self.se:.3f} ({self.z:.1f} standard errors)"


def gap(first: dict, second: dict, key: str) -> Gap:
    """:class:`Gap` of ``first`` over ``second`` on summary key ``key`` (e.g. mean_test_f1)."""
    errors = [first.get(f"{key}_se"), second.get(f"{key}_se")]
    se = None if any(error is None for error in errors) else float(np.hypot(*errors))
    return Gap(float(first[key] - second[key]), se)
