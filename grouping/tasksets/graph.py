"""Graph community task sets: a graph plus binary community-membership labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CommunityGraph:
    """A graph with T community-labelling tasks, before node features are built.

    edges: [E, 2] int64 node indices in [0, num_nodes); labels: [num_nodes, T] uint8;
    split: [num_nodes] int8; families: [T] planted family per task, or None.
    """

    edges: np.ndarray
    num_nodes: int
    labels: np.ndarray
    split: np.ndarray
    task_names: list[str]
    families: np.ndarray | None = None
