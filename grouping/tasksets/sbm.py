"""Seeded stochastic block model with planted task families that really transfer.

Recipe (see DESIGN.md, "Planted benchmarks must plant real transfer"): family f owns block f;
each task of family f is block f minus an independent random ``drop_fraction`` of its nodes,
so family-mates label nearly the same nodes; then, independently in the training and the
validation split, ``flip_fraction`` of a task's positives become negatives and as many random
negatives become positives. Each task alone sees few noisy positives; pooling a family
denoises, pooling strangers does not. Test labels stay clean.
"""

from __future__ import annotations

import numpy as np

from grouping.config import SBMTaskSetConfig
from grouping.tasksets.base import TEST, TRAIN, VAL, random_split
from grouping.tasksets.graph import CommunityGraph


def sample_sbm_edges(block_of: np.ndarray, p_in: float, p_out: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Undirected SBM edges, sampled per block pair by count then uniform endpoints.

    Sparse: draws Binomial(n_a n_b, p) edges for each block pair, so memory is O(edges).
    Duplicate draws are removed (a negligible loss when p is small).
    """
    blocks = np.unique(block_of)
    members = [np.flatnonzero(block_of == b) for b in blocks]
    edges = []
    for a in range(len(blocks)):
        for b in range(a, len(blocks)):
            pairs = len(members[a]) * len(members[b])
            if a == b:
                pairs = len(members[a]) * (len(members[a]) - 1) // 2
            count = rng.binomial(pairs, p_in if a == b else p_out)
            if count == 0:
                continue
            left = rng.choice(members[a], count)
            right = rng.choice(members[b], count)
            edges.append(np.stack([left, right], axis=1))
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    edges = np.sort(edges[edges[:, 0] != edges[:, 1]], axis=1)
    return np.unique(edges, axis=0).astype(np.int64)


def _flip_noise(labels: np.ndarray, nodes: np.ndarray, fraction: float,
                rng: np.random.Generator) -> None:
    """Flip ``fraction`` of the positives among ``nodes`` to negative, and as many negatives
    to positive, in place (so the positive count is unchanged)."""
    positives = nodes[labels[nodes] == 1]
    negatives = nodes[labels[nodes] == 0]
    count = min(int(round(fraction * len(positives))), len(negatives))
    labels[rng.choice(positives, count, replace=False)] = 0
    labels[rng.choice(negatives, count, replace=False)] = 1


def generate_sbm(config: SBMTaskSetConfig, seed: int) -> CommunityGraph:
    """Generate the graph, labels, splits and planted families of ``config``."""
    rng = np.random.default_rng(seed)
    num_nodes = config.num_blocks * config.block_size
    block_of = np.repeat(np.arange(config.num_blocks), config.block_size)
    edges = sample_sbm_edges(block_of, config.p_in, config.p_out, rng)
    split = random_split(num_nodes, config.splits.train, config.splits.val, rng)
    labels = np.zeros((num_nodes, config.num_tasks), np.uint8)
    families = np.repeat(np.arange(config.num_families), config.tasks_per_family)
    for task, family in enumerate(families):
        column = (block_of == family).astype(np.uint8)
        owned = np.flatnonzero(column)
        column[rng.choice(owned, int(round(config.drop_fraction * len(owned))), replace=False)] = 0
        for part in (TRAIN, VAL):
            _flip_noise(column, np.flatnonzero(split == part), config.flip_fraction, rng)
        labels[:, task] = column
    assert (split == TEST).any()
    names = [f"family{f}-task{t % config.tasks_per_family}" for t, f in enumerate(families)]
    return CommunityGraph(edges, num_nodes, labels, split, names, families)
