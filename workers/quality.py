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

Every estimator variant (:data:`VARIANTS`: an estimator of
:mod:`grouping.affinity.estimators` with its options) is run on the same gradient table and
subsets and judged against each truth alike. ``estimate_only`` stops each run after its
error report (no group models): the estimators against the truths, in a fraction of the
time.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grouping import run_files
from grouping.affinity.computers import feature_dim
from grouping.affinity.error_report import ROOM_FIGURES
from grouping.affinity.error_stage import against_truth, true_wall_seconds
from grouping.affinity.estimators import ESTIMATORS, BaseModel
from grouping.affinity.rows import RowTable
from grouping.affinity.subsets import subset_count
from grouping.artifacts import RunDirectory
from grouping.config import AffinityConfig, ConfigError, RunConfig, load_config, parse_config
from grouping.evaluation.comparison import (
    format_fraction,
    format_value,
    gap,
    models_at_start,
    summarize_rows,
)
from grouping.families import family_of
from grouping.models import spec_from_dict
from grouping.tasksets import AnyTaskSet
from workers.estimates import compute_subset_losses
from workers.gradients import compute_gradient_features
from workers.pipeline import Pipeline, linear_start

PROTOCOLS = ("from_scratch", "fine_tune")
VARIANT_GRADIENTS = "benchmark/gradient_features.npy"
VARIANT_GRADIENT_SECONDS = "benchmark/gradient_seconds.json"
"""The projected gradients of the run's rows for estimator variants that read them, where
the run's own estimator reads none, and the seconds they took."""
PROJECTION_FIELDS = ("projection", "projection_dim", "intermediate_dim")
"""The ``affinity`` fields that decide a gradient table: a variant that sets one of them
(``surrogate:projection_dim=2000``) reads a table of its own, computed once per run."""
TRUTH_FIGURES = ("noise_floor", *ROOM_FIGURES)
"""The truth's own figures (error_report.json's ``true_*``): its agreement between two
seeds and the room it leaves for grouping (:func:`grouping.affinity.error_report.
room_for_grouping`)."""
ROW_NAMES = {"all": "all-in-one", "gradtag": "estimated groups", "random": "random groups",
             "single": "single-task", "dmtg": "DMTG", "dmtg_groups": "DMTG's groups",
             "per_task_linear": "per-task logistic"}
