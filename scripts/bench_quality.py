"""Grouping-quality benchmark on real task sets: which truth, which groups, with error bars.

For each config (default: the six below), on one base model and one set of sampled subsets:
the estimate against two truths (every subset trained from scratch as a group model is, and
θ0 fine-tuned on it; a sample of subsets under a second seed gives each truth's noise floor),
and the grouping outcome of all-in-one, the estimated groups, each truth's oracle groups,
random groups of the same sizes, DMTG, single-task (small task sets) and one logistic
regression per task, every model over several initialisation seeds (see
:mod:`workers.quality`). Prints a markdown table and verdicts per config.

    python scripts/bench_quality.py --json results/bench_quality.json
    python scripts/bench_quality.py --configs configs/yeast.yaml --seeds 5
    python scripts/bench_quality.py --truths from_scratch --max-subsets 100 \
        snap_dblp_sub=50 instructions_tiny=60 --repeat-subsets 100 instructions_tiny=30
    python scripts/bench_quality.py --truths fine_tune --estimate-only \
        --estimators surrogate first_order label_overlap
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_cli import add_common_arguments, write_figures  # noqa: E402
from workers.quality import PROTOCOLS, VARIANTS  # noqa: E402

DEFAULT_CONFIGS = ("sbm_100", "snap_amazon_sub", "snap_dblp_sub", "yeast", "cal500",
                   "instructions_tiny")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path,
                        default=[ROOT / "configs" / f"{name}.yaml" for name in DEFAULT_CONFIGS])
    parser.add_argument("--workdir", type=Path, default=ROOT / "results" / "bench_quality",
                        help="run directories, one per config and truth (reused when present)")
    parser.add_argument("--max-subsets", nargs="+", default=[], metavar="[CONFIG=]N",
                        help="estimator subsets per config, every one also truly trained "
                             "(N for every config, CONFIG=N for the config named CONFIG; "
                             "default 100)")
    parser.add_argument("--repeat-subsets", nargs="+", default=[], metavar="[CONFIG=]N",
                        help="subsets trained under a second seed (the noise floor), as "
                             "--max-subsets (default 100)")
    parser.add_argument("--seeds", type=int, default=3, help="initialisation seeds per row")
    parser.add_argument("--random-seeds", type=int, default=3, help="random-group draws")
    parser.add_argument("--single-task-max", type=int, default=30,
                        help="train single-task models only up to this many tasks")
    parser.add_argument("--truths", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
                        help="the truth protocols measured (default both)")
    parser.add_argument("--estimators", nargs="+", default=list(VARIANTS),
                        metavar="NAME[:FIELD=VALUE,...]",
                        help="estimator variants judged against each truth (fields of the "
                             "affinity section, e.g. surrogate:l2=0.01)")
    parser.add_argument("--estimate-only", action="store_true",
                        help="stop each run after its error report: no group models")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a field of every config")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    parser.add_argument("--verbose", action="store_true",
                        help="library output (Ray, Tune, PyG warnings) on the console instead "
                             "of WORKDIR/logs/bench-<time>.log")
    add_common_arguments(parser, device=None, threads=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    from grouping.config import ConfigError, load_config
    from workers.console import quiet, say
    from workers.quality import (
        BenchmarkSettings,
        benchmark_config,
        markdown,
        subset_caps,
        variant_options,
    )
    from workers.runtime import init_ray

    try:
        configs = [load_config(path, arguments.set) for path in arguments.configs]
        for variant in arguments.estimators:
            variant_options(configs[0], variant)
        names = [config.name for config in configs]
        max_subsets = subset_caps(arguments.max_subsets, names, "--max-subsets")
        repeat_subsets = subset_caps(arguments.repeat_subsets, names, "--repeat-subsets")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = BenchmarkSettings(max_subsets[names[0]], repeat_subsets[names[0]],
                                 arguments.seeds, arguments.random_seeds,
                                 arguments.single_task_max, arguments.seed,
                                 tuple(arguments.truths), tuple(arguments.estimators),
                                 arguments.estimate_only)
    if not arguments.verbose:
        log = arguments.workdir / "logs" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.log"
        quiet(log)
        say(f"library output: {log}")
    init_ray(None)
    figures = {"settings": {**vars(settings), "max_subsets": max_subsets,
                            "repeat_subsets": repeat_subsets}, "configs": {}}
    text: list[str] = []
    for name, path in zip(names, arguments.configs):
        start = time.perf_counter()
        capped = replace(settings, max_subsets=max_subsets[name],
                         repeat_subsets=repeat_subsets[name])
        result = benchmark_config(path, arguments.workdir / name, capped, arguments.set)
        result["seconds"]["total"] = time.perf_counter() - start
        figures["configs"][name] = result
        text += markdown(name, result)
        say("\n".join(markdown(name, result)))
        write_figures(arguments.json, figures)
        if arguments.markdown:
            arguments.markdown.write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
