"""Wall-time measurement shared by the benchmarks: interleaved rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int,
                   device: torch.device) -> dict[str, float]:
    """Median wall time of each function, called in ``repeats`` interleaved rounds after one
    warm-up round (so that a slow spell of the machine hits every function alike); CUDA work
    is waited for before the clock stops."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_number in range(repeats + 1):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_number:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
