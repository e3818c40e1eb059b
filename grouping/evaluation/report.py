"""report.md (and the same as a self-contained report.html), summary.json and the figures,
rendered from a run directory's saved files alone (nothing is recomputed). The report opens
with its verdict (:mod:`grouping.evaluation.verdict`), then the groups, then the evidence."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import markdown
import numpy as np
import yaml

from grouping import run_files
from grouping.artifacts import atomic_write_bytes
from grouping.evaluation.comparison import (
    METRIC_LABELS,
    format_fraction,
    format_mean,
    format_value,
    summarize_rows,
    summary_keys,
)
from grouping.evaluation.plots import (
    affinity_heatmap,
    comparison_bars,
    dominance_bars,
    estimate_scatter,
)
from grouping.evaluation.verdict import grouping_label, optimizer_label, row_label, verdict


def _comparison_table(summary: list[dict]) -> list[str]:
    primary, secondary = (METRIC_LABELS[summary[0][key]]
                          for key in ("metric", "secondary_metric"))
    lines = [f"| grouping | optimizer | groups | runs | mean {primary} | worst-task {primary} | "
             f"mean {secondary} | models at their start | seconds (search + training) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for line in summary:
        cells = " | ".join(format_mean(line, key) for key in summary_keys(line))
        lines.append(f"| {grouping_label(line['grouping'])} "
                     f"| {optimizer_label(line['optimizer'])} "
                     f"| {line['num_groups']} | {line['runs']} | {cells} "
                     f"| {format_fraction(line.get('kept_start_fraction'))} "
                     f"| {line['seconds']:.1f} |")
    lines += ["", "Models at their start: the share of a row's models whose early stopping "
              "kept their starting state (epoch 0); a partition of such models changes "
              "nothing."]
    return lines


def _optimizer_section(run: Path, summary: list[dict]) -> list[str]:
    """Adam against AdaTask on the all-in-one model and the leading groups: test F1 and the
    share of each shared layer's parameters that one task dominates; writes its bar chart."""
    tracked = [line for line in summary if line["dominance"]]
    if len({line["optimizer"] for line in tracked}) < 2:
        return []
    charted = [line for line in tracked if any(line["dominance"].values())]
    if charted:
        atomic_write_bytes(run / run_files.DOMINANCE_CHART, dominance_bars(charted, row_label))
    layers = list(tracked[0]["dominance"])
    lines = ["## Optimizers: Adam vs AdaTask", "",
             "Dominance: the fraction of a shared layer's parameters where one task's share of "
             "the exponentially averaged squared update exceeds one half (averaged over the "
             "groups of several tasks).", "",
             "| grouping | optimizer | mean test F1 | worst-task test F1 | "
             + " | ".join(f"dominance {layer}" for layer in layers) + " |",
             "|---|---|---|---|" + "---|" * len(layers)]
    for line in tracked:
        lines.append(f"| {grouping_label(line['grouping'])} | "
                     f"{optimizer_label(line['optimizer'])} | "
                     f"{format_value(line['mean_test_f1'])} | "
                     f"{format_value(line['worst_test_f1'])} | "
                     + " | ".join(format_value(line["dominance"][layer]) for layer in layers)
                     + " |")
    silent = [row_label(line) for line in tracked if line not in charted]
    if silent:
        lines += ["", f"No parameter is dominated by one task under {', '.join(silent)}."]
    return [*lines, *(["", "![dominance](dominance.png)"] if charted else []), ""]


