"""Command-line options and output shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from grouping.artifacts import atomic_write_bytes


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
