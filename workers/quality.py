"""The grouping-quality benchmark of one config: which truth, which groups, with error bars.

For a config it runs the pipeline twice on one base model and one set of sampled subsets:

1. ``true_affinity.protocol: from_scratch``, every subset really trained (a fresh model per
   subset, as a group model is trained) and a sample of them under a second seed (the noise
   floor), then the comparison of every grouping over ``group_training.seeds``
   initialisation seeds: all-in-one, the estimated groups, the oracle groups (clustering of
   the true affinity matrix), random groups of the same sizes, DMTG, single-task where it
   fits, and one logistic regression per task;
2. the same run directory, copied, with ``protocol: fine_tune`` (θ0 fine-tuned per subset):
   only the stages that depend on the truth rerun, and only the fine-tune oracle's group
   models are trained (the others are read back from the copy).

It then reads both error reports and comparisons and returns the figures and verdicts:
whether each oracle beats random groups (which truth is the target an estimator must rank),
and whether the estimated groups do. "Beats" means a gap beyond two standard errors of the
difference of the two rows (:func:`grouping.evaluation.comparison.gap`).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from grouping.affinity.subsets import subsets_for_coverage
from grouping.artifacts import RunDirectory
from grouping.config import RunConfig, load_config
from grouping.evaluation.comparison import format_value, gap, summarize_rows
from workers.pipeline import Pipeline

PROTOCOLS = ("from_scratch", "fine_tune")
ROW_NAMES = {"all": "all-in-one", "gradtag": "estimated groups", "random": "random groups",
             "single": "single-task", "dmtg": "DMTG", "per_task_linear": "per-task logistic"}
ESTIMATOR = "surrogate"


@dataclass(frozen=True)
class BenchmarkSettings:
    """The benchmark's caps: estimator subsets (the truth trains every one of them), the
    truth's repeated sample (noise floor), initialisation seeds, random-group draws, and the
    largest task count for which single-task models are trained; ``fine_tune: false`` leaves
    out the second truth (its run and its oracle rows)."""

    max_subsets: int = 100
    repeat_subsets: int = 100
    seeds: int = 3
    random_seeds: int = 3
    single_task_max_tasks: int = 30
    seed: int = 0
    fine_tune: bool = True

    @property
    def protocols(self) -> tuple[str, ...]:
        """The truths measured: from scratch always, fine-tuning θ0 unless left out."""
        return PROTOCOLS if self.fine_tune else PROTOCOLS[:1]


def overrides(config: RunConfig, settings: BenchmarkSettings, protocol: str) -> list[str]:
    """``--set`` assignments that turn a config into the benchmark's run of ``protocol``.

    Task dominance is not measured (``group_training.dominance_max_tasks=1``): tracking it
    takes every task's trunk gradient at every step, about fifteen times the training cost
    of a 100-task model, and leaves the trained models unchanged."""
    options = config.affinity
    count = options.num_subsets or subsets_for_coverage(config.taskset.num_tasks,
                                                        options.subset_size, options.coverage)
    subsets = min(count, settings.max_subsets)
    single = config.taskset.num_tasks <= settings.single_task_max_tasks
    return [f"seed={settings.seed}", f"affinity.num_subsets={subsets}",
            "true_affinity.enabled=true", f"true_affinity.protocol={protocol}",
            "true_affinity.all_subsets=true", "true_affinity.repeat=true",
            f"true_affinity.num_subsets={min(settings.repeat_subsets, subsets)}",
            "group_training.optimizers=[adam]",
            f"group_training.lrs=[{config.group_training.first_lr}]",
            f"group_training.seeds={settings.seeds}", "group_training.dominance_max_tasks=1",
            "groups.spectral=false",
            f"groups.single_task={str(single).lower()}",
            f"groups.random_seeds={settings.random_seeds}", "groups.per_task_linear=true"]


def _run(config_path: Path, extra: list[str], settings: BenchmarkSettings, protocol: str,
         directory: Path, resume: bool) -> tuple[RunConfig, float]:
    plain = load_config(config_path, extra)
    config = load_config(config_path, [*extra, *overrides(plain, settings, protocol)])
    start = time.perf_counter()
    Pipeline(config, RunDirectory(directory, resume), resume).execute()
    return config, time.perf_counter() - start


def _estimator_figures(report: dict) -> dict:
    floor = report["true_noise_floor"]
    ratio = report["within_task_spearman"] / floor if floor and floor > 0 else float("nan")
    return {"within_task_spearman": report["within_task_spearman"], "noise_floor": floor,
            "ratio_to_floor": ratio, "mean_change": report["mean_change"],
            "true_mean_change": report["mean_true_change"], "spearman": report["spearman"],
            "relative_distance": report["relative_distance"],
            "base_relative_distance": report["base_relative_distance"],
            "cost_ratio": report["cost_ratio"],
            "flop_ratio": (report.get("flops") or {}).get("ratio"),
            "estimate_seconds": report["estimate_seconds"],
            "true_seconds_extrapolated": report["true_seconds_extrapolated"],
            "num_pairs": report["num_pairs"]}


def _row(line: dict, name: str) -> dict:
    metric, secondary = line["metric"], line["secondary_metric"]
    row = {"grouping": name, "optimizer": line["optimizer"], "n_seeds": line["runs"],
           "num_groups": line["num_groups"], "deterministic": line["deterministic"]}
    for key in (metric, secondary):
        row[f"mean_{key}"] = line[f"mean_{key}"]
        row[f"se_{key}"] = line[f"mean_{key}_se"]
    row[f"worst_{metric}"] = line[f"worst_{metric}"]
    row[f"se_worst_{metric}"] = line[f"worst_{metric}_se"]
    return row


def benchmark_config(config_path: Path, workdir: Path, settings: BenchmarkSettings,
                     extra: list[str] = ()) -> dict:
    """Every figure of one config (see the module docstring); runs live under ``workdir``
    (``from_scratch/`` and ``fine_tune/``, resumed when present).

    Returns ``default_estimator``; ``estimators`` {name: within_task_spearman, noise_floor,
    ratio_to_floor, mean_change, true_mean_change, spearman, relative_distance,
    base_relative_distance, cost_ratio, flop_ratio, ...} against the target truth and
    ``estimators_by_truth`` {protocol: {name: ...}} against both; ``truth`` {protocol (the
    target: the truth whose oracle gains most over random groups), num_subsets,
    repeated_subsets, seeds, pair_coverage}; ``rows`` [{grouping, optimizer, n_seeds,
    num_groups, deterministic, mean_/se_ of the primary and secondary test metrics,
    worst_/se_worst_ of the primary}]; ``oracle_beats_random`` {protocol: bool}; ``verdicts``
    {question: sentence} and ``verdict`` (the estimated groups against random groups); ARIs
    against planted families and between estimated and oracle groups; wall ``seconds``."""
    scratch, tuned = workdir / "from_scratch", workdir / "fine_tune"
    config, scratch_seconds = _run(config_path, list(extra), settings, "from_scratch", scratch,
                                   (scratch / "manifest.json").is_file())
    seconds = {"from_scratch_run": scratch_seconds}
    if settings.fine_tune:
        if not tuned.is_dir():
            # Hard links: every artifact is replaced by rename when rewritten, never in place.
            shutil.copytree(scratch, tuned, ignore=shutil.ignore_patterns("tune"),
                            copy_function=os.link)
        seconds["fine_tune_run"] = _run(config_path, list(extra), settings, "fine_tune", tuned,
                                        True)[1]
    protocols = settings.protocols
    runs = {protocol: RunDirectory(workdir / protocol, True) for protocol in protocols}
    lines = {protocol: {line["grouping"]: line
                        for line in summarize_rows(run.read_json("comparison.json"))}
             for protocol, run in runs.items()}
    summary = dict(lines["from_scratch"])
    summary.pop("true", None)
    names = {**ROW_NAMES}
    for protocol in protocols:
        if "true" in lines[protocol]:
            summary[f"oracle_{protocol}"] = lines[protocol]["true"]
            names[f"oracle_{protocol}"] = f"oracle groups ({protocol.replace('_', '-')} truth)"
    key = f"mean_{summary['all']['metric']}"
    reports = {protocol: run.read_json("error_report.json") for protocol, run in runs.items()}
    oracle_groups = {protocol: run.read_json("groups.json") for protocol, run in runs.items()}
    groups = oracle_groups["from_scratch"]
    oracle_gaps = {protocol: gap(summary[f"oracle_{protocol}"], summary["random"], key)
                   for protocol in protocols
                   if f"oracle_{protocol}" in summary and "random" in summary}
    target = max(oracle_gaps, key=lambda protocol: oracle_gaps[protocol].gain,
                 default="from_scratch")
    result = {
        "default_estimator": ESTIMATOR,
        "estimators": {ESTIMATOR: _estimator_figures(reports[target])},
        "estimators_by_truth": {protocol: {ESTIMATOR: _estimator_figures(reports[protocol])}
                                for protocol in protocols},
        "truth": {"protocol": target, "num_subsets": config.affinity.num_subsets,
                  "repeated_subsets": min(settings.repeat_subsets, config.affinity.num_subsets),
                  "seeds": 2, "pair_coverage": _pair_coverage(config)},
        "num_tasks": config.taskset.num_tasks, "num_groups": groups["num_groups"],
        "k_rule": groups["k_rule"], "ari_planted": groups.get("ari_planted"),
        "ari_planted_oracle": {protocol: record.get("ari_planted_true")
                               for protocol, record in oracle_groups.items()},
        "ari_estimated_vs_oracle": {protocol: record.get("ari_estimated_vs_true")
                                    for protocol, record in oracle_groups.items()},
        "metric": summary["all"]["metric"],
        "rows": [_row(line, names.get(name, name)) for name, line in summary.items()],
        "seconds": seconds,
    }
    result["oracle_beats_random"] = {protocol: difference.beats
                                     for protocol, difference in oracle_gaps.items()}
    result["verdicts"] = verdicts(summary, key, names)
    result["verdict"] = result["verdicts"].get("estimated_vs_random",
                                               "no estimated or no random groups to compare")
    return result


def _pair_coverage(config: RunConfig) -> float:
    """How many of the sampled subsets hold a given pair of tasks, on average."""
    tasks, size = config.taskset.num_tasks, config.affinity.subset_size
    return config.affinity.num_subsets * size * (size - 1) / (tasks * (tasks - 1))


def verdicts(summary: dict[str, dict], key: str, names: dict[str, str]) -> dict[str, str]:
    """One sentence per question: does a grouping beat random groups, all-in-one, and the
    per-task linear baseline, beyond two standard errors."""
    metric = key.removeprefix("mean_").replace("_", " ")
    out = {}
    pairs = [("estimated_vs_random", "gradtag", "random"), ("estimated_vs_all", "gradtag", "all")]
    for protocol in PROTOCOLS:
        pairs += [(f"oracle_{protocol}_vs_random", f"oracle_{protocol}", "random"),
                  (f"oracle_{protocol}_vs_all", f"oracle_{protocol}", "all")]
    pairs += [("estimated_vs_per_task_linear", "gradtag", "per_task_linear"),
              ("all_vs_per_task_linear", "all", "per_task_linear")]
    for label, first, second in pairs:
        if first not in summary or second not in summary:
            continue
        difference = gap(summary[first], summary[second], key)
        subject = names.get(first, first)
        out[label] = (f"{subject} {difference.verb} {names.get(second, second)}: "
                      f"{difference.describe()} in mean {metric}")
    return out


def markdown(name: str, figures: dict) -> list[str]:
    """The config's table and verdict lines."""
    metric = figures["metric"]
    secondary = "test_token_accuracy" if metric == "test_exact_match" else "test_ap"
    label = metric.removeprefix("test_").replace("_", " ")
    other = secondary.removeprefix("test_").replace("_", " ")
    estimator = figures["estimators"][figures["default_estimator"]]
    lines = [f"### {name}", "",
             f"{figures['num_tasks']} tasks, k = {figures['num_groups']} ({figures['k_rule']}); "
             f"truth over {figures['truth']['num_subsets']} subsets (pair coverage "
             f"{figures['truth']['pair_coverage']:.1f}), {figures['truth']['repeated_subsets']} "
             f"of them under a second seed. Mean ± standard error over initialisation seeds.",
             "", f"| grouping | seeds | groups | mean test {label} | worst-task test {label} | "
             f"mean test {other} |", "|---|---|---|---|---|---|"]

    for row in figures["rows"]:
        lines.append(f"| {row['grouping']} | {row['n_seeds']} | {row['num_groups']} | "
                     f"{format_value(row[f'mean_{metric}'], row[f'se_{metric}'])} | "
                     f"{format_value(row[f'worst_{metric}'], row[f'se_worst_{metric}'])} | "
                     f"{format_value(row[f'mean_{secondary}'], row[f'se_{secondary}'])} |")
    lines += ["", "| truth protocol | within-task Spearman | noise floor | ratio | pooled "
              "Spearman | mean change f̂ / f | distance f̂ / base | cost ratio (s) | "
              "FLOP ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for protocol, estimators in figures["estimators_by_truth"].items():
        est = estimators[figures["default_estimator"]]
        flops = "–" if est["flop_ratio"] is None else f"{est['flop_ratio']:.2f}"
        lines.append(f"| {protocol} | {est['within_task_spearman']:.3f} | "
                     f"{est['noise_floor']:.3f} | {est['ratio_to_floor']:.2f} | "
                     f"{est['spearman']:.3f} | "
                     f"{est['mean_change']:.3f} / {est['true_mean_change']:.3f} | "
                     f"{est['relative_distance']:.3f} / {est['base_relative_distance']:.3f} | "
                     f"{est['cost_ratio']:.2f} | {flops} |")
    if any(figures["oracle_beats_random"].values()):
        lines += ["", f"Target truth: {figures['truth']['protocol']} (its oracle groups beat "
                  f"random groups by the widest margin); the estimate's within-task ratio to "
                  f"its floor there: {estimator['ratio_to_floor']:.2f}.", ""]
    else:
        lines += ["", "Neither truth's oracle groups beat random groups here: no truth is shown "
                  "to be the target an estimator should rank (the figures above use the "
                  f"{figures['truth']['protocol']} truth, whose oracle gains most).", ""]
    lines += [f"- {sentence}." for sentence in figures["verdicts"].values()]
    return [*lines, ""]