def _error_section(run: Path, report: dict) -> list[str]:
    """The estimate-vs-truth section of report.md; writes its scatter plot."""
    true = np.load(run / run_files.TRUE_LOSSES)
    estimated = np.load(run / run_files.SUBSET_LOSSES)
    tasks = true["subsets"].ravel()
    atomic_write_bytes(run / run_files.ESTIMATE_SCATTER, estimate_scatter(
        estimated["losses"][true["subset_index"]].ravel(), true["losses"].ravel(),
        true["base_losses"][tasks], tasks))
    rows = [("relative distance ‖f̂ − f‖/‖f‖", "relative_distance",
             "lower is better; worth something only below both predictors under it"),
            ("  base-loss predictor (no fine-tuning)", "base_relative_distance",
             "the trivial predictor: each task's loss before any training on S"),
            ("  each task's mean true loss", "task_mean_relative_distance",
             "knows each task's level, nothing about which subset helps"),
            ("mean / median relative error", None, "lower is better"),
            ("Spearman, all pairs", "spearman",
             "mostly the tasks' loss levels: high even without information on subsets"),
            ("Spearman within each task", "within_task_spearman",
             "what grouping needs: 0 is chance, the noise floor the most reachable"),
            ("  its standard error over tasks", "within_task_spearman_se",
             "differences between estimators below about twice this are noise"),
            ("  noise floor (two training seeds of the truth)", "true_noise_floor",
             "the truth's agreement with itself"),
            ("composition effect: SD of a task's true loss over its subsets / its loss",
             "true_composition_effect",
             "the part that repeats between seeds: how far choosing a task's group moves it "
             "(median over tasks)"),
            ("  seed effect: SD one training seed adds / the loss", "true_seed_effect",
             "composition far below it: no grouping can be told apart from random groups"),
            ("  selection gain: a task's best subset under one seed, under the other",
             "true_selection_gain",
             "the loss an oracle of each task's best subset saves, as a fraction; near 0: "
             "no room"),
            ("mean of abs(f̂ − f_base) / f_base (the estimate's change)", "mean_change",
             "compare with the truth's change below: far smaller means the estimate barely "
             "moves"),
            ("mean of abs(f − f_base) / f_base (the truth's change)", "mean_true_change",
             "how much training on S changes a task's loss")]
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
             f"Estimator `{report.get('estimator', 'surrogate')}`, "
             f"{report['num_pairs']} (subset, task) pairs: {truth.format(tuned=tuned)}. "
             f"FLOPs are what torch's flop counter counts "
             f"(matrix products), measured on a sample and scaled.", "",
             "| figure | value | read it as |", "|---|---|---|"]
    for label, key, reading in rows:
        value = (f"{format_value(report['mean_relative_error'])} / "
                 f"{format_value(report['median_relative_error'])}"
                 if key is None else format_value(report.get(key, float("nan"))))
        lines.append(f"| {label} | {value} | {reading} |")
    lines += [f"| estimate seconds (the estimator's stages) | {report['estimate_seconds']:.1f} "
              f"| |",
              f"| true training of all subsets, on the same workers | "
              f"{report['true_seconds_extrapolated']:.1f} | |",
              f"| cost ratio | {report['cost_ratio']:.3f} | below 1: the estimate is cheaper "
              f"than true training |"]
    flops = report.get("flops")
    if flops:
        lines += [f"| counted GFLOPs, estimate (the estimator's stages) | "
                  f"{flops['estimate'] / 1e9:.2f} | |",
                  f"| counted GFLOPs, true training of all subsets | "
                  f"{flops['true_extrapolated'] / 1e9:.2f} | |",
                  f"| FLOP ratio | {flops['ratio']:.3f} | below 1: fewer FLOPs than true "
                  f"training |"]
    if report.get("groups_ari") is not None:
        lines.append(f"| adjusted Rand index, groups of estimated vs true T | "
                     f"{report['groups_ari']:.3f} | 1 = the same groups, 0 = chance |")
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


def _training_logs(run: Path) -> list[str]:
    """Where the run's logs and the group models' Tune experiments are, and how to open them."""
    lines = ["## Logs", "", "`logs/` holds what the libraries printed during the run (Ray, Tune, "
             "PyG, torch warnings). `tune/` holds the group models' Ray Tune experiments: one "
             "folder per trial with its `result.json` and `progress.csv`."]
    if any((run / "tune").rglob("events.out.tfevents*")):
        lines.append("Open them in TensorBoard from the run directory: "
                     "`tensorboard --logdir tune`.")
    else:
        lines.append("Tune writes TensorBoard event files beside them when `tensorboardX` is "
                     "installed; then `tensorboard --logdir <run>/tune` opens them.")
    return [*lines, ""]


def render_html(markdown_text: str, run: Path, title: str) -> str:
    """report.md as one self-contained HTML page: the figures embedded as data URIs."""
    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match) -> str:
        path = run / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^":]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
             "line-height:1.45}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:.25em .6em}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")


