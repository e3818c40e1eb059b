"""Cost of the training estimators' variants (lookahead, truncated) against the truth they
rank, in one process on one thread: the sampled subsets are cut into the batches the pipeline's
estimate stage forms (``workers.estimates.estimate_batch_size`` under the config's ``ray``
section), and batch by batch each subset is truly trained (``true_affinity.protocol`` of the
config: a group model from scratch, or θ0 fine-tuned) and then every variant estimates the
batch, in turn, so that every ratio is measured against a reference of the same run.

The run directory is completed up to its base stage first (reused where current). Prints the
truth's median seconds per subset and its total, and each variant's total seconds and its
ratio to the truth's total.

    python scripts/bench_estimator_cost.py --config configs/snap_amazon_sub.yaml \
        --output results/bench_cost/snap_amazon_sub --subsets 8 \
        --variant 'lookahead:lookahead.epochs=3' --variant truncated
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, base_run, write_figures  # noqa: E402


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True,
                        help="run directory (its linear and base stages are reused)")
    parser.add_argument("--subsets", type=int, default=8, help="sampled subsets timed")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="ESTIMATOR[:FIELD=VALUE,...]",
                        help="a training estimator (lookahead, truncated) and fields of the "
                             "affinity section (default: the config's estimator)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    add_common_arguments(parser, device=None, threads=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    from grouping.affinity.estimators import BaseModel, EstimatorInputs, make_estimator
    from grouping.affinity.estimators.base import TrainingEstimator
    from grouping.affinity.subsets import sample_subsets
    from grouping.affinity.true_affinity import fine_tune_subset, train_subset_from_scratch
    from grouping.config import ConfigError, load_config
    from grouping.models import restore
    from workers.console import say
    from workers.estimates import estimate_batch_size
    from workers.pipeline import linear_start
    from workers.quality import variant_options

    try:
        config = load_config(arguments.config, arguments.set)
        variants = {text: make_estimator(variant_options(config, text))
                    for text in arguments.variant or [config.affinity.estimator]}
        for text, estimator in variants.items():
            if not isinstance(estimator, TrainingEstimator):
                raise ConfigError(f"estimator variant {text!r}: only the training estimators "
                                  "(lookahead, truncated) are timed here")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run, pipeline, spec, state = base_run(arguments.output, config, "bench-estimator-cost")
    taskset = pipeline.taskset
    linear = linear_start(run, config, pipeline.family)
    base = BaseModel(taskset, spec, state, config.fine_tuning(), config.seed, config, linear)
    inputs = EstimatorInputs(None, None, None, base)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    subsets = sample_subsets(taskset.num_tasks, config.affinity.subset_size, arguments.subsets,
                             config.seed)
    truth = config.true_affinity

    def truly_train(subset: np.ndarray) -> None:
        if truth.protocol == "from_scratch":
            train_subset_from_scratch(taskset, subset, config, config.seed, cpu, linear)
        else:
            fine_tune_subset(restore(spec, state), spec, taskset, subset, config.fine_tuning(),
                             truth.epochs, config.seed, cpu)

    seconds: dict[str, list[float]] = {"truth": [], **{text: [] for text in variants}}
    batch_sizes = {text: estimate_batch_size(estimator.options, len(subsets), config.ray)
                   for text, estimator in variants.items()}
    batch = max(batch_sizes.values())
    for start in range(0, len(subsets), batch):
        chunk = subsets[start:start + batch]
        for subset in chunk:
            begin = time.perf_counter()
            truly_train(subset)
            seconds["truth"].append(time.perf_counter() - begin)
        for text, estimator in variants.items():
            for first in range(0, len(chunk), batch_sizes[text]):
                begin = time.perf_counter()
                estimator.estimate(chunk[first:first + batch_sizes[text]], inputs, None, cpu)
                seconds[text].append(time.perf_counter() - begin)
    truth_seconds = np.array(seconds["truth"])
    figures = {"config": config.name, "protocol": truth.protocol, "subsets": len(subsets),
               "truth_median_seconds": float(np.median(truth_seconds)),
               "truth_seconds": float(truth_seconds.sum()), "variants": {}}
    say(f"{config.name}: {truth.protocol} truth {np.median(truth_seconds):.2f} s per subset "
        f"(median of {len(subsets)}), {truth_seconds.sum():.1f} s in all")
    for text in variants:
        total = float(np.sum(seconds[text]))
        ratio = total / float(truth_seconds.sum())
        figures["variants"][text] = {"seconds": total, "batch_size": batch_sizes[text],
                                     "ratio_to_truth": ratio}
        say(f"  {text}: {total:.1f} s in batches of {batch_sizes[text]}, "
            f"{ratio:.3f} of the truth")
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
