"""Benchmark the projected output gradients g = Pᵀ∇θ f_task(x; θ0) (Grad-TAG, Sec. 3.1) on a
SIGN-MLP ``--in-dim`` → ``--hidden`` → ``--heads`` (512→256→256→100), rows (example, random
task).

Options: ``loop`` (one ``torch.autograd.grad`` call per row, the gradients stacked and projected
by the dense P, as the reference Grad-TAG code does), ``vmap`` (``output_gradients``: vmap of
grad, dense P), ``vmap_per_head`` (with ``--skip``, the SIGN-MLP given a per-task skip over
its input: the same, each row's head and skip rows projected alone, as the binary-label
family runs it), and the projectors of ``grouping.affinity.projectors`` run by the hook engine
of ``grouping.affinity.hook_gradients``: ``dense`` (the same P), ``kronecker`` (d_out·d_in ≤
--dim) and ``kronecker+dense`` (Kronecker to --intermediate-dim, then dense to --dim). The
bound is one [rows, D] × [D, d] matmul, the projection alone of already formed gradients.
Rows/s are medians over interleaved rounds; the fidelity of each option is the Pearson
correlation of its feature inner products with the exact gradient inner products over all
distinct pairs (i < j, squared norms left out) of --fidelity-rows rows.
Inputs are N(0, 1) and tasks uniform, so that distinct rows have nearly orthogonal gradients:
a hard case for any projection.

    python scripts/bench_gradients.py --dim 200 --batch 512 --repeats 5 --json bench.json
    python scripts/bench_gradients.py --skip --in-dim 868 --hidden 32 16 --tasks-per-batch 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_cli import add_common_arguments, limit_threads, write_figures  # noqa: E402
from timing import median_seconds  # noqa: E402

from grouping.affinity.gradients import output_gradients  # noqa: E402
from grouping.affinity.hook_gradients import (  # noqa: E402
    head_logits,
    projected_output_gradients,
)
from grouping.affinity.projection import dense_projection  # noqa: E402
from grouping.affinity.projectors import PROJECTIONS, Projector, make_projector  # noqa: E402
from grouping.models import ModelSpec, build_model  # noqa: E402
from grouping.models.sign_mlp import HEAD_PARAMETERS  # noqa: E402
from grouping.training import resolve_device  # noqa: E402

Rows = tuple[torch.Tensor, torch.Tensor]


def _median_rows_per_s(functions: dict[str, Callable[[], object]], rows: int, repeats: int,
                       device: torch.device) -> dict[str, float]:
    """Median rows/s of each function (interleaved rounds after a warm-up)."""
    seconds = median_seconds(functions, repeats, device)
    return {name: rows / value for name, value in seconds.items()}


def per_row_gradients(model: nn.Module, rows: Rows) -> torch.Tensor:
    """Exact flattened gradients [rows, D], one autograd call per row."""
    params = list(model.parameters())
    inputs, tasks = rows
    gradients = [torch.autograd.grad(model(inputs[row:row + 1])[0, tasks[row]], params)
                 for row in range(len(inputs))]
    return torch.stack([torch.cat([part.flatten() for part in parts]) for parts in gradients])


def options(model: nn.Module, dim: int, intermediate_dim: int, seed: int,
            device: torch.device) -> tuple[dict[str, Callable[[Rows], torch.Tensor]],
                                           dict[str, int]]:
    """Each option as rows → features [rows, d], and its feature dimension."""
    shapes = {name: param.shape for name, param in model.named_parameters()}
    blocks = {name: block.to(device)
              for name, block in dense_projection(shapes, dim, seed).items()}
    full = torch.cat(list(blocks.values()))
    run = {"loop": lambda rows: per_row_gradients(model, rows) @ full,
           "vmap": lambda rows: output_gradients(model, blocks, *rows)[1]}
    dims = {"loop": dim, "vmap": dim}
    if model.skip is not None:
        per_head = [name for name in shapes if name.startswith(HEAD_PARAMETERS)]
        run["vmap_per_head"] = lambda rows: output_gradients(model, blocks, *rows,
                                                             per_head=per_head)[1]
        dims["vmap_per_head"] = dim
    for kind in PROJECTIONS:
        projector = make_projector(kind, model, dim, seed, intermediate_dim=intermediate_dim)
        run[kind] = partial(_projected, model, projector)
        dims[kind] = projector.dim
    return run, dims


def _projected(model: nn.Module, projector: Projector, rows: Rows) -> torch.Tensor:
    return projected_output_gradients(model, projector, head_logits, rows)[1]


def inner_product_correlation(features: torch.Tensor, exact: torch.Tensor) -> float:
    """Pearson correlation of the off-diagonal inner products of two row sets."""
    upper = torch.triu_indices(len(exact), len(exact), offset=1)
    pairs = [(rows @ rows.T)[upper[0], upper[1]].double() for rows in (features, exact)]
    return float(torch.corrcoef(torch.stack(pairs))[0, 1])


def sample_rows(spec: ModelSpec, count: int, generator: torch.Generator, device: torch.device,
                tasks_per_batch: int | None = None) -> Rows:
    """Rows (N(0, 1) inputs [count, in_dim], uniform tasks [count]; with ``tasks_per_batch``,
    that many tasks in sorted runs, as the row table's chunks hold them)."""
    inputs = torch.randn(count, spec.in_dim, generator=generator)
    if tasks_per_batch is None:
        tasks = torch.randint(0, spec.num_heads, (count,), generator=generator)
    else:
        chosen = torch.randperm(spec.num_heads, generator=generator)[:tasks_per_batch]
        tasks = torch.sort(chosen[torch.arange(count) * tasks_per_batch // count]).values
    return inputs.to(device), tasks.to(device)


def bench(args: argparse.Namespace, device: torch.device) -> dict:
    """Rows/s of every option and of the matmul bound, ratios, and inner-product fidelity."""
    spec = ModelSpec(args.in_dim, tuple(args.hidden), args.heads, skip=args.skip)
    model = build_model(spec, seed=args.seed).to(device)
    run, dims = options(model, args.dim, args.intermediate_dim, args.seed, device)
    generator = torch.Generator().manual_seed(args.seed)
    rows = sample_rows(spec, args.batch, generator, device, args.tasks_per_batch)
    size = sum(param.numel() for param in model.parameters())
    dense_gradients = torch.randn(args.batch, size, generator=generator).to(device)
    matrix = torch.randn(size, args.dim, generator=generator).to(device)
    functions = {name: partial(option, rows) for name, option in run.items()}
    functions["bound"] = lambda: dense_gradients @ matrix
    rate = _median_rows_per_s(functions, args.batch, args.repeats, device)
    bound = rate.pop("bound")
    sample = sample_rows(spec, args.fidelity_rows, generator, device)
    exact = per_row_gradients(model, sample)
    fidelity = {name: inner_product_correlation(option(sample), exact)
                for name, option in run.items()}
    return {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
            "repeats": args.repeats, "dim": args.dim, "dims": dims,
            "intermediate_dim": args.intermediate_dim, "parameters": size,
            "rows_per_s": rate, "bound_rows_per_s": bound,
            "ratio_vs_loop": {name: value / rate["loop"] for name, value in rate.items()},
            "ratio_vs_bound": {name: value / bound for name, value in rate.items()},
            "inner_product_correlation": fidelity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=200, help="projection dimension d")
    parser.add_argument("--intermediate-dim", type=int, default=2048,
                        help="Kronecker dimension of kronecker+dense")
    parser.add_argument("--batch", type=int, default=512, help="rows per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-dim", type=int, default=512, help="input features")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256],
                        help="trunk widths")
    parser.add_argument("--heads", type=int, default=100, help="tasks (one head each)")
    parser.add_argument("--skip", action="store_true",
                        help="give each task a linear skip from the input (model.skip)")
    parser.add_argument("--tasks-per-batch", type=int, default=None,
                        help="rows of this many tasks per batch, sorted (default: uniform)")
    parser.add_argument("--fidelity-rows", type=int, default=200,
                        help="rows whose pairwise inner products measure fidelity")
    add_common_arguments(parser)
    args = parser.parse_args()
    limit_threads(args)
    device = resolve_device(args.device)
    result = bench(args, device)
    print(f"device {device}, {result['threads']} CPU threads, {result['parameters']} parameters, "
          f"batch {args.batch}, median of {args.repeats}")
    print(f"{'option':>16} {'dim':>5} {'rows/s':>10} {'vs loop':>8} {'vs bound':>8} "
          f"{'ip corr':>8}")
    for name, value in result["rows_per_s"].items():
        print(f"{name:>16} {result['dims'][name]:>5} {value:>10.0f} "
              f"{result['ratio_vs_loop'][name]:>8.2f} {result['ratio_vs_bound'][name]:>8.2f} "
              f"{result['inner_product_correlation'][name]:>8.3f}")
    print(f"{'bound':>16} {args.dim:>5} {result['bound_rows_per_s']:>10.0f}")
    write_figures(args.json, result)


if __name__ == "__main__":
    main()
