"""Run the task-grouping pipeline.

Locally:      python scripts/run_grouping.py --config configs/quickstart.yaml
On a cluster: ray submit cluster.yaml scripts/run_grouping.py -- --config configs/...
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grouping  # noqa: E402
from grouping.config import ConfigError, load_config  # noqa: E402
from workers.stages import STAGE_NAMES  # noqa: E402

if TYPE_CHECKING:
    from workers.pipeline import Pipeline

# The installed project: `ray submit` runs a copy of this script outside the project tree.
PROJECT = Path(grouping.__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT / "configs" / "quickstart.yaml"


def config_path(name: str) -> Path:
    """``name`` as given, or, when it does not exist here, inside the installed project."""
    path = Path(name)
    if not path.exists() and not path.is_absolute() and (PROJECT / path).exists():
        return PROJECT / path
    return path


class OneLineParser(argparse.ArgumentParser):
    """argparse with the bad-input contract: a mistake is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())} (see --help)\n")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__,
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
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' output (Ray, Tune, PyG, warnings) on the "
                        "console instead of only in the run's logs/")
    parser.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage (no report); "
                        "e.g. --until groups runs the estimation and clustering only")
    return parser.parse_args(argv)


def prepare(arguments: argparse.Namespace) -> Pipeline:
    """Validate the config, the run directory, the task set's files and the resources the
    run will need, before Ray starts and before anything is written; user mistakes raise
    ConfigError. The heavier libraries are imported only as each check needs them, so that
    a mistake in the config or a data file is reported within seconds."""
    config = load_config(config_path(arguments.config), arguments.set)
    if arguments.resume and not arguments.output:
        raise ConfigError("--resume needs --output naming the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = arguments.output or PROJECT / "results" / f"{config.name}-{stamp}"
    from grouping.artifacts import RunDirectory

    run = RunDirectory(output, arguments.resume)
    try:
        from grouping.tasksets import build_taskset

        start = time.perf_counter()
        taskset = build_taskset(config)
        seconds = time.perf_counter() - start
        from workers.pipeline import Pipeline

        pipeline = Pipeline(config, run, arguments.resume, taskset, seconds)
        pipeline.check(arguments.until)
    except OSError as error:
        raise ConfigError(f"{error.filename or 'input'}: {error.strerror or error}") from None
    return pipeline


def _refuse(error: ConfigError) -> int:
    from workers.console import bar_stream

    print(f"error: {' '.join(str(error).split())}", file=bar_stream(), flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline = prepare(arguments)
        except ConfigError as error:
            return _refuse(error)
    from workers.console import bar_stream, quiet, say
    from workers.runtime import init_ray

    if arguments.verbose:
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    run = pipeline.run
    say(f"run directory: {run.location}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if caught:
        run.write_text(f"logs/checks-{stamp}.log", "".join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
            for w in caught))
    log = run.file(f"logs/run-{stamp}.log")
    if not arguments.verbose:
        quiet(log)
    start = time.perf_counter()
    try:
        init_ray(arguments.address or pipeline.config.ray.address)
        pipeline.execute(arguments.until)
    except ConfigError as error:
        return _refuse(error)
    except Exception as error:
        if arguments.verbose:
            raise
        traceback.print_exc()
        print(f"error: the run failed ({type(error).__name__}: {' '.join(str(error).split())}); "
              f"the traceback is in {log}; rerun with --resume to continue", file=bar_stream(),
              flush=True)
        return 1
    finally:
        run.publish()
    seconds = time.perf_counter() - start
    if arguments.until:
        say(f"stopped after {arguments.until} in {seconds:.0f} s: {run.location}")
        return 0
    say(pipeline.summary["verdict"])
    report = f"{run.location.rstrip('/')}/report"
    say(f"finished in {seconds:.0f} s; report: {report}.html (also {report}.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
