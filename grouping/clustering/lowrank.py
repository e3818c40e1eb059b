"""Low-rank (Burer–Monteiro) solver of the average-density clustering SDP of :mod:`.sdp`.

The SDP (Peng and Wei, "Approximating K-means-type clustering via semidefinite programming",
SIAM J. Optim. 2007; Grad-TAG, Li et al., KDD 2024, Sec. 3.4)

    maximise ⟨T, X⟩  subject to  X ⪰ 0,  X ≥ 0,  X·1 = 1,  tr(X) = k

is solved over X = V Vᵀ with V ∈ R^{n×r}, V ≥ 0 (Burer and Monteiro, "A nonlinear programming
algorithm for solving semidefinite programs via low-rank factorization", Math. Program. 2003).
X ⪰ 0 holds by construction and V ≥ 0 makes X ≥ 0 entrywise, so only the n + 1 equality
constraints remain,

    c(V) = V (Vᵀ1) − 1 ∈ R^n,    d(V) = ‖V‖²_F − k.

They are handled by the augmented Lagrangian of Burer and Monteiro (objective negated for
minimisation),

    L(V; y, z, σ) = −⟨T, VVᵀ⟩ − yᵀc(V) − z d(V) + σ/2 (‖c(V)‖² + d(V)²),

minimised over the box V ≥ 0 by L-BFGS-B (the bound-constrained augmented Lagrangian method
of Nocedal and Wright, "Numerical Optimization", 2nd ed., Sec. 17.4). Every round ends with the
first-order multiplier update y ← y − σ c(V), z ← z − σ d(V), and σ ← γσ when the largest
violation fell by less than a factor η below the best so far (the outer loop of Birgin and
Martínez, "Practical Augmented Lagrangian Methods for Constrained Optimization", SIAM 2014,
here with γ = 10, η = 1/4). T is scaled to max |T_ij| = 1; for it σ = 10 at the start was the
fastest of 1, 10 and 100 on planted affinities of n = 200 to 1000 tasks.

Rank. The integral solutions X = Σ_g 1_g 1_gᵀ / |g| have V = [1_g / √|g|]_g with r = k
non-negative columns, but r = k often stops at a spurious local optimum (up to a third of
the objective lost on planted instances). The default r = 2k reached the SDP optimum on every
planted instance of moderate noise we tried, and lost at most three per cent more than r = n
on the others, at twice the work of r = k per iteration: O(n² r) for the product T·V.

Cone. X = VVᵀ with V ≥ 0 is completely positive, a subset of the doubly non-negative matrices
{X ⪰ 0, X ≥ 0} of the SDP, equal only for n ≤ 4 (Diananda 1962). The optimum found is
therefore at most the SDP optimum: equal to it on clustered affinities, whose integral
optimum is completely positive, and up to six per cent below it on very noisy or unstructured
affinities of 40 to 60 tasks (three to four per cent also with r = n, so most of the gap is
the cone's, not the rank's).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import Bounds, minimize
from threadpoolctl import threadpool_limits

from grouping.clustering.rounding import round_factor_to_groups

INITIAL_PENALTY = 10.0
NOISE = 0.5
GROWTH = 10.0
DECREASE = 0.25
INNER_ITERATIONS = 2000


def default_rank(num_groups: int) -> int:
    """r = 2k columns of V (see the module docstring)."""
    return 2 * num_groups


def initial_factor(size: int, rank: int, num_groups: int, seed: int) -> np.ndarray:
    """A random balanced partition into k groups, V = [1_g / √|g|]_g in the first k columns,
    plus uniform noise on all r columns of half its Frobenius norm (seeded).

    The partition alone is feasible; the noise breaks ties between groups and columns. A
    uniform random start lies near a multiple of the one-group solution 11ᵀ/n, from which the
    groups split off slowly: it took twenty times longer at n = 1000, k = 20.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % num_groups)
    factor = np.zeros((size, rank))
    factor[np.arange(size), labels] = 1 / np.sqrt(np.bincount(labels)[labels])
    noise = rng.uniform(size=(size, rank))
    return factor + NOISE * np.sqrt(num_groups) * noise / np.linalg.norm(noise)


def constraint_residuals(factor: np.ndarray, num_groups: int) -> tuple[np.ndarray, float]:
    """c(V) = VVᵀ1 − 1 and d(V) = ‖V‖²_F − k."""
    return factor @ factor.sum(0) - 1, float(np.sum(factor**2)) - num_groups


def violation(factor: np.ndarray, num_groups: int) -> float:
    """Largest constraint violation max(‖c(V)‖∞, |d(V)|)."""
    rows, trace = constraint_residuals(factor, num_groups)
    return max(float(np.abs(rows).max()), abs(trace))


