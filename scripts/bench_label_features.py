"""What other tasks' training labels add to a task's own logistic regression, on a graph task
set with propagated training labels (``features.propagated_labels``): a linear probe of what a
model shared across tasks could find beyond the per-task regressions.

Per task (of those with a test positive), two regressions by the project's own fit
(:func:`grouping.models.per_task_linear.fit_task`: class-balanced, C on validation AP, the
task's own propagated column weighted on validation): on the shared structural columns
alone, and on them plus every other task's propagated column (stacking on label features,
as classifier chains and Godbole & Sarawagi, PAKDD 2004, use other labels' predictions).
Prints the mean test AP of both and the mean per-task difference with its standard error
over tasks.

    python scripts/bench_label_features.py --config configs/snap_dblp_sub.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, write_figures  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    add_common_arguments(parser, device=None, threads=False)
    arguments = parser.parse_args(argv)
    from sklearn.metrics import average_precision_score

    from grouping.config import ConfigError, load_config
    from grouping.models.per_task_linear import fit_task
    from grouping.tasksets import TEST, TRAIN, VAL, build_taskset

    try:
        config = load_config(arguments.config, arguments.set)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with warnings.catch_warnings():  # PyG's beta-feature notices about sparse tensors
        warnings.simplefilter("ignore", UserWarning)
        taskset = build_taskset(config)
    if taskset.own_columns is None:
        print("error: features.propagated_labels: the task set has no per-task label columns",
              file=sys.stderr)
        return 2
    features = np.asarray(taskset.features, dtype=np.float64)
    train, val, test = (taskset.indices(split) for split in (TRAIN, VAL, TEST))
    shared = features[:, taskset.shared_columns]
    precisions = []
    for task in range(taskset.num_tasks):
        labels = taskset.labels[:, task]
        if not labels[test].any():
            continue
        own = features[:, taskset.own_columns[task]]
        with_others = np.hstack([shared, features[:, np.delete(taskset.own_columns, task)]])
        row = []
        for columns in (shared, with_others):
            weight, intercept, _ = fit_task(columns, labels, train, val, own)
            scores = columns[test] @ weight[:-1] + weight[-1] * own[test] + intercept
            row.append(average_precision_score(labels[test], scores))
        precisions.append(row)
    table = np.array(precisions)
    difference = table[:, 1] - table[:, 0]
    figures = {"config": config.name, "tasks": len(table),
               "own_column_ap": float(table[:, 0].mean()),
               "with_other_tasks_ap": float(table[:, 1].mean()),
               "difference": float(difference.mean()),
               "difference_se": float(difference.std(ddof=1) / np.sqrt(len(difference))),
               "seconds": time.perf_counter() - start}
    print(f"{config.name}: {len(table)} tasks, mean test AP {figures['own_column_ap']:.3f} with "
          f"the own column, {figures['with_other_tasks_ap']:.3f} with every task's: "
          f"{figures['difference']:+.3f} ± {figures['difference_se']:.3f} "
          f"({figures['seconds']:.0f} s)")
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
