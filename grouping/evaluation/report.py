"""report.md, summary.json and the figures, rendered from a run directory's saved files
alone (nothing is recomputed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from grouping.artifacts import atomic_write_bytes
from grouping.evaluation.comparison import METRIC_LABELS, gap, summarize_rows, summary_keys
from grouping.evaluation.plots import (
    affinity_heatmap,
    comparison_bars,
    dominance_bars,
    estimate_scatter,
)


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.3f}" if std is None else f"{value:.3f} ± {std:.3f}"


def _comparison_table(summary: list[dict]) -> list[str]:
    primary, secondary = (METRIC_LABELS[summary[0][key]]
                          for key in ("metric", "secondary_metric"))
    lines = [f"| grouping | optimizer | groups | runs | mean {primary} | worst-task {primary} | "
             f"mean {secondary} | seconds (search + training) |",
             "|---|---|---|---|---|---|---|---|"]
    for line in summary:
        cells = " | ".join(_fmt(line[key], line[f"{key}_se"] or None)
                           for key in summary_keys(line))
        lines.append(f"| {line['grouping']} | {line['optimizer']} | {line['num_groups']} "
                     f"| {line['runs']} | {cells} | {line['seconds']:.1f} |")
    return lines


def _verdict(summary: list[dict]) -> list[str]:
    """The leading grouping (Grad-TAG's, or the true affinity's when it was the method)
    against every other row trained with the same optimizer (DMTG and the per-task linear
    baseline against the leading grouping's Adam row where there is one): "beats" or "loses
    to" only beyond two standard errors of the difference, "indistinguishable from"
    otherwise."""
    by_key = {(line["grouping"], line["optimizer"]): line for line in summary}
    leading = "gradtag" if any(name == "gradtag" for name, _ in by_key) else "true"
    key = f"mean_{summary[0]['metric']}"
    metric = METRIC_LABELS[summary[0]["metric"]]
    label = {"gradtag": "Grad-TAG groups", "true": "true-affinity groups"}[leading]
    lines = []
    for (name, optimizer), line in by_key.items():
        if name == leading:
            continue
        own = (leading, optimizer if (leading, optimizer) in by_key else "adam")
        if own not in by_key:
            own = (leading, summary[0]["optimizer"])
        if own not in by_key:
            continue
        difference = gap(by_key[own], line, key)
        lines.append(f"- {label} ({own[1]}) {difference.verb} {name} ({optimizer}): "
                     f"{difference.describe()} mean {metric}.")
    return lines


def _optimizer_section(run: Path, summary: list[dict]) -> list[str]:
    """Adam against AdaTask on the all-in-one model and the leading groups: test F1 and the
    share of each shared layer's parameters that one task dominates; writes its bar chart."""
    tracked = [line for line in summary if line["dominance"]]
    if len({line["optimizer"] for line in tracked}) < 2:
        return []
    atomic_write_bytes(run / "dominance.png", dominance_bars(tracked))
    layers = list(tracked[0]["dominance"])
    lines = ["## Optimizers: Adam vs AdaTask", "",
             "Dominance: the fraction of a shared layer's parameters where one task's share of "
             "the exponentially averaged squared update exceeds one half (averaged over the "
             "groups of several tasks).", "",
             "| grouping | optimizer | mean test F1 | worst-task test F1 | "
             + " | ".join(f"dominance {layer}" for layer in layers) + " |",
             "|---|---|---|---|" + "---|" * len(layers)]
    for line in tracked:
        lines.append(f"| {line['grouping']} | {line['optimizer']} | "
                     f"{_fmt(line['mean_test_f1'])} | {_fmt(line['worst_test_f1'])} | "
                     + " | ".join(_fmt(line["dominance"][layer]) for layer in layers) + " |")
    return [*lines, "", "![dominance](dominance.png)", ""]


def _error_section(run: Path, report: dict) -> list[str]:
    """The estimate-vs-truth section of report.md; writes its scatter plot."""
    true = np.load(run / "true_losses.npz")
    estimated = np.load(run / "subset_losses.npz")
    tasks = true["subsets"].ravel()
    atomic_write_bytes(run / "estimate_scatter.png", estimate_scatter(
        estimated["losses"][true["subset_index"]].ravel(), true["losses"].ravel(),
        true["base_losses"][tasks], tasks))
    rows = [("relative distance ‖f̂ − f‖/‖f‖", "relative_distance"),
            ("  base-loss predictor (no fine-tuning)", "base_relative_distance"),
            ("  each task's mean true loss", "task_mean_relative_distance"),
            ("mean / median relative error", None),
            ("Spearman, all pairs", "spearman"),
            ("Spearman within each task", "within_task_spearman"),
            ("  noise floor (two training seeds of the truth)", "true_noise_floor"),
            ("mean of abs(f̂ − f_base) / f_base (the estimate's change)", "mean_change"),
            ("mean of abs(f − f_base) / f_base (the truth's change)", "mean_true_change")]
    tuning = report["fine_tuning"]
    schedule = (f"a fixed {tuning['epochs']} epochs" if tuning["epochs"]
                else "early stopping on the subset's validation loss")
    truth = (f"true fine-tuning of θ0 on {{tuned}} subsets the estimator used, {schedule}, "
             f"learning rate {tuning['lr'] or 'as in train'}")
    if tuning.get("protocol") == "from_scratch":
        truth = ("a fresh model trained from scratch on each of {tuned} subsets the estimator "
                 "used, exactly as a group model is trained")
    tuned = (f"all {report['num_subsets']}" if tuning.get("all_subsets")
             else f"{tuning['num_subsets']} of the {report['num_subsets']}")
    lines = ["## Estimated vs true affinity", "",
             f"{report['num_pairs']} (subset, task) pairs: {truth.format(tuned=tuned)}. "
             f"FLOPs are what torch's flop counter counts "
             f"(matrix products), measured on a sample and scaled.", "", "| figure | value |",
             "|---|---|"]
    for label, key in rows:
        value = (f"{report['mean_relative_error']:.3f} / {report['median_relative_error']:.3f}"
                 if key is None else _fmt(report[key]))
        lines.append(f"| {label} | {value} |")
    lines += [f"| estimate seconds (gradients + surrogates) | {report['estimate_seconds']:.1f} |",
              f"| true training, extrapolated to all subsets | "
              f"{report['true_seconds_extrapolated']:.1f} |",
              f"| cost ratio | {report['cost_ratio']:.3f} |"]
    flops = report.get("flops")
    if flops:
        lines += [f"| counted GFLOPs, estimate (gradients + surrogates) | "
                  f"{flops['estimate'] / 1e9:.2f} |",
                  f"| counted GFLOPs, true training of all subsets | "
                  f"{flops['true_extrapolated'] / 1e9:.2f} |",
                  f"| FLOP ratio | {flops['ratio']:.3f} |"]
    if report.get("groups_ari") is not None:
        lines.append(f"| adjusted Rand index, groups of estimated vs true T | "
                     f"{report['groups_ari']:.3f} |")
    lines.append("")
    if report["relative_distance"] >= report["base_relative_distance"]:
        lines.append("The estimate is no closer to the truth than the base-loss predictor: "
                     "its distance figure proves nothing here.")
    if report["linearization_error"]:
        lines.append("Linearisation check, ‖f0 + gᵀPᵀΔθ − f(θ1)‖ / ‖f(θ1) − f0‖ on the "
                     "validation rows of the first subsets: "
                     + ", ".join(f"{value:.3f}" for value in report["linearization_error"])
                     + ".")
    if report["mean_true_change"] < 0.2:
        lines.append(f"Fine-tuning moves the losses by {report['mean_true_change']:.1%} on "
                     "average (below 20%): small distances are easy in this setting.")
    if report["tasks_without_validation_positive"]:
        lines.append(f"Left out (no positive validation example): tasks "
                     f"{report['tasks_without_validation_positive']}.")
    return [*lines, "", "![scatter](estimate_scatter.png)", ""]


def _affinity_method(affinity: dict) -> str:
    subsets = f"subsets of {affinity['subset_size']}"
    if affinity["method"] == "true":
        return f"Affinity from true fine-tuning of θ0 on every sampled subset ({subsets})"
    return (f"Affinity by Grad-TAG (projection dimension {affinity['projection_dim']}, "
            f"{subsets}, L2 {affinity['l2']})")


def write_report(run_path: str | Path) -> dict:
    """Render report.md, summary.json and the PNG figures from ``run_path``; return summary."""
    run = Path(run_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    groups = json.loads((run / "groups.json").read_text())
    rows = json.loads((run / "comparison.json").read_text())
    affinity = np.load(run / "affinity.npy")
    summary_rows = summarize_rows(rows)
    seconds = {name: record["seconds"] for name, record in manifest["stages"].items()}
    atomic_write_bytes(run / "affinity_heatmap.png", affinity_heatmap(affinity, groups["groups"]))
    atomic_write_bytes(run / "comparison.png", comparison_bars(
        summary_rows, METRIC_LABELS[summary_rows[0]["metric"]]))
    summary = {"name": config["name"], "num_tasks": int(affinity.shape[0]),
               "num_groups": groups["num_groups"], "k_rule": groups["k_rule"],
               "ari_planted": groups.get("ari_planted"),
               "ari_planted_spectral": groups.get("ari_planted_spectral"),
               "ari_planted_true": groups.get("ari_planted_true"),
               "ari_estimated_vs_true": groups.get("ari_estimated_vs_true"),
               "stage_seconds": seconds, "comparison": summary_rows,
               "dominance": {line["optimizer"]: line["dominance"] for line in summary_rows
                             if line["grouping"] == "all" and line["dominance"]},
               "dominance_groups": {line["optimizer"]: line["dominance"] for line in summary_rows
                                    if line["grouping"] == groups.get("affinity", "gradtag")
                                    and line["dominance"]}}
    error_path = run / "error_report.json"
    if error_path.is_file():
        summary["error_report"] = json.loads(error_path.read_text())
    atomic_write_bytes(run / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())

    lines = [f"# Task grouping report: {config['name']}", "",
             f"{affinity.shape[0]} tasks ({config['taskset']['kind']} task set), seed "
             f"{config['seed']}. {_affinity_method(config['affinity'])}; "
             f"clustering: {groups['method']}, k = {groups['num_groups']} ({groups['k_rule']}).",
             "", "## Stage wall times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    lines += ["", "## Groups", ""]
    for number, names in enumerate(groups["group_names"]):
        lines.append(f"- group {number} ({len(names)} tasks): {', '.join(names)}")
    if groups.get("ari_planted") is not None:
        lines += ["", f"Adjusted Rand index against the planted families: "
                  f"{groups['ari_planted']:.3f} ({groups['method']}); spectral clustering of the "
                  f"same T: {groups['ari_planted_spectral']:.3f}."]
    if groups.get("true_groups") is not None:
        lines += ["", f"Groups of the true affinity matrix (every subset really fine-tuned, "
                  f"same k): adjusted Rand index {groups['ari_estimated_vs_true']:.3f} against "
                  f"the groups above"
                  + (f", {groups['ari_planted_true']:.3f} against the planted families."
                     if groups.get("ari_planted_true") is not None else ".")]
    lines += ["", "![affinity](affinity_heatmap.png)", "", "## Comparison", "",
              "Per-task test F1 uses the threshold that maximises validation F1; AP averages the "
              "tasks with a positive test example. Random groups have the Grad-TAG group sizes "
              "(the j-th draw trained with the j-th initialisation seed); ± is the standard "
              "error over initialisation seeds; `per_task_linear` is one logistic regression "
              "per task on the same features (deterministic). Every group model is trained from "
              "scratch with the same loop, budget and early stopping, as a Ray Tune trial per "
              "learning rate (the lowest validation loss is kept); `dmtg` is DMTG's own "
              "fine-tuned model of its groups (search and fine-tuning within the same "
              "budget).", ""]
    lines += _comparison_table(summary_rows)
    lines += ["", *_verdict(summary_rows), "", "![comparison](comparison.png)", ""]
    lines += _optimizer_section(run, summary_rows)
    if "error_report" in summary:
        lines += _error_section(run, summary["error_report"])
    atomic_write_bytes(run / "report.md", "\n".join(lines).encode())
    return summary
