"""Benchmark the batched surrogate fits of Grad-TAG (Sec. 3.2) against scikit-learn.

On a synthetic row table shaped like a real one (``--tasks`` tasks, each with
``--rows-per-task`` training and ``--val-rows-per-task`` validation rows of ``--dim``-dim
Gaussian gradient features, labels drawn from a planted logistic model with task-specific
weights around a shared one), ``--subsets`` random task subsets of ``--subset-size`` tasks are
fitted with a zero offset f0 = 0, which scikit-learn can express, and the validation loss of
each task of each subset is computed:

* ``sklearn``: one ``LogisticRegression`` per subset (no intercept, C = 1 / (2 λ Σ ω), lbfgs
  at the same gradient tolerance), on float64 features;
* ``batched``: :func:`grouping.affinity.surrogate.subset_losses`, all subsets in one call, on
  ``--device`` with the features in ``--dtype``.

Reports subsets per second of both (median of ``--repeats`` rounds of each, after a warm-up
round; each function's rounds follow one another, as its calls do in use: a batched call
right after a round of scikit-learn fits runs up to twice as slow, faulting in again the
memory those fits left behind, which a surrogate worker's back-to-back calls never do), their ratio,
the largest absolute and relative difference of the validation losses, and the batched rate
for each number of subsets per call in ``--batch-sizes``.

    python scripts/bench_surrogates.py --tasks 100 --subsets 128 --device auto --json bench.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402
from timing import median_seconds  # noqa: E402

from grouping.affinity.rows import RowTable  # noqa: E402
from grouping.affinity.subsets import sample_subsets  # noqa: E402
from grouping.affinity.surrogate import subset_losses  # noqa: E402
from grouping.training import resolve_device  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def synthetic_rows(num_tasks: int, train_rows: int, val_rows: int, dim: int,
                   seed: int) -> tuple[RowTable, np.ndarray]:
    """A row table (all weights 1) and its float32 gradient features [R, dim]: Gaussian
    features, labels from σ(gᵀw_t) with w_t = (shared + task-specific) / √dim scaled to logits
    of standard deviation about 1.5."""
    rng = np.random.default_rng(seed)
    per_task = train_rows + val_rows
    count = num_tasks * per_task
    features = rng.normal(size=(count, dim)).astype(np.float32)
    task = np.repeat(np.arange(num_tasks), per_task)
    truth = 1.5 * (rng.normal(size=dim) + 0.5 * rng.normal(size=(num_tasks, dim))) / dim ** 0.5
    logits = np.einsum("rd,rd->r", features, truth[task])
    labels = (rng.random(count) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    split = np.tile(np.repeat(np.array([0, 1], np.int8), [train_rows, val_rows]), num_tasks)
    starts = np.arange(num_tasks) * per_task
    offsets = np.stack([starts, starts + train_rows, starts + per_task], axis=1)
    rows = RowTable(np.arange(count) % per_task, task, split, labels,
                    np.ones(count, np.float32), offsets)
    return rows, features


def weighted_task_losses(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         segments: list[slice]) -> np.ndarray:
    """Weighted mean binary cross-entropy of each row segment (one segment per task)."""
    losses = np.logaddexp(0.0, logits) - labels * logits
    return np.array([np.average(losses[s], weights=weights[s]) for s in segments])


def sklearn_losses(subsets: np.ndarray, rows: RowTable, gradients: np.ndarray, l2: float,
                   tolerance: float) -> np.ndarray:
    """The reference: one scikit-learn fit per subset at zero offset, then f̂(S, i)."""
    losses = np.zeros(subsets.shape)
    for number, subset in enumerate(subsets):
        train, val = rows.rows_of(subset, 0), rows.rows_of(subset, 1)
        weight = rows.weight[train].astype(np.float64)
        model = LogisticRegression(C=1 / (2 * l2 * weight.sum()), fit_intercept=False,
                                   tol=tolerance, max_iter=10_000)
        model.fit(gradients[train].astype(np.float64), rows.label[train], sample_weight=weight)
        logits = gradients[val].astype(np.float64) @ model.coef_[0]
        bounds = np.concatenate([[0], np.cumsum(rows.offsets[subset, 2] - rows.offsets[subset, 1])])
        segments = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        losses[number] = weighted_task_losses(logits, rows.label[val], rows.weight[val], segments)
    return losses


def _median_rates(functions: dict[str, Callable[[], object]], count: int, repeats: int,
                  device: torch.device) -> dict[str, float]:
    """Median subsets per second of each function (interleaved rounds after a warm-up)."""
    seconds = median_seconds(functions, repeats, device)
    return {name: count / value for name, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rows-per-task", type=int, default=1400, help="training rows")
    parser.add_argument("--val-rows-per-task", type=int, default=350)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--subset-size", type=int, default=10)
    parser.add_argument("--subsets", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128],
                        help="subsets per call of the batched solve, for the sweep")
    parser.add_argument("--l2", type=float, default=0.1)
    parser.add_argument("--tolerance", type=float, default=1e-8)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                        help="features of the batched solve")
    parser.add_argument("--repeats", type=int, default=3)
    add_common_arguments(parser)
    args = parser.parse_args()
    limit_threads(args)
    device = resolve_device(args.device)
    rows, gradients = synthetic_rows(args.tasks, args.rows_per_task, args.val_rows_per_task,
                                     args.dim, args.seed)
    f0 = np.zeros(len(rows), np.float32)
    subsets = sample_subsets(args.tasks, args.subset_size, args.subsets, args.seed)
    dtype = DTYPES[args.dtype]

    def batched(size: int) -> Callable[[], np.ndarray]:
        return lambda: np.concatenate([
            subset_losses(subsets[start:start + size], rows, f0, gradients, args.l2,
                          tolerance=args.tolerance, device=device, dtype=dtype)
            for start in range(0, len(subsets), size)])

    reference = sklearn_losses(subsets, rows, gradients, args.l2, args.tolerance)
    difference = np.abs(batched(len(subsets))() - reference)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, {args.dtype} features, "
          f"{len(subsets)} subsets of {args.subset_size} tasks, "
          f"{args.subset_size * args.rows_per_task} × {args.dim} training rows each, "
          f"median of {args.repeats}")
    rates = {**_median_rates({"sklearn": lambda: sklearn_losses(subsets, rows, gradients,
                                                                args.l2, args.tolerance)},
                             len(subsets), args.repeats, device),
             **_median_rates({"batched": batched(len(subsets))}, len(subsets), args.repeats,
                             device)}
    ratio = rates["batched"] / rates["sklearn"]
    print(f"sklearn {rates['sklearn']:.1f} subsets/s, batched {rates['batched']:.1f} subsets/s, "
          f"batched/sklearn {ratio:.1f}")
    print(f"validation losses: max |difference| {difference.max():.3g}, "
          f"max relative {(difference / np.abs(reference)).max():.3g}")
    sweep = _median_rates({str(size): batched(size) for size in args.batch_sizes},
                          len(subsets), args.repeats, device)
    for size, rate in sweep.items():
        print(f"batched, {size:>3} subsets per call: {rate:.1f} subsets/s")
    write_figures(args.json, {
        "subsets_per_s": rates, "ratio": ratio, "max_loss_diff": float(difference.max()),
        "max_relative_loss_diff": float((difference / np.abs(reference)).max()),
        "batch_sizes": {"subsets_per_s": sweep}, "device": str(device),
        "threads": torch.get_num_threads(), "dtype": args.dtype, "repeats": args.repeats})


if __name__ == "__main__":
    main()
