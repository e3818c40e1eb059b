"""SDP relaxation of average-density clustering (Grad-TAG, Sec. 3.4; Peng and Wei, "Approximating
K-means-type clustering via semidefinite programming", SIAM J. Optim. 2007):

    maximise ⟨T, X⟩  subject to  X ⪰ 0,  X ≥ 0,  X·1 = 1,  tr(X) = k,

whose integral solutions are X = Σ_g 1_g 1_gᵀ / |g|. Rounding: k-means on the rows of X.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from grouping.clustering.lowrank import lowrank_groups
from grouping.clustering.rounding import round_to_groups


def solve_sdp(affinity: np.ndarray, num_groups: int, solver: str = "SCS") -> np.ndarray:
    """The relaxed cluster matrix X [n, n] for ``num_groups`` groups."""
    size = affinity.shape[0]
    matrix = cp.Variable((size, size), PSD=True)
    constraints = [matrix >= 0, matrix @ np.ones(size) == np.ones(size),
                   cp.trace(matrix) == num_groups]
    problem = cp.Problem(cp.Maximize(cp.trace(affinity @ matrix)), constraints)
    problem.solve(solver=solver)
    if matrix.value is None:
        raise RuntimeError(f"SDP solver {solver} failed: {problem.status}")
    return np.asarray(matrix.value)


def choose_num_groups(affinity: np.ndarray, max_groups: int) -> int:
    """The k = auto rule: the largest eigengap of the normalised Laplacian of the positive part
    of T (von Luxburg, "A Tutorial on Spectral Clustering", 2007, Sec. 8.3), k in 2..max_groups.
    """
    weights = np.clip(affinity, 0, None)
    degree = weights.sum(1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    laplacian = np.eye(len(weights)) - scale[:, None] * weights * scale[None, :]
    eigenvalues = np.sort(np.linalg.eigvalsh(laplacian))
    upper = min(max_groups, len(weights) - 1)
    gaps = np.diff(eigenvalues[:upper + 1])
    return int(np.argmax(gaps[1:]) + 2) if upper >= 2 else 1


AUTO_LOWRANK_ABOVE = 200


def sdp_groups(affinity: np.ndarray, num_groups: int, solver: str, seed: int) -> list[list[int]]:
    """Groups from the SDP relaxation and k-means rounding. ``solver``: a cvxpy solver,
    ``LOWRANK`` (:mod:`grouping.clustering.lowrank`), or ``auto`` (SCS up to
    ``AUTO_LOWRANK_ABOVE`` tasks, LOWRANK above)."""
    if num_groups == 1:
        return [list(range(affinity.shape[0]))]
    if solver == "auto":
        solver = "LOWRANK" if affinity.shape[0] > AUTO_LOWRANK_ABOVE else "SCS"
    if solver == "LOWRANK":
        return lowrank_groups(affinity, num_groups, seed)
    return round_to_groups(solve_sdp(affinity, num_groups, solver), num_groups, seed)
