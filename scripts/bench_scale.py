"""Benchmark the estimation pipeline at scale: a planted SBM of about 300k nodes, 1M edges and
500 tasks (or a given config), through base model, gradient features, surrogates, affinity
and clustering (the comparison's group training too with --train-groups).

Prints the wall time of each stage and the peak memory of the run (Ray's processes included;
see :class:`PeakMemory`: run it on an otherwise idle machine), and, as the reference measured
in the same run, the dense vmap projection on a sample of the same
rows extrapolated to all of them: the gradient stage's speed-up over it.

    python scripts/bench_scale.py --json bench_scale.json
    python scripts/bench_scale.py --config configs/dblp_500.yaml --json dblp_500.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_cli import add_common_arguments, write_figures  # noqa: E402

from grouping import run_files  # noqa: E402
from grouping.affinity.computers import GradientComputer  # noqa: E402
from grouping.affinity.rows import RowTable  # noqa: E402
from grouping.artifacts import RunDirectory  # noqa: E402
from grouping.config import RunConfig, load_config, parse_config  # noqa: E402
from grouping.models import spec_from_dict  # noqa: E402
from workers.pipeline import Pipeline  # noqa: E402
from workers.runtime import init_ray, share_device  # noqa: E402


def sbm_config(args: argparse.Namespace) -> RunConfig:
    """The planted SBM at the requested size, with the scale options (Kronecker + dense
    projection, capped negatives, low-rank clustering), on the CPU or, with --gpus, on that
    share of a GPU per worker and per surrogate batch."""
    return parse_config({
        "name": "bench-scale", "seed": args.seed, "device": "auto" if args.gpus else "cpu",
        "taskset": {"kind": "sbm", "num_blocks": args.blocks, "block_size": args.block_size,
                    "p_in": args.p_in, "p_out": args.p_out, "num_families": args.blocks,
                    "tasks_per_family": args.tasks // args.blocks},
        "features": {"kind": "fastrp", "dim": 64, "hops": 4, "sign_hops": 2},
        "model": {"hidden": [64, 64]},
        "train": {"lr": 0.001, "batch_size": 256, "max_epochs": args.epochs, "patience": 5},
        "affinity": {"estimator": "surrogate", "projection": args.projection,
                     "projection_dim": args.dim,
                     "subset_size": 10, "coverage": args.coverage,
                     "max_negatives": args.max_negatives},
        "clustering": {"num_groups": "auto", "max_groups": 100, "solver": "auto"},
        "groups": {"single_task": False, "random_seeds": 1, "spectral": False},
        "group_training": {"optimizers": ["adam"]},
        "dmtg": {"enabled": False},
        "ray": {"num_workers": 2, "chunk_rows": 8192, "subsets_per_batch": 64,
                "num_gpus_per_worker": args.gpus, "num_gpus_per_surrogate": args.gpus},
    })


class PeakMemory:
    """Samples the machine's memory in use, MemTotal − MemAvailable of /proc/meminfo, and
    keeps its largest rise above the level at the start.

    Shared memory (Ray's object store) counts once and reclaimable page cache (the memory-
    mapped gradient file) not at all. Reading two counters costs nothing to the processes
    measured, where summing their proportional set sizes walks every page table they map
    and stalls their page faults. The figure is the run's only on an otherwise idle
    machine.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = self._in_use()

    @staticmethod
    def _in_use() -> int:
        memory = psutil.virtual_memory()
        return memory.total - memory.available

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._in_use() - self._start)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def dense_reference(run: RunDirectory, pipeline: Pipeline, config: RunConfig,
                    sample: int) -> float:
    """Rows/s of the dense vmap projection on ``sample`` rows of the run's row table, on the
    gradient workers' device: the median over chunks of 1,024 rows, after a warm-up
    chunk."""
    saved = run.load_torch(run_files.BASE_MODEL)
    rows = RowTable(**run.load_arrays(run_files.GRADIENT_ROWS))
    picked = np.random.default_rng(0).choice(len(rows), min(sample, len(rows)), replace=False)
    computer = GradientComputer(spec_from_dict(saved["spec"]), saved["state"],
                                pipeline.taskset, config.affinity.projection_dim, config.seed,
                                device=share_device(config.ray.num_gpus_per_worker))
    chunks = np.array_split(picked, max(1, len(picked) // 1024))
    computer(rows.example[chunks[0]], rows.task[chunks[0]])
    rates = []
    for chunk in chunks:
        start = time.perf_counter()
        computer(rows.example[chunk], rows.task[chunk])
        rates.append(len(chunk) / (time.perf_counter() - start))
    return float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a run config instead of the planted SBM")
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--block-size", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--p-in", type=float, default=0.0015)
    parser.add_argument("--p-out", type=float, default=8e-6)
    parser.add_argument("--projection", default="kronecker+dense")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--coverage", type=float, default=10.0)
    parser.add_argument("--max-negatives", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--gpus", type=float, default=0.0,
                        help="share of a GPU per worker and per surrogate batch (the SBM; a "
                             "--config sets its own ray.num_gpus_per_*)")
    parser.add_argument("--train-groups", action="store_true",
                        help="also train the comparison's group models")
    parser.add_argument("--reference-rows", type=int, default=8192,
                        help="rows of the dense-projection reference")
    parser.add_argument("--output", help="run directory (default: a temporary one)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output (finished stages keep their times)")
    add_common_arguments(parser, device=None, threads=False)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = load_config(args.config) if args.config else sbm_config(args)
    output = args.output or tempfile.mkdtemp(prefix="bench-scale-")
    run = RunDirectory(output, resume=args.resume)
    with PeakMemory() as memory:
        init_ray(config.ray.address)
        pipeline = Pipeline(config, run, resume=args.resume)
        start = time.perf_counter()
        pipeline.execute(None if args.train_groups else "groups")
        wall = time.perf_counter() - start
    manifest = json.loads(run.file(run_files.MANIFEST).read_text())
    stages = {name: record["seconds"] for name, record in manifest["stages"].items()}
    stages["taskset"] = manifest["taskset_seconds"]
    rows = len(np.load(run.file(run_files.GRADIENT_F0), mmap_mode="r"))
    subsets = len(np.load(run.file(run_files.SUBSET_LOSSES))["subsets"])
    groups = json.loads(run.file(run_files.GROUPS).read_text())
    reference = dense_reference(run, pipeline, config, args.reference_rows)
    dense_seconds = rows / reference
    print(f"{config.taskset.num_tasks} tasks, {pipeline.taskset.num_examples} examples, "
          f"{rows} gradient rows ({config.affinity.projection}, d = "
          f"{config.affinity.projection_dim}), {subsets} subsets, k = {groups['num_groups']}")
    for name, seconds in stages.items():
        print(f"  {name:>12} {seconds:9.1f} s")
    print(f"wall {wall:.1f} s; peak memory {memory.peak / 2 ** 30:.2f} GiB (rise of the "
          "machine's memory in use, Ray included)")
    print(f"dense vmap reference: {reference:.0f} rows/s → {dense_seconds:.0f} s for every row; "
          f"gradient stage {stages['gradients']:.1f} s ({dense_seconds / stages['gradients']:.1f}"
          f"× faster)")
    if "ari_planted" in groups:
        print(f"ARI vs planted families {groups['ari_planted']:.3f}")
    write_figures(args.json, {
        "stage_seconds": stages, "wall_seconds": wall, "peak_rss_gib": memory.peak / 2 ** 30,
        "rows": rows, "subsets": subsets, "num_groups": groups["num_groups"],
        "ari_planted": groups.get("ari_planted"), "dense_reference_rows_per_s": reference,
        "gradient_speedup_vs_dense": dense_seconds / stages["gradients"],
        "run": run.location})


if __name__ == "__main__":
    main()
