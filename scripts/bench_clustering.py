"""Benchmark the low-rank clustering SDP solver against cvxpy + SCS on planted affinities.

For each number of tasks n: a planted block affinity (1 within, −0.3 across ``--groups``
equal groups, plus symmetric Gaussian noise of scale ``--noise``, seeded) is clustered by the
low-rank Burer–Monteiro solver and by the reference cvxpy + SCS solver at its default
settings, both followed by k-means rounding (for the low-rank solver from its factor V, which
gives the k-means of the rows of X = VVᵀ without forming X). Prints the median seconds of
``--repeats`` runs (solve and rounding), their ratio reference / low-rank, the relative
objective gap (⟨T, X_sdp⟩ − ⟨T, X_lowrank⟩) / |⟨T, X_sdp⟩| and the adjusted Rand index of each
grouping against the planted groups. The reference is skipped above ``--reference-max`` tasks.

    python scripts/bench_clustering.py --sizes 100 300 500 1000 --json bench_clustering.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402

from grouping.clustering.lowrank import solve_lowrank_factor  # noqa: E402
from grouping.clustering.rounding import (  # noqa: E402
    groups_to_labels,
    round_factor_to_groups,
    round_to_groups,
)
from grouping.clustering.sdp import solve_sdp  # noqa: E402

Solution = tuple[np.ndarray, list[list[int]]]


def planted_affinity(size: int, num_groups: int, noise: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled block affinity with symmetric Gaussian noise, and the planted labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % num_groups)
    affinity = np.where(labels[:, None] == labels[None, :], 1.0, -0.3)
    affinity = affinity + noise * rng.normal(size=affinity.shape)
    affinity = (affinity + affinity.T) / 2
    np.fill_diagonal(affinity, 0)
    return affinity, labels


def lowrank_solution(affinity: np.ndarray, num_groups: int, seed: int) -> Solution:
    """V with X = VVᵀ from the low-rank solver and its groups rounded from V without forming X
    (what ``lowrank_groups`` returns)."""
    factor = solve_lowrank_factor(affinity, num_groups, seed)
    return factor, round_factor_to_groups(factor, num_groups, seed)


def reference_solution(affinity: np.ndarray, num_groups: int, seed: int) -> Solution:
    """X from cvxpy + SCS at default settings and its groups (what ``sdp_groups`` returns)."""
    matrix = solve_sdp(affinity, num_groups, "SCS")
    return matrix, round_to_groups(matrix, num_groups, seed)


def median_seconds(function: Callable[[], Solution], repeats: int) -> tuple[float, Solution]:
    """Median wall time of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ari(groups: list[list[int]], labels: np.ndarray) -> float:
    """Adjusted Rand index of the groups against the planted labels."""
    return float(adjusted_rand_score(labels, groups_to_labels(groups, len(labels))))


def bench(size: int, args: argparse.Namespace) -> dict:
    """Median seconds, objective and ARI of the low-rank solver and, up to the limit, SCS."""
    affinity, labels = planted_affinity(size, args.groups, args.noise, args.seed)
    row: dict = {"size": size}
    seconds, (factor, groups) = median_seconds(
        lambda: lowrank_solution(affinity, args.groups, args.seed), args.repeats)
    row["lowrank"] = {"seconds": seconds, "objective": float(np.sum(factor * (affinity @ factor))),
                      "ari": ari(groups, labels)}
    if size <= args.reference_max:
        seconds, (matrix, groups) = median_seconds(
            lambda: reference_solution(affinity, args.groups, args.seed), args.repeats)
        row["reference"] = {"seconds": seconds, "objective": float(np.sum(affinity * matrix)),
                            "ari": ari(groups, labels)}
    return row


def print_row(row: dict) -> None:
    """One line of the table; the reference columns read "skipped" above the limit."""
    lowrank = row["lowrank"]
    line = f"{row['size']:>6} {lowrank['seconds']:>11.2f} "
    if "reference" in row:
        reference = row["reference"]
        gap = (reference["objective"] - lowrank["objective"]) / abs(reference["objective"])
        line += (f"{reference['seconds']:>8.2f} {reference['seconds'] / lowrank['seconds']:>9.1f} "
                 f"{gap:>10.2e} {lowrank['ari']:>12.3f} {reference['ari']:>7.3f}")
    else:
        line += f"{'skipped':>8} {'-':>9} {'-':>10} {lowrank['ari']:>12.3f} {'-':>7}"
    print(line, flush=True)


def summary(rows: list[dict]) -> dict:
    """The --json figures, keyed by the number of tasks."""
    figures: dict[str, dict[str, float]] = {key: {} for key in (
        "seconds", "reference_seconds", "objective_gap", "ari", "reference_ari")}
    for row in rows:
        size, lowrank = str(row["size"]), row["lowrank"]
        figures["seconds"][size] = lowrank["seconds"]
        figures["ari"][size] = lowrank["ari"]
        if "reference" in row:
            reference = row["reference"]
            figures["reference_seconds"][size] = reference["seconds"]
            figures["reference_ari"][size] = reference["ari"]
            figures["objective_gap"][size] = ((reference["objective"] - lowrank["objective"])
                                              / abs(reference["objective"]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 500, 1000])
    parser.add_argument("--groups", type=int, default=10, help="planted and solved groups k")
    parser.add_argument("--noise", type=float, default=1.0, help="scale of the Gaussian noise")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-max", type=int, default=500,
                        help="largest n solved by cvxpy + SCS")
    add_common_arguments(parser, device=None)
    args = parser.parse_args()
    limit_threads(args)
    print(f"k = {args.groups}, noise {args.noise}, seed {args.seed}, median of {args.repeats}; "
          f"cvxpy + SCS reference skipped above n = {args.reference_max}")
    print(f"{'n':>6} {'low-rank s':>11} {'SCS s':>8} {'SCS/low':>9} {'obj gap':>10} "
          f"{'ARI low-rank':>12} {'ARI SCS':>7}")
    rows = []
    for size in args.sizes:
        rows.append(bench(size, args))
        print_row(rows[-1])
    write_figures(args.json, summary(rows))


if __name__ == "__main__":
    main()