def _affinity_method(affinity: dict) -> str:
    subsets = f"subsets of {affinity['subset_size']}"
    if affinity["method"] == "true":
        return f"Affinity from true fine-tuning of θ0 on every sampled subset ({subsets})"
    return (f"Affinity by Grad-TAG (projection dimension {affinity['projection_dim']}, "
            f"{subsets}, L2 {affinity['l2']})")


def write_report(run_path: str | Path) -> dict:
    """Render report.md, summary.json and the PNG figures from ``run_path``; return summary."""
    run = Path(run_path)
    config = yaml.safe_load((run / run_files.CONFIG).read_text())
    manifest = json.loads((run / run_files.MANIFEST).read_text())
    groups = json.loads((run / run_files.GROUPS).read_text())
    rows = json.loads((run / run_files.COMPARISON).read_text())
    affinity = np.load(run / run_files.AFFINITY)
    summary_rows = summarize_rows(rows)
    seconds = {name: record["seconds"] for name, record in manifest["stages"].items()}
    atomic_write_bytes(run / run_files.AFFINITY_HEATMAP, affinity_heatmap(
        affinity, groups["groups"], groups.get("group_names")))
    atomic_write_bytes(run / run_files.COMPARISON_CHART, comparison_bars(
        summary_rows, METRIC_LABELS[summary_rows[0]["metric"]], row_label))
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
    error_path = run / run_files.ERROR_REPORT
    if error_path.is_file():
        summary["error_report"] = json.loads(error_path.read_text())

    bottom_line = verdict(summary_rows, summary.get("error_report"))
    summary["verdict"] = bottom_line.headline()
    atomic_write_bytes(run / run_files.SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())

    lines = [f"# Task grouping report: {config['name']}", "",
             f"{affinity.shape[0]} tasks ({config['taskset']['kind']} task set), seed "
             f"{config['seed']}. {_affinity_method(config['affinity'])}; "
             f"clustering: {groups['method']}, k = {groups['num_groups']} ({groups['k_rule']}).",
             "", *bottom_line.lines(), "", "## Groups", ""]
    for number, names in enumerate(groups["group_names"]):
        lines.append(f"- group {number} ({len(names)} tasks): {', '.join(names)}")
    if groups.get("ari_planted") is not None:
        lines += ["", f"Adjusted Rand index against the planted families (1 = recovered, "
                  f"0 = chance): {groups['ari_planted']:.3f} ({groups['method']}); spectral "
                  f"clustering of the same T: {groups['ari_planted_spectral']:.3f}."]
    if groups.get("true_groups") is not None:
        lines += ["", f"Groups of the true affinity matrix (every subset really trained, "
                  f"same k): adjusted Rand index {groups['ari_estimated_vs_true']:.3f} against "
                  f"the groups above"
                  + (f", {groups['ari_planted_true']:.3f} against the planted families."
                     if groups.get("ari_planted_true") is not None else ".")]
    lines += ["", "![affinity](affinity_heatmap.png)", "", "## Evidence: the comparison", "",
              "Per-task test F1 uses the threshold that maximises validation F1; AP averages the "
              "tasks with a positive test example. Random groups have the estimated group "
              "sizes (the j-th draw trained with the j-th initialisation seed); ± is the "
              "standard error over initialisation seeds (none on a single run; 0 on the "
              "deterministic logistic regression). Every group model is trained from scratch "
              "with the same loop, budget and early stopping, as a Ray Tune trial per learning "
              "rate (the best validation criterion is kept); DMTG is its own fine-tuned model of "
              "its groups (search and fine-tuning within the same budget), and DMTG's groups "
              "are also trained as every other grouping is (the j-th DMTG run's groups with "
              "the j-th seed). The baselines to "
              "read every row against: all tasks in one model, random groups of the same sizes, "
              "one model per task and one logistic regression per task.", ""]
    lines += _comparison_table(summary_rows)
    lines += ["", "![comparison](comparison.png)", ""]
    lines += _optimizer_section(run, summary_rows)
    if "error_report" in summary:
        lines += _error_section(run, summary["error_report"])
    lines += ["## Stage wall times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    lines += ["", *_training_logs(run)]
    text = "\n".join(lines)
    atomic_write_bytes(run / run_files.REPORT, text.encode())
    atomic_write_bytes(run / "report.html", render_html(text, run, config["name"]).encode())
    return summary
