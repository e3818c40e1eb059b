"""Floating-point operation counts of the estimate and of true fine-tuning, from torch's
FlopCounterMode: it counts matrix products and convolutions (not Cholesky factorisations or
elementwise work), so both sides are counted alike and their ratio is the comparable figure."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(function: Callable[[], object]) -> int:
    """Operations FlopCounterMode counts while ``function()`` runs."""
    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def flop_comparison(gradient_flops_per_row: float, num_rows: int,
                    estimate_flops_per_subset: float, true_flops_per_subset: float,
                    num_subsets: int, preparation_flops: float = 0.0) -> dict[str, float]:
    """Counted FLOPs of the estimate (gradient features for every row, the estimator's
    preparation once, its estimate per subset) against true fine-tuning of every subset,
    and their ratio."""
    gradients = gradient_flops_per_row * num_rows
    estimates = preparation_flops + estimate_flops_per_subset * num_subsets
    true = true_flops_per_subset * num_subsets
    return {"gradient_features": gradients, "estimates": estimates,
            "estimate": gradients + estimates, "true_per_subset": true_flops_per_subset,
            "true_extrapolated": true, "ratio": (gradients + estimates) / true}
