"""The lookahead's fine-tuning of many subsets side by side against one subset at a time, on
a run's base model: seconds per subset for each stack size, their ratio to the one-at-a-time
reference timed in the same run, and the largest relative difference of the figures from it.

The run directory is completed up to its base stage first (reused where current). Each
measurement fine-tunes the same sampled subsets with the config's lookahead settings
(:func:`grouping.stacked_fine_tuning.fine_tuned_figures` with the given stack size; the
reference is :meth:`grouping.families.TaskFamily.fine_tuned_figures`, one subset at a time);
the medians of ``--repeats`` interleaved rounds are printed.

    python scripts/bench_stacked_lookahead.py --config configs/snap_amazon_sub.yaml \\
        --output results/bench_cost/snap_amazon_sub --subsets 32 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import (  # noqa: E402
    add_common_arguments,
    base_run,
    limit_threads,
    write_figures,
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True,
                        help="run directory (its linear and base stages are reused)")
    parser.add_argument("--subsets", type=int, default=32, help="sampled subsets fine-tuned")
    parser.add_argument("--stack-sizes", type=int, nargs="+", default=[1, 8, 16, 32],
                        metavar="N")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    add_common_arguments(parser, device=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    import torch

    from grouping.affinity.estimators.base import SEED_OFFSET
    from grouping.affinity.estimators.lookahead import LookaheadEstimator
    from grouping.affinity.subsets import sample_subsets
    from grouping.config import ConfigError, load_config
    from grouping.families import TaskFamily
    from grouping.models import restore
    from grouping.stacked_fine_tuning import fine_tuned_figures
    from workers.console import say

    try:
        config = load_config(arguments.config, arguments.set)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if any(size < 1 for size in arguments.stack_sizes):
        print("error: --stack-sizes: every size must be at least 1", file=sys.stderr)
        return 2
    _, pipeline, spec, state = base_run(arguments.output, config, "bench-stacked-lookahead")
    limit_threads(arguments)
    taskset, family = pipeline.taskset, pipeline.family
    base = restore(spec, state)
    options = config.affinity.lookahead
    training = LookaheadEstimator(config.affinity).schedule(config.fine_tuning())
    subsets = sample_subsets(taskset.num_tasks, config.affinity.subset_size, arguments.subsets,
                             config.seed)
    seed, cpu = config.seed + SEED_OFFSET, torch.device("cpu")
    settings = (training, options.epochs, seed, cpu, options.keep_best, options.target)

    def one_at_a_time() -> np.ndarray:
        return TaskFamily.fine_tuned_figures(family, base, spec, taskset, subsets, *settings)

    def stacked(size: int) -> np.ndarray:
        return fine_tuned_figures(base, spec, taskset, subsets, *settings, stack_size=size)

    seconds: dict[str, list[float]] = {"one at a time": [],
                                       **{str(size): [] for size in arguments.stack_sizes}}
    figures_of: dict[str, np.ndarray] = {}
    for _ in range(arguments.repeats):
        for name in seconds:
            start = time.perf_counter()
            figures_of[name] = (one_at_a_time() if name == "one at a time"
                                else stacked(int(name)))
            seconds[name].append(time.perf_counter() - start)
    reference = float(np.median(seconds["one at a time"]))
    figures: dict = {"config": config.name, "subsets": len(subsets), "repeats": arguments.repeats,
                     "one_at_a_time_ms_per_subset": 1000 * reference / len(subsets),
                     "stacks": {}}
    say(f"{config.name}: one subset at a time {1000 * reference / len(subsets):.1f} ms a subset "
        f"(median of {arguments.repeats})")
    for size in arguments.stack_sizes:
        median = float(np.median(seconds[str(size)]))
        difference = float(np.max(np.abs(figures_of[str(size)] - figures_of["one at a time"])
                                  / np.abs(figures_of["one at a time"])))
        figures["stacks"][size] = {"ms_per_subset": 1000 * median / len(subsets),
                                   "speedup": reference / median,
                                   "max_relative_difference": difference}
        say(f"  stacks of {size}: {1000 * median / len(subsets):.1f} ms a subset, "
            f"{reference / median:.2f}× one at a time, figures within {difference:.1e}")
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