def lagrangian(flat: np.ndarray, affinity: np.ndarray, multipliers: np.ndarray,
               trace_multiplier: float, penalty: float, num_groups: int,
               ) -> tuple[float, np.ndarray]:
    """L(V; y, z, σ) of the module docstring and its gradient with respect to V.

    ∇L = −2TV + w sᵀ + 1 (Vᵀw)ᵀ + 2 (σ d − z) V with s = Vᵀ1 and w = σ c − y (T symmetric).
    """
    factor = flat.reshape(affinity.shape[0], -1)
    product = affinity @ factor
    column_sums = factor.sum(0)
    rows, trace = constraint_residuals(factor, num_groups)
    row_weight = penalty * rows - multipliers
    trace_weight = penalty * trace - trace_multiplier
    value = (-np.sum(factor * product) - multipliers @ rows - trace_multiplier * trace
             + penalty / 2 * (rows @ rows + trace**2))
    gradient = (-2 * product + np.outer(row_weight, column_sums)
                + (factor.T @ row_weight)[None, :] + 2 * trace_weight * factor)
    return float(value), gradient.ravel()


def minimise_lagrangian(factor: np.ndarray, affinity: np.ndarray, multipliers: np.ndarray,
                        trace_multiplier: float, penalty: float, num_groups: int,
                        ) -> np.ndarray:
    """argmin over V ≥ 0 of L(V; y, z, σ) by L-BFGS-B, started from ``factor``."""
    result = minimize(lagrangian, factor.ravel(), jac=True, method="L-BFGS-B",
                      args=(affinity, multipliers, trace_multiplier, penalty, num_groups),
                      bounds=Bounds(0, np.inf),
                      options={"maxiter": INNER_ITERATIONS, "ftol": 1e-12, "gtol": 1e-8})
    return result.x.reshape(factor.shape)


def normalised_affinity(affinity: np.ndarray) -> np.ndarray:
    """(T + Tᵀ)/2 scaled to max |T_ij| = 1: neither changes the feasible set nor the maximiser."""
    symmetric = (affinity + affinity.T) / 2
    return symmetric / max(float(np.abs(symmetric).max()), np.finfo(float).tiny)


def solve_lowrank_factor(affinity: np.ndarray, num_groups: int, seed: int = 0,
                         rank: int | None = None, tolerance: float = 1e-6,
                         max_rounds: int = 60) -> np.ndarray:
    """V [n, r] ≥ 0 with X = VVᵀ approximately optimal for the SDP of :mod:`.sdp`.

    Stops when the largest constraint violation max(‖c(V)‖∞, |d(V)|) is below ``tolerance``
    or, with a warning, after ``max_rounds`` multiplier updates. BLAS runs on one thread: the
    products are n × n by n × r, too small for threads to pay, and on a loaded machine their
    waiting made each evaluation tens of times slower.
    """
    rank = rank or default_rank(num_groups)
    if rank < num_groups:
        raise ValueError(f"rank {rank} < {num_groups} groups cannot hold a partition")
    scaled = normalised_affinity(affinity)
    factor = initial_factor(len(scaled), rank, num_groups, seed)
    multipliers, trace_multiplier = np.zeros(len(scaled)), 0.0
    penalty = INITIAL_PENALTY
    best = violation(factor, num_groups)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(max_rounds):
            factor = minimise_lagrangian(factor, scaled, multipliers, trace_multiplier, penalty,
                                         num_groups)
            current = violation(factor, num_groups)
            if current < tolerance:
                break
            rows, trace = constraint_residuals(factor, num_groups)
            multipliers = multipliers - penalty * rows
            trace_multiplier -= penalty * trace
            if current > DECREASE * best:
                penalty *= GROWTH
            best = min(best, current)
        else:
            warnings.warn(f"low-rank SDP stopped after {max_rounds} rounds with constraint "
                          f"violation {current:.1e}", RuntimeWarning, stacklevel=2)
    return factor


def solve_lowrank(affinity: np.ndarray, num_groups: int, seed: int = 0,
                  rank: int | None = None) -> np.ndarray:
    """The relaxed cluster matrix X = VVᵀ [n, n] from :func:`solve_lowrank_factor`."""
    factor = solve_lowrank_factor(affinity, num_groups, seed, rank)
    return factor @ factor.T


def lowrank_groups(affinity: np.ndarray, num_groups: int, seed: int) -> list[list[int]]:
    """Groups from the low-rank solution V, rounded by :func:`.rounding.round_factor_to_groups`:
    the k-means rounding of X = VVᵀ without forming the n × n matrix X."""
    if num_groups == 1:
        return [list(range(affinity.shape[0]))]
    factor = solve_lowrank_factor(affinity, num_groups, seed)
    return round_factor_to_groups(factor, num_groups, seed)
