"""Node features from graph structure: FastRP embeddings, SIGN propagation, and each task's
propagated training labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    import torch


def symmetric_adjacency(edges: np.ndarray, num_nodes: int) -> sp.csr_matrix:
    """Unweighted undirected adjacency without self loops or duplicate edges."""
    keep = edges[:, 0] != edges[:, 1]
    rows, cols = edges[keep, 0], edges[keep, 1]
    adjacency = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                              shape=(num_nodes, num_nodes)).tocsr()
    adjacency = adjacency + adjacency.T
    adjacency.data[:] = 1.0
    return adjacency.tocsr()


def fastrp(adjacency: sp.csr_matrix, dim: int, hops: int, degree_exponent: float,
           rng: np.random.Generator) -> np.ndarray:
    """FastRP embedding (Chen et al., "Fast and Accurate Network Embeddings via Very Sparse
    Random Projection", CIKM 2019, Algorithm 1), with the hops concatenated, not summed.

    R is a very sparse random projection (entries ±sqrt(s) with probability 1/(2s), s = sqrt(n));
    N_1 = A L R with A = D⁻¹S the random-walk matrix and L = diag(deg^β) (β = degree_exponent),
    N_k = A N_{k-1}; each N_k is L2-normalised per row. Returns [n, hops * dim] float32.
    """
    num_nodes = adjacency.shape[0]
    sparsity = np.sqrt(num_nodes)
    nonzero = rng.random((num_nodes, dim)) < 1.0 / sparsity
    signs = np.where(rng.random((num_nodes, dim)) < 0.5, -1.0, 1.0)
    projection = np.where(nonzero, signs * np.sqrt(sparsity), 0.0)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    safe_degree = np.maximum(degree, 1.0)
    walk = sp.diags(1.0 / safe_degree) @ adjacency
    current = (safe_degree ** degree_exponent)[:, None] * projection
    blocks = []
    for _ in range(hops):
        current = walk @ current
        norms = np.linalg.norm(current, axis=1, keepdims=True)
        blocks.append(current / np.maximum(norms, 1e-12))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def edge_index(adjacency: sp.csr_matrix) -> torch.Tensor:
    """PyG's [2, E] int64 edge index of a sparse adjacency (both directions, as stored)."""
    import torch

    coo = adjacency.tocoo()
    return torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))


def sign_features(adjacency: sp.csr_matrix, features: np.ndarray, hops: int) -> np.ndarray:
    """SIGN inputs [X, ÂX, …, Â^K X] with Â = D^-1/2 A D^-1/2 (Frasca et al., "SIGN:
    Scalable Inception Graph Neural Networks", 2020, eq. 2), via PyG's SIGN transform."""
    if hops == 0:
        return features
    # PyG and torch take seconds to import: only graph task sets with SIGN hops need them.
    import torch
    from torch_geometric.data import Data
    from torch_geometric.transforms import SIGN

    data = SIGN(hops)(Data(x=torch.from_numpy(features), edge_index=edge_index(adjacency),
                           num_nodes=adjacency.shape[0]))
    parts = [data.x] + [data[f"x{k}"] for k in range(1, hops + 1)]
    return torch.cat(parts, dim=1).numpy().astype(np.float32, copy=False)


def standardize(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns left at zero), float32; scaled
    in place of the centred copy, so that a large feature matrix is not copied again."""
    centered = features - features.mean(axis=0, keepdims=True)
    scale = centered.std(axis=0, keepdims=True)
    centered /= np.where(scale > 0, scale, 1.0)
    return centered.astype(np.float32, copy=False)


LOG_FLOOR = 1e-4
"""Added to a propagated label score before its logarithm (scores of far nodes are 0)."""


def propagated_labels(adjacency: sp.csr_matrix, labels: np.ndarray, train: np.ndarray,
                      alpha: float, iterations: int, folds: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Each task's training labels propagated over the graph, [n, T] float32: log(p + 1e-4)
    with p the personalised PageRank of the task's training positives (Zhou et al.,
    "Learning with Local and Global Consistency", NIPS 2004, eq. 4: p ← αÂp + (1 − α)y,
    Â = D^-1/2 A D^-1/2, ``iterations`` steps from p = y, PyG's ``LabelPropagation``).

    Only training labels are read (``train``: indices of the training nodes), and a training
    node's own label never reaches its own row: the training nodes are dealt into ``folds``
    folds at random, the labels of all folds but f are propagated for the nodes of fold f,
    and every other node reads the mean of the ``folds`` propagations (each of them from
    (folds − 1)/folds of the training labels, as a training node's is).
    """
    import torch
    from torch_geometric.nn.models import LabelPropagation

    num_nodes = adjacency.shape[0]
    edges = edge_index(adjacency)
    targets = torch.from_numpy(labels.astype(np.float32))
    fold_of = np.full(num_nodes, -1)
    fold_of[train] = rng.integers(0, folds, len(train))
    propagate = LabelPropagation(num_layers=iterations, alpha=alpha)
    scores = np.zeros(labels.shape, np.float64)
    outside = fold_of < 0
    for fold in range(folds):
        mask = torch.from_numpy((fold_of >= 0) & (fold_of != fold))
        propagated = propagate(targets, edges, mask=mask).numpy()
        scores[fold_of == fold] = propagated[fold_of == fold]
        scores[outside] += propagated[outside] / folds
    return np.log(scores + LOG_FLOOR).astype(np.float32)
