"""Run the task-grouping pipeline.

Locally:      python scripts/run_grouping.py --config configs/quickstart.yaml
On a cluster: ray submit cluster.yaml scripts/run_grouping.py -- --config configs/...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grouping  # noqa: E402
from grouping.artifacts import RunDirectory  # noqa: E402
from grouping.config import ConfigError, RunConfig, load_config  # noqa: E402

# The installed project: `ray submit` runs a copy of this script outside the project tree.
PROJECT = Path(grouping.__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT / "configs" / "quickstart.yaml"
STAGES = ("base", "gradients", "surrogates", "true_subsets", "affinity", "true_affinity",
          "groups", "error_report", "dmtg", "comparison")


def config_path(name: str) -> Path:
    """``name`` as given, or, when it does not exist here, inside the installed project."""
    path = Path(name)
    if not path.exists() and not path.is_absolute() and (PROJECT / path).exists():
        return PROJECT / path
    return path


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="pipeline YAML (default: configs/quickstart.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config field, e.g. --set affinity.l2=0.05")
    parser.add_argument("--output", help="run directory (default: results/<name>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output, skipping stages that are current")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, "
                        "else a fresh local instance)")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage (no report); "
                        "e.g. --until groups runs the estimation and clustering only")
    return parser.parse_args(argv)


def prepare(arguments: argparse.Namespace) -> tuple[RunConfig, RunDirectory]:
    """Validate the config and open the run directory; user mistakes raise ConfigError."""
    config = load_config(config_path(arguments.config), arguments.set)
    if arguments.resume and not arguments.output:
        raise ConfigError("--resume needs --output naming the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = arguments.output or PROJECT / "results" / f"{config.name}-{stamp}"
    return config, RunDirectory(output, arguments.resume)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        config, run = prepare(arguments)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from workers.pipeline import Pipeline
    from workers.runtime import init_ray

    init_ray(arguments.address or config.ray.address)
    start = time.perf_counter()
    try:
        Pipeline(config, run, arguments.resume).execute(arguments.until)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = (f"stopped after {arguments.until}: {run.location}" if arguments.until
             else f"report: {run.location.rstrip('/')}/report.md")
    print(f"finished in {time.perf_counter() - start:.1f} s; {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
