"""Command-line options and output shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from threadpoolctl import threadpool_limits

from grouping.artifacts import atomic_write_bytes

if TYPE_CHECKING:
    from grouping.artifacts import RunDirectory
    from grouping.config import RunConfig
    from grouping.models import Spec
    from workers.pipeline import Pipeline


def add_common_arguments(parser: argparse.ArgumentParser, device: str | None = "auto",
                         threads: bool = True) -> None:
    """--seed and --json, with --threads (CPU threads of torch and of the BLAS libraries)
    and --device (default ``device``; none when None) where a benchmark uses them."""
    parser.add_argument("--seed", type=int, default=0)
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    if device is not None:
        parser.add_argument("--device", default=device, help="cpu, cuda or auto")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")


def limit_threads(args: argparse.Namespace) -> None:
    """Apply --threads, when given, to torch and to the BLAS libraries numpy and
    scikit-learn call."""
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)


def write_figures(path: Path | None, figures: dict) -> None:
    """Write the figures as JSON to ``path`` (when given), atomically."""
    if path is not None:
        atomic_write_bytes(path, (json.dumps(figures, indent=2) + "\n").encode())


def base_run(output: Path, config: RunConfig, log_name: str
             ) -> tuple[RunDirectory, Pipeline, Spec, dict[str, torch.Tensor]]:
    """The run directory ``output`` (continued when it exists) completed up to its base
    stage, library output going to ``logs/<log_name>-<time>.log`` there: (run directory,
    pipeline, base model spec, base model state). Starts Ray locally."""
    import time

    from grouping import run_files
    from grouping.artifacts import RunDirectory
    from grouping.models import spec_from_dict
    from workers.console import quiet
    from workers.pipeline import Pipeline
    from workers.runtime import init_ray

    run = RunDirectory(output, output.is_dir())
    quiet(run.file(f"logs/{log_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"))
    init_ray(None)
    pipeline = Pipeline(config, run, output.is_dir())
    pipeline.execute("base")
    saved = run.load_torch(run_files.BASE_MODEL)
    return run, pipeline, spec_from_dict(saved["spec"]), saved["state"]
