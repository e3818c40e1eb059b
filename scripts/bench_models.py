"""Model and training options of the all-in-one model against one logistic regression per task.

For each config, one SIGN-MLP with a head per task is trained on every task (Adam, the
config's loop) under each variant — a name and ``--set``-style overrides of the config — with
several initialisation seeds, beside the per-task logistic regression
(:mod:`grouping.evaluation.linear_baseline`) on the same features and splits. Prints, per
config, mean test AP and F1 with their standard error over seeds, and whether each variant
beats the baseline variant and the logistic regression by more than two standard errors of
the difference (:func:`grouping.evaluation.comparison.gap`). On a graph task set with
propagated training labels (the SNAP configs; ``--set features.propagated_labels.enabled=true``
for the planted ones), a last row scores each task by its own column alone (label
propagation).

    python scripts/bench_models.py --configs configs/yeast.yaml configs/cal500.yaml
    python scripts/bench_models.py --variant 'wide=model.hidden=[128]' --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402

DEFAULT_CONFIGS = ("snap_amazon_sub", "snap_dblp_sub", "yeast", "cal500")
DEFAULT_VARIANTS = (
    "config=",
    "sqrt_weight=train.pos_weight=sqrt",
    "balanced_weight=train.pos_weight=balanced",
    "stop_on_ap=train.early_stopping=val_ap",
    "skip=model.skip=true",
    "skip+sqrt+ap=model.skip=true;train.pos_weight=sqrt;train.early_stopping=val_ap",
)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE;KEY=VALUE`` → (NAME, [KEY=VALUE, ...]); ``NAME=`` is the config."""
    name, _, assignments = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected NAME=KEY=VALUE;...")
    return name, [part for part in assignments.split(";") if part]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path,
                        default=[ROOT / "configs" / f"{name}.yaml" for name in DEFAULT_CONFIGS])
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        metavar="NAME=KEY=VALUE;...",
                        help="a variant (repeat; default: the config and one option at a time)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a field of every config and variant")
    parser.add_argument("--seeds", type=int, default=3, help="initialisation seeds per variant")
    add_common_arguments(parser, device="cpu")
    return parser.parse_args(argv)


def _row(name: str, runs: list[dict], seeds: list[int | None]) -> dict:
    """Mean and standard error over seeds (``seeds``: each run's initialisation seed, None
    for a deterministic model) of the comparison's per-model figures
    (:func:`grouping.evaluation.comparison.comparison_row`: mean test AP and F1, worst F1),
    with the mean best epoch."""
    import numpy as np

    from grouping.evaluation.comparison import Plan, comparison_row, summarize_rows
    from grouping.families import BinaryLabelFamily

    plan = Plan(name, [[task["task"] for task in runs[0]["tasks"]]])
    rows = [comparison_row(plan, [run], "lbfgs" if seed is None else "adam", seed,
                           BinaryLabelFamily.metric_names)
            for run, seed in zip(runs, seeds)]
    (summary,) = summarize_rows(rows)
    summary["variant"] = name
    summary["best_epoch"] = float(np.mean([run.get("best_epoch", 0) for run in runs]))
    return summary


def bench_config(path: Path, variants: list[tuple[str, list[str]]], arguments) -> dict:
    """The per-task logistic regression and every variant's all-in-one model on one config."""
    import numpy as np
    import torch

    from grouping.config import load_config
    from grouping.evaluation.comparison import gap
    from grouping.evaluation.linear_baseline import per_task_linear
    from grouping.evaluation.metrics import task_metrics
    from grouping.families import BinaryLabelFamily
    from grouping.models.per_task_linear import fit_per_task_linear
    from grouping.tasksets import build_taskset

    base = load_config(path, arguments.set)
    taskset = build_taskset(base)
    start = time.perf_counter()
    linear = fit_per_task_linear(taskset)
    rows = [_row("per_task_linear", [per_task_linear(taskset, fit=linear,
                                                     fit_seconds=time.perf_counter() - start)],
                 [None])]
    for name, assignments in variants:
        config = load_config(path, [*arguments.set, *assignments])
        seeds = [arguments.seed + offset for offset in range(arguments.seeds)]
        runs = [BinaryLabelFamily().train_group(
                    taskset, list(range(taskset.num_tasks)), config, config.train,
                    torch.device(arguments.device), seed=seed, linear=linear)
                for seed in seeds]
        rows.append(_row(name, runs, seeds))
        print(f"{path.stem} {name}: AP {rows[-1]['mean_test_ap']:.3f}, "
              f"{rows[-1]['seconds']:.0f} s per model", flush=True)
    linear, reference = rows[0], rows[1]
    for row in rows[2:]:
        row["vs_first"] = gap(row, reference, "mean_test_ap").describe()
    if taskset.own_columns is not None:
        # each task's own column (its propagated training labels) alone, as its score
        scores = taskset.features[:, taskset.own_columns]
        rows.append(_row("own_column_alone", [{"tasks": task_metrics(
            taskset, scores, np.arange(taskset.num_tasks)), "seconds": 0.0}], [None]))
    for row in rows[1:]:
        row["vs_linear"] = gap(row, linear, "mean_test_ap").describe()
    return {"num_tasks": taskset.num_tasks, "num_examples": int(len(taskset.features)),
            "positive_rate": float(np.mean(taskset.labels)), "rows": rows}


def markdown(name: str, figures: dict) -> list[str]:
    from grouping.evaluation.comparison import format_mean

    lines = [f"### {name} ({figures['num_tasks']} tasks, positive rate "
             f"{figures['positive_rate']:.4f})", "",
             "| variant | mean test AP | mean test F1 | worst F1 | best epoch | "
             "vs first variant (AP) | vs per-task LR (AP) |", "|---|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        lines.append(f"| {row['variant']} | {format_mean(row, 'mean_test_ap')} | "
                     f"{format_mean(row, 'mean_test_f1')} | "
                     f"{row['worst_test_f1']:.3f} | {row['best_epoch']:.0f} | "
                     f"{row.get('vs_first', '')} | "
                     f"{row.get('vs_linear', '')} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    limit_threads(arguments)
    variants = arguments.variant or [parse_variant(text) for text in DEFAULT_VARIANTS]
    start, figures = time.perf_counter(), {}
    for path in arguments.configs:
        figures[path.stem] = bench_config(path, variants, arguments)
        print("\n".join(markdown(path.stem, figures[path.stem])), flush=True)
    print(f"{time.perf_counter() - start:.0f} s")
    write_figures(arguments.json, {"seeds": arguments.seeds, "configs": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
