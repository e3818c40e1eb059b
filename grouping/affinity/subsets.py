"""Random task subsets for the surrogate fits (Grad-TAG, Sec. 3.2)."""

from __future__ import annotations

import math

import numpy as np

from grouping.config import AffinityConfig


def subsets_for_coverage(num_tasks: int, size: int, coverage: float) -> int:
    """m ≈ c·T(T−1) / (s(s−1)): each pair of tasks then shares about c subsets."""
    return max(1, math.ceil(coverage * num_tasks * (num_tasks - 1) / (size * (size - 1))))


def subset_count(options: AffinityConfig, num_tasks: int) -> int:
    """m of the estimate stage: ``affinity.num_subsets``, or :func:`subsets_for_coverage` of
    ``affinity.coverage``."""
    return options.num_subsets or subsets_for_coverage(num_tasks, options.subset_size,
                                                       options.coverage)


def sample_subsets(num_tasks: int, size: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct subsets of ``size`` tasks, uniform, each row sorted: [m, size].

    Fewer come back when fewer distinct subsets exist; sampling stops after 20·count draws.
    """
    rng = np.random.default_rng(seed)
    count = min(count, math.comb(num_tasks, size))
    seen: set[tuple[int, ...]] = set()
    subsets = []
    for _ in range(20 * count):
        subset = tuple(sorted(rng.choice(num_tasks, size, replace=False).tolist()))
        if subset not in seen:
            seen.add(subset)
            subsets.append(subset)
            if len(subsets) == count:
                break
    return np.array(subsets, dtype=np.int64)
