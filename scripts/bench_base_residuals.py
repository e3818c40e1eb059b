"""What a fit on the training rows can see at θ0: the base model's residuals σ(f0) − y on its
training rows against its validation rows, from a run directory's gradients stage.

Every estimator that reads θ0's gradients on the training rows (the surrogate's fit, whose
gradient at w = 0 is the weighted mean of (σ(f0) − y)·g over S's training rows, and
first-order alignment) sees nothing where θ0 has memorised those rows: the residuals vanish
and so does the signal, whatever the features g. Prints, per split, the median predicted
probability of the positive rows, their mean residual 1 − p, the negatives' weighted mean p,
and (where the run or its benchmark holds a gradient table) the median over tasks of the
ratio of the norm of the training rows' mean loss gradient to the validation rows' and
their cosine (:func:`grouping.affinity.estimators.task_loss_gradients`), beside the
cosine of two halves of the validation rows (its noise): a ratio near 0
means the training rows give the fit nothing to move, a cosine near 0 that they move it
where held-out rows would not (what fitting on rows θ0 never saw, cross-fitting, would
change).

    python scripts/bench_base_residuals.py --run results/bq_stack/yeast/from_scratch
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, write_figures  # noqa: E402

BENCHMARK_GRADIENTS = "benchmark/gradient_features.npy"
"""The gradient table the quality benchmark computes for a run whose estimator reads none."""


def _half_cosines(rows, probability: np.ndarray, gradients) -> np.ndarray:
    """Per task with validation rows in both halves, the cosine of the weighted mean loss
    gradients of its even and its odd validation rows: how far two samples of rows θ0 never
    saw agree (the noise of the training-against-validation cosine)."""
    from grouping.tasksets import VAL

    cosines = []
    for task in range(len(rows.offsets)):
        span = np.arange(rows.offsets[task, VAL], rows.offsets[task, VAL + 1])
        means = []
        for half in (span[0::2], span[1::2]):
            weight = rows.weight[half].astype(np.float64)
            residual = weight * (probability[half] - rows.label[half])
            means.append(residual @ np.asarray(gradients[half], np.float64)
                         / max(weight.sum(), 1e-300))
        norms = [np.linalg.norm(mean) for mean in means]
        if min(norms) > 0:
            cosines.append(float(means[0] @ means[1] / (norms[0] * norms[1])))
    return np.array(cosines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="run directory whose gradients stage has run")
    add_common_arguments(parser, device=None, threads=False)
    arguments = parser.parse_args(argv)
    from grouping import run_files
    from grouping.affinity.estimators import EstimatorInputs, task_loss_gradients
    from grouping.affinity.rows import RowTable
    from grouping.tasksets import TRAIN, VAL
    from workers.console import say

    rows_path = arguments.run / run_files.GRADIENT_ROWS
    if not rows_path.is_file():
        print(f"error: --run: {rows_path} not found (run the gradients stage first)",
              file=sys.stderr)
        return 2
    rows = RowTable(**dict(np.load(rows_path)))
    f0 = np.load(arguments.run / run_files.GRADIENT_F0).astype(np.float64)
    probability = 1 / (1 + np.exp(-f0))
    figures: dict = {"run": str(arguments.run)}
    for split, name in ((TRAIN, "train"), (VAL, "val")):
        positive = (rows.split == split) & (rows.label == 1)
        negative = (rows.split == split) & (rows.label == 0)
        figures[name] = {
            "positive_median_p": float(np.median(probability[positive])),
            "positive_mean_residual": float(np.mean(1 - probability[positive])),
            "negative_mean_p": float(np.average(probability[negative],
                                                weights=rows.weight[negative])),
        }
        say(f"{name}: positives' median p {figures[name]['positive_median_p']:.3f}, mean "
            f"residual {figures[name]['positive_mean_residual']:.3f}; negatives' mean p "
            f"{figures[name]['negative_mean_p']:.4f}")
    for table in (arguments.run / run_files.GRADIENT_FEATURES,
                  arguments.run / BENCHMARK_GRADIENTS):
        gradients = np.load(table, mmap_mode="r") if table.is_file() else None
        if gradients is not None and gradients.shape[1] > 0:
            train, val, _ = task_loss_gradients(EstimatorInputs(rows, f0, gradients))
            train_norm, val_norm = (np.maximum(np.linalg.norm(mean, axis=1), 1e-300)
                                    for mean in (train, val))
            figures["gradient_norm_ratio_median"] = float(np.median(train_norm / val_norm))
            figures["gradient_cosine_median"] = float(np.median(
                (train * val).sum(axis=1) / (train_norm * val_norm)))
            figures["validation_halves_cosine_median"] = float(np.median(
                _half_cosines(rows, probability, gradients)))
            say(f"a task's training against its validation mean loss gradient, median over "
                f"tasks: norm ratio {figures['gradient_norm_ratio_median']:.3f}, cosine "
                f"{figures['gradient_cosine_median']:.3f} (two halves of its validation rows:"
                f" {figures['validation_halves_cosine_median']:.3f}; {table.name})")
            break
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
