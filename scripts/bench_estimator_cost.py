"""Cost of the training estimators' variants (lookahead, task_curves, truncated) against the
truth they rank, in one process on one thread: the sampled subsets are cut into the batches
the pipeline's estimate stage forms for all m of them
(``workers.estimates.estimate_batch_size`` under the config's ``ray`` section), and batch
by batch each subset is truly trained (``true_affinity.protocol`` of the config: a group
model from scratch, or θ0 fine-tuned) and then every variant estimates the batch, in turn,
so that every ratio is measured against a reference of the same run.

The timed subsets are the first ``--subsets`` of the m subsets the config's estimate stage
samples (``affinity.coverage`` or ``num_subsets``). What a variant prepares once for all m
subsets (:meth:`Estimator.prepare`: the task curves' fine-tuning) is timed once, on all m;
the ratio is the variant's cost of all m subsets (its preparation plus its batches' seconds
scaled to m) against the truth's (its seconds scaled to m), which is the plain ratio of
totals when every subset is timed.

The run directory is completed up to its base stage first (reused where current). Prints the
truth's median seconds per subset and its total, and each variant's seconds, its
preparation and its ratio.

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
    parser.add_argument("--subsets", type=int, default=64,
                        help="subsets timed (the first of the config's m; at least one of the "
                             "pipeline's batches, or the timed batch is one it never forms)")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="ESTIMATOR[:FIELD=VALUE,...]",
                        help="a training estimator (lookahead, task_curves, truncated) and "
                             "fields of the "
                             "affinity section (default: the config's estimator)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    add_common_arguments(parser, device=None, threads=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    from grouping.affinity.estimators import BaseModel, EstimatorInputs, make_estimator
    from grouping.affinity.estimators.base import TrainingEstimator
    from grouping.affinity.subsets import sample_subsets, subset_count
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
                                  "(lookahead, task_curves, truncated) are timed here")
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
    all_subsets = sample_subsets(taskset.num_tasks, config.affinity.subset_size,
                                 subset_count(config.affinity, taskset.num_tasks), config.seed)
    subsets = all_subsets[:arguments.subsets]
    prepared, preparation = {}, {}
    for text, estimator in variants.items():
        begin = time.perf_counter()
        prepared[text] = estimator.prepare(all_subsets, inputs)
        preparation[text] = time.perf_counter() - begin
    truth = config.true_affinity

    def truly_train(subset: np.ndarray) -> None:
        if truth.protocol == "from_scratch":
            train_subset_from_scratch(taskset, subset, config, config.seed, cpu, linear)
        else:
            fine_tune_subset(restore(spec, state), spec, taskset, subset, config.fine_tuning(),
                             truth.epochs, config.seed, cpu)

    seconds: dict[str, list[float]] = {"truth": [], **{text: [] for text in variants}}
    batch_sizes = {text: estimate_batch_size(estimator.options, len(all_subsets), config.ray)
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
                estimator.estimate(chunk[first:first + batch_sizes[text]], inputs,
                                   prepared[text], cpu)
                seconds[text].append(time.perf_counter() - begin)
    truth_seconds = np.array(seconds["truth"])
    scale = len(all_subsets) / len(subsets)
    figures = {"config": config.name, "protocol": truth.protocol, "subsets": len(subsets),
               "all_subsets": len(all_subsets),
               "truth_median_seconds": float(np.median(truth_seconds)),
               "truth_seconds": float(truth_seconds.sum()), "variants": {}}
    say(f"{config.name}: {truth.protocol} truth {np.median(truth_seconds):.2f} s per subset "
        f"(median of {len(subsets)} of m = {len(all_subsets)}), {truth_seconds.sum():.1f} s "
        "in all")
    for text in variants:
        total = float(np.sum(seconds[text]))
        ratio = (preparation[text] + total * scale) / (float(truth_seconds.sum()) * scale)
        figures["variants"][text] = {"seconds": total, "batch_size": batch_sizes[text],
                                     "preparation_seconds": preparation[text],
                                     "ratio_to_truth": ratio}
        say(f"  {text}: {total:.1f} s in batches of {batch_sizes[text]}, prepared in "
            f"{preparation[text]:.1f} s; {ratio:.3f} of the truth over all m subsets")
    write_figures(arguments.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
