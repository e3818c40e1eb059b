"""Benchmark the per-task gradients and the AdaTask step on a SIGN-MLP.

For each (number of heads, batch size): the median time per step of the per-task gradients
of the trunk by K backward passes (``loop``) and by one vmapped backward pass (``vmap``), and
of a full ``adatask_adam`` training step against a ``torch.optim.Adam`` step, both as
:func:`grouping.training.make_step` runs them (forward pass included). Ratios are against
references measured in the same run, interleaved round by round.

    python scripts/bench_adatask.py --heads 10 30 100 --batch 64 512 --json bench.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402
from timing import median_seconds  # noqa: E402

from grouping.config import TrainConfig  # noqa: E402
from grouping.models import ModelSpec, build_model  # noqa: E402
from grouping.optim import task_gradients  # noqa: E402
from grouping.training import make_step, resolve_device  # noqa: E402


def bench(num_heads: int, batch_size: int, repeats: int, seed: int,
          device: torch.device) -> dict:
    """Median seconds per step of each variant on one model size, and the ratios."""
    spec = ModelSpec(192, (64, 64), num_heads)
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, 192, generator=generator).to(device)
    targets = (torch.rand(batch_size, num_heads, generator=generator) < 0.2).float().to(device)
    config = TrainConfig(lr=1e-3)
    models = {name: build_model(spec, seed=seed).to(device)
              for name in ("loop", "vmap", "adam", "adatask_adam")}
    steps = {name: make_step(models[name], name, config, None)
             for name in ("adam", "adatask_adam")}

    def gradients(method: str) -> Callable[[], object]:
        model = models[method]
        shared = list(model.trunk.parameters())

        def run() -> object:
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                model(features), targets, reduction="none").mean(0) / num_heads
            return task_gradients(losses, shared, method=method)
        return run

    def step(name: str) -> Callable[[], object]:
        return lambda: steps[name](models[name](features), targets)

    seconds = median_seconds({"gradients_loop": gradients("loop"),
                               "gradients_vmap": gradients("vmap"),
                               "step_adam": step("adam"),
                               "step_adatask_adam": step("adatask_adam")}, repeats, device)
    return {"heads": num_heads, "batch": batch_size, "seconds": seconds,
            "loop_over_vmap": seconds["gradients_loop"] / seconds["gradients_vmap"],
            "adatask_over_adam": seconds["step_adatask_adam"] / seconds["step_adam"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--repeats", type=int, default=30)
    add_common_arguments(parser, device="cpu")
    args = parser.parse_args()
    limit_threads(args)
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print(f"{'heads':>5} {'batch':>5} {'loop ms':>8} {'vmap ms':>8} {'loop/vmap':>9} "
          f"{'adam ms':>8} {'adatask ms':>10} {'adatask/adam':>12}")
    rows = []
    for num_heads in args.heads:
        for batch_size in args.batch:
            row = bench(num_heads, batch_size, args.repeats, args.seed, device)
            rows.append(row)
            ms = {name: 1e3 * value for name, value in row["seconds"].items()}
            print(f"{num_heads:>5} {batch_size:>5} {ms['gradients_loop']:>8.2f} "
                  f"{ms['gradients_vmap']:>8.2f} {row['loop_over_vmap']:>9.2f} "
                  f"{ms['step_adam']:>8.2f} {ms['step_adatask_adam']:>10.2f} "
                  f"{row['adatask_over_adam']:>12.2f}", flush=True)
    write_figures(args.json, {"device": str(device), "threads": torch.get_num_threads(),
                              "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