VARIANTS = tuple(ESTIMATORS)
"""The variants judged by default: every estimator at its config defaults (the variant
tables of the README name the others they were measured with)."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """The benchmark's caps: estimator subsets (the truth trains every one of them), the
    truth's repeated sample (noise floor), initialisation seeds, random-group draws, and the
    largest task count for which single-task models are trained; the truth ``protocols``
    measured (each its run and its oracle rows); the estimator ``variants`` judged against
    them; ``estimate_only`` trains no group models."""

    max_subsets: int = 100
    repeat_subsets: int = 100
    seeds: int = 3
    random_seeds: int = 3
    single_task_max_tasks: int = 30
    seed: int = 0
    protocols: tuple[str, ...] = PROTOCOLS
    variants: tuple[str, ...] = field(default=VARIANTS)
    estimate_only: bool = False


def subset_caps(items: Sequence[str], names: Sequence[str], option: str,
                default: int = 100) -> dict[str, int]:
    """Each config's cap: ``default``, then the ``N`` (every config) and ``NAME=N`` (the
    config named NAME) items in order, a later item overriding an earlier one; a count
    below 1, or a name that is not among ``names``, raises :class:`ConfigError` naming
    ``option``."""
    caps = dict.fromkeys(names, default)
    for item in items:
        name, _, text = item.rpartition("=")
        if name and name not in names:
            raise ConfigError(f"{option}: no config named {name!r} among "
                              f"{', '.join(names)}")
        try:
            count = int(text)
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"{option}: {item!r} is not N or CONFIG=N with N >= 1")
        caps.update({name: count} if name else dict.fromkeys(names, count))
    return caps


def overrides(config: RunConfig, settings: BenchmarkSettings, protocol: str) -> list[str]:
    """``--set`` assignments that turn a config into the benchmark's run of ``protocol``.

    Task dominance is not measured (``group_training.dominance_max_tasks=1``): tracking it
    takes every task's trunk gradient at every step, about fifteen times the training cost
    of a 100-task model, and leaves the trained models unchanged."""
    options = config.affinity
    subsets = min(subset_count(options, config.taskset.num_tasks), settings.max_subsets)
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
         directory: Path, resume: bool) -> tuple[RunConfig, float, AnyTaskSet]:
    plain = load_config(config_path, extra)
    config = load_config(config_path, [*extra, *overrides(plain, settings, protocol)])
    start = time.perf_counter()
    pipeline = Pipeline(config, RunDirectory(directory, resume), resume)
    pipeline.execute("error_report" if settings.estimate_only else None)
    return config, time.perf_counter() - start, pipeline.taskset


def variant_options(config: RunConfig, variant: str) -> AffinityConfig:
    """The ``affinity`` section of an estimator variant ``NAME[:FIELD=VALUE,...]`` of
    ``config``: each assignment a ``--set affinity.FIELD=VALUE`` (values in YAML; FIELD dotted
    for nested options such as ``first_order.normalize``), validated as the config is."""
    name, _, assignments = variant.partition(":")
    settings = [f"affinity.estimator={name}",
                *(f"affinity.{assignment.strip()}"
                  for assignment in assignments.split(",") if assignment.strip())]
    try:
        return parse_config(config.model_dump(mode="json", exclude_unset=True), settings).affinity
    except ConfigError as error:
        raise ConfigError(f"estimator variant {variant!r}: {error}") from None


def variant_reports(run: RunDirectory, config: RunConfig, taskset: AnyTaskSet,
                    variants: tuple[str, ...]) -> dict:
    """Every applicable estimator variant on the run's gradient table and subsets against
    the run's truth: {variant: error-report figures with ``estimate_seconds`` (the gradient
    stage plus the variant's own estimate) and ``cost_ratio`` against training every
    subset}. Variants an estimator refuses for this task set are left out."""
    rows = RowTable(**run.load_arrays(run_files.GRADIENT_ROWS))
    f0 = run.load_array(run_files.GRADIENT_F0)
    subsets = run.load_arrays(run_files.SUBSET_LOSSES)["subsets"]
    true = run.load_arrays(run_files.TRUE_LOSSES)
    scorable = family_of(taskset).scorable_tasks(taskset)
    true_seconds = true_wall_seconds(true["seconds"], len(subsets), config.ray.num_workers)
    saved = run.load_torch(run_files.BASE_MODEL)
    base = BaseModel(taskset, spec_from_dict(saved["spec"]), saved["state"],
                     config.fine_tuning(), config.seed, config,
                     linear_start(run, config, family_of(taskset)))
    applicable = {variant: variant_options(config, variant) for variant in variants}
    applicable = {variant: options for variant, options in applicable.items()
                  if ESTIMATORS[options.estimator].applies_to(family_of(taskset))}
    tables: dict[tuple, tuple[np.ndarray, float]] = {}
    out = {}
    for variant, options in applicable.items():
        estimator = ESTIMATORS[options.estimator]
        key = (_projection(options) if estimator.uses_gradient_features else None)
        if key not in tables:
            tables[key] = _variant_gradients(run, config, base, rows, options,
                                             estimator.uses_gradient_features)
        gradients, gradient_seconds = tables[key]
        # Untimed: one subset per worker, so that the timed call finds them started.
        warm = config.ray.model_copy(update={"subsets_per_batch": 1})
        compute_subset_losses(subsets[:config.ray.num_workers], rows, f0, gradients, options,
                              warm, base=base)
        start = time.perf_counter()
        losses = compute_subset_losses(subsets, rows, f0, gradients, options, config.ray,
                                       base=base)
        seconds = time.perf_counter() - start
        report = against_truth(losses, true, scorable, estimator.predicted_figure(options)
                               == config.true_affinity.target)
        report["estimate_seconds"] = seconds + (gradient_seconds
                                                if estimator.uses_gradient_features else 0.0)
        report["estimator_seconds"] = seconds
        report["true_seconds_extrapolated"] = true_seconds
        report["cost_ratio"] = report["estimate_seconds"] / true_seconds
        out[variant] = report
    return out


def _projection(options: AffinityConfig) -> tuple:
    return tuple(getattr(options, name) for name in PROJECTION_FIELDS)


def _variant_gradients(run: RunDirectory, config: RunConfig, base: BaseModel, rows: RowTable,
                       options: AffinityConfig, needed: bool) -> tuple[np.ndarray, float]:
    """The gradient features a variant of ``options`` reads and the seconds they cost: the
    run's own where the variant's projection (:data:`PROJECTION_FIELDS`) is the run's and the
    run computed them; otherwise the variant's projection of the same rows, computed here
    once and kept in the run directory (:data:`VARIANT_GRADIENTS` for the config's
    projection, where the run's estimator reads none and its gradients stage wrote a table
    of width 0; a name with the projection's fields for another)."""
    gradients = run.load_array(run_files.GRADIENT_FEATURES, mmap=True)
    own = _projection(options) == _projection(config.affinity)
    if not needed or (own and gradients.shape[1] > 0):
        return gradients, run.stage_seconds()["gradients"]
    table, seconds = VARIANT_GRADIENTS, VARIANT_GRADIENT_SECONDS
    if not own:
        name = "_".join(str(value) for value in _projection(options)).replace("+", "_")
        table = f"benchmark/gradient_features_{name}.npy"
        seconds = f"benchmark/gradient_seconds_{name}.json"
    if not run.file(table).is_file():
        shape = (len(rows.example), feature_dim(options.projection, options.projection_dim))
        start = time.perf_counter()
        with run.array_writer(table, shape, np.float32) as projected:
            compute_gradient_features(base.spec, base.state, base.taskset, rows.example,
                                      rows.task, options, config.seed, config.ray, projected)
        run.write_json(seconds, time.perf_counter() - start)
    return run.load_array(table, mmap=True), float(run.read_json(seconds))


def _share_variant_gradients(source: RunDirectory, target: RunDirectory) -> None:
    """Hard-link the variant gradients ``source`` computed into ``target`` where both runs
    hold the same base model and gradient rows (files of a hard-linked copy, never rewritten
    since), so that each protocol's variant table reads one computation."""
    shared = (run_files.BASE_MODEL, run_files.GRADIENT_ROWS)
    names = (VARIANT_GRADIENTS, VARIANT_GRADIENT_SECONDS)
    if (source.path == target.path or target.file(VARIANT_GRADIENTS).is_file()
            or not all(source.file(name).is_file() for name in names)
            or not all(os.path.samefile(source.file(name), target.file(name))
                       for name in shared)):
        return
    target.file(VARIANT_GRADIENTS).parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.link(source.file(name), target.file(name))


def _estimator_figures(report: dict) -> dict:
    floor = report["true_noise_floor"]
    ratio = report["within_task_spearman"] / floor if floor and floor > 0 else float("nan")
    return {"within_task_spearman": report["within_task_spearman"],
            "within_task_spearman_se": report.get("within_task_spearman_se", float("nan")),
            "noise_floor": floor,
            "noise_floor_se": report.get("true_noise_floor_se", float("nan")),
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
           "num_groups": line["num_groups"], "deterministic": line["deterministic"],
           "kept_start_fraction": line.get("kept_start_fraction")}
    for key in (metric, secondary):
        row[f"mean_{key}"] = line[f"mean_{key}"]
        row[f"se_{key}"] = line[f"mean_{key}_se"]
    row[f"worst_{metric}"] = line[f"worst_{metric}"]
    row[f"se_worst_{metric}"] = line[f"worst_{metric}_se"]
    return row


def _execute_runs(config_path: Path, workdir: Path, settings: BenchmarkSettings,
                  extra: list[str]) -> tuple[RunConfig, dict[str, float], AnyTaskSet]:
    """The run of each protocol, the first run's config and task set; a later protocol starts
    from a hard-linked copy of the first one's directory, so that base model, gradients and
    estimate are shared."""
    seconds, first, config, taskset = {}, None, None, None
    for protocol in settings.protocols:
        directory = workdir / protocol
        if first is not None and not directory.is_dir():
            # Hard links: every artifact is replaced by rename when rewritten, never in place.
            shutil.copytree(first, directory, ignore=shutil.ignore_patterns("tune"),
                            copy_function=os.link)
        run_config, seconds[f"{protocol}_run"], run_taskset = _run(
            config_path, list(extra), settings, protocol, directory,
            (directory / run_files.MANIFEST).is_file())
        config, taskset = config or run_config, taskset or run_taskset
        first = first or directory
    return config, seconds, taskset


def benchmark_config(config_path: Path, workdir: Path, settings: BenchmarkSettings,
                     extra: list[str] = ()) -> dict:
    """Every figure of one config (see the module docstring); runs live under ``workdir``
    (``from_scratch/`` and ``fine_tune/``, resumed when present).

    Returns ``default_estimator`` (the config's); ``estimators`` {variant: within_task_spearman,
    noise_floor, ratio_to_floor, mean_change, true_mean_change, spearman, relative_distance,
    base_relative_distance, cost_ratio, flop_ratio, ...} against the target truth and
    ``estimators_by_truth`` {protocol: {variant: ...}} against each; ``truth`` {protocol (the
    target: the truth whose oracle gains most over random groups; the first protocol when no
    groups were trained), num_subsets, repeated_subsets, seeds, pair_coverage};
    ``truth_effects`` {protocol: {noise_floor, composition_effect, seed_effect,
    selection_gain}} (what a task's subset moves of its true figure, what one seed adds,
    what choosing its best subset saves under another seed, as fractions of the figure, the
    loss or 1 − AP:
    :func:`grouping.affinity.error_report.room_for_grouping`); ``rows``
    [{grouping, optimizer, n_seeds, num_groups, deterministic, mean_/se_ of the primary and
    secondary test metrics, worst_/se_worst_ of the primary, kept_start_fraction}] (empty with
    ``estimate_only``); ``oracle_beats_random`` {protocol: bool}; ``verdicts`` {question:
    sentence} and ``verdict`` (the estimated groups against random groups); ARIs against
    planted families and between estimated and oracle groups; wall ``seconds``."""
    config, seconds, taskset = _execute_runs(config_path, workdir, settings, list(extra))
    protocols = settings.protocols
    runs = {protocol: RunDirectory(workdir / protocol, True) for protocol in protocols}
    default = config.affinity.estimator
    by_truth, effects = {}, {}
    for protocol, run in runs.items():
        _share_variant_gradients(runs[protocols[0]], run)
        report = run.read_json(run_files.ERROR_REPORT)
        effects[protocol] = {key: report.get(f"true_{key}") for key in TRUTH_FIGURES}
        start = time.perf_counter()
        variants = variant_reports(run, config, taskset, settings.variants)
        seconds[f"{protocol}_variants"] = time.perf_counter() - start
        # The default's figures from its run among the variants (timed on started workers,
        # as the others are and as the truth's trials are), with the run's counted FLOP ratio.
        by_truth[protocol] = {default: {**_estimator_figures(variants.pop(default, report)),
                                        "flop_ratio": _estimator_figures(report)["flop_ratio"]}}
        by_truth[protocol].update((variant, _estimator_figures(figure))
                                  for variant, figure in variants.items())
    summary, names = {}, {**ROW_NAMES}
    if not settings.estimate_only:
        lines = {protocol: {line["grouping"]: line
                            for line in summarize_rows(run.read_json(run_files.COMPARISON))}
                 for protocol, run in runs.items()}
        summary = dict(lines[protocols[0]])
        summary.pop("true", None)
        for protocol in protocols:
            if "true" in lines[protocol]:
                summary[f"oracle_{protocol}"] = lines[protocol]["true"]
                names[f"oracle_{protocol}"] = (f"oracle groups ({protocol.replace('_', '-')} "
                                               "truth)")
    key = f"mean_{summary['all']['metric']}" if summary else None
    oracle_gaps = {protocol: gap(summary[f"oracle_{protocol}"], summary["random"], key)
                   for protocol in protocols
                   if f"oracle_{protocol}" in summary and "random" in summary}
    target = max(oracle_gaps, key=lambda protocol: oracle_gaps[protocol].gain,
                 default=protocols[0])
    oracle_groups = {protocol: run.read_json(run_files.GROUPS) for protocol, run in runs.items()}
    groups = oracle_groups[protocols[0]]
    result = {
        "default_estimator": default,
        "estimators": by_truth[target],
        "estimators_by_truth": by_truth,
        "truth": {"protocol": target, "num_subsets": config.affinity.num_subsets,
                  "repeated_subsets": min(settings.repeat_subsets, config.affinity.num_subsets),
                  "seeds": 2, "pair_coverage": _pair_coverage(config)},
        "truth_effects": effects,
        "num_tasks": config.taskset.num_tasks, "num_groups": groups["num_groups"],
        "k_rule": groups["k_rule"], "ari_planted": groups.get("ari_planted"),
        "ari_planted_oracle": {protocol: record.get("ari_planted_true")
                               for protocol, record in oracle_groups.items()},
        "ari_estimated_vs_oracle": {protocol: record.get("ari_estimated_vs_true")
                                    for protocol, record in oracle_groups.items()},
        "metric": summary["all"]["metric"] if summary else None,
        "secondary_metric": summary["all"]["secondary_metric"] if summary else None,
        "rows": [_row(line, names.get(name, name)) for name, line in summary.items()],
        "seconds": seconds,
    }
    result["oracle_beats_random"] = {protocol: difference.beats
                                     for protocol, difference in oracle_gaps.items()}
    result["verdicts"] = verdicts(summary, key, names) if summary else {}
    result["verdict"] = result["verdicts"].get("estimated_vs_random",
                                               "no estimated or no random groups to compare")
    return result


def _pair_coverage(config: RunConfig) -> float:
    """How many of the sampled subsets hold a given pair of tasks, on average."""
    tasks, size = config.taskset.num_tasks, config.affinity.subset_size
    return config.affinity.num_subsets * size * (size - 1) / (tasks * (tasks - 1))


def verdicts(summary: dict[str, dict], key: str, names: dict[str, str]) -> dict[str, str]:
    """One sentence per question: does a grouping beat random groups, all-in-one, and the
    per-task linear baseline, beyond two standard errors; and how many of the estimated
    groups' models never left their start."""
    metric = key.removeprefix("mean_").replace("_", " ")
    out = {}
    pairs = [("estimated_vs_random", "gradtag", "random"), ("estimated_vs_all", "gradtag", "all")]
    for protocol in PROTOCOLS:
        pairs += [(f"oracle_{protocol}_vs_random", f"oracle_{protocol}", "random"),
                  (f"oracle_{protocol}_vs_all", f"oracle_{protocol}", "all")]
    pairs += [("estimated_vs_dmtg_groups", "gradtag", "dmtg_groups"),
              ("dmtg_groups_vs_random", "dmtg_groups", "random"),
              ("estimated_vs_per_task_linear", "gradtag", "per_task_linear"),
              ("all_vs_per_task_linear", "all", "per_task_linear")]
    for label, first, second in pairs:
        if first not in summary or second not in summary:
            continue
        difference = gap(summary[first], summary[second], key)
        subject = "the all-in-one model" if first == "all" else names.get(first, first)
        out[label] = (f"{subject} {difference.verb(singular=first == 'all')} "
                      f"{names.get(second, second)}: "
                      f"{difference.describe()} in mean {metric}")
    at_start = models_at_start(summary.get("gradtag", {}), names.get("gradtag", "gradtag"))
    if at_start is not None:
        out["estimated_models_at_start"] = at_start
    return out


def _with_se(figures: dict, key: str, se_key: str) -> str:
    """``figures[key]`` ± its standard error where one was measured."""
    se = figures.get(se_key)
    text = format_value(figures[key])
    return text if se is None or not np.isfinite(se) else f"{text} ± {format_value(se)}"


def estimator_table(figures: dict) -> list[str]:
    """One line per (truth, estimator variant): within-task Spearman and its floor (± their
    standard errors over tasks), their ratio,
    pooled Spearman, the changes of f̂ and f, the cost ratio."""
    lines = ["| truth | estimator | within-task Spearman | noise floor | ratio | pooled "
             "Spearman | mean change f̂ / f | cost ratio (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for protocol, estimators in figures["estimators_by_truth"].items():
        for variant, est in estimators.items():
            lines.append(f"| {protocol} | {variant} | "
                         f"{_with_se(est, 'within_task_spearman', 'within_task_spearman_se')}"
                         f" | {_with_se(est, 'noise_floor', 'noise_floor_se')} | "
                         f"{format_value(est['ratio_to_floor'])} | "
                         f"{format_value(est['spearman'])} | "
                         f"{format_value(est['mean_change'])} / "
                         f"{format_value(est['true_mean_change'])} | "
                         f"{format_value(est['cost_ratio'])} |")
    return lines


def markdown(name: str, figures: dict) -> list[str]:
    """The config's table and verdict lines."""
    estimator = figures["estimators"][figures["default_estimator"]]
    lines = [f"### {name}", "",
             f"{figures['num_tasks']} tasks, k = {figures['num_groups']} ({figures['k_rule']}); "
             f"truth over {figures['truth']['num_subsets']} subsets (pair coverage "
             f"{figures['truth']['pair_coverage']:.1f}), {figures['truth']['repeated_subsets']} "
             f"of them under a second seed. Mean ± standard error over initialisation seeds.", ""]
    metric = figures["metric"]
    if metric is not None:
        secondary = figures["secondary_metric"]
        label = metric.removeprefix("test_").replace("_", " ")
        other = secondary.removeprefix("test_").replace("_", " ")
        lines += [f"| grouping | seeds | groups | mean test {label} | worst-task test {label} "
                  f"| mean test {other} | models at their start |",
                  "|---|---|---|---|---|---|---|"]
        for row in figures["rows"]:
            lines.append(f"| {row['grouping']} | {row['n_seeds']} | {row['num_groups']} | "
                         f"{format_value(row[f'mean_{metric}'], row[f'se_{metric}'])} | "
                         f"{format_value(row[f'worst_{metric}'], row[f'se_worst_{metric}'])} | "
                         f"{format_value(row[f'mean_{secondary}'], row[f'se_{secondary}'])} | "
                         f"{format_fraction(row.get('kept_start_fraction'))} |")
        lines.append("")
    lines += estimator_table(figures)
    lines += ["", "| truth protocol | noise floor | composition effect | seed effect | "
              "selection gain |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join([protocol, *(format_value(effect[key]) for key in TRUTH_FIGURES)])
              + " |" for protocol, effect in figures.get("truth_effects", {}).items()]
    if figures["rows"] and any(figures["oracle_beats_random"].values()):
        lines += ["", f"Target truth: {figures['truth']['protocol']} (its oracle groups beat "
                  f"random groups by the widest margin); the estimate's within-task ratio to "
                  f"its floor there: {estimator['ratio_to_floor']:.2f}.", ""]
    elif figures["rows"]:
        lines += ["", "Neither truth's oracle groups beat random groups here: no truth is shown "
                  "to be the target an estimator should rank (the figures above use the "
                  f"{figures['truth']['protocol']} truth, whose oracle gains most).", ""]
    else:
        lines.append("")
    lines += [f"- {sentence}." for sentence in figures["verdicts"].values()]
    return [*lines, ""]
