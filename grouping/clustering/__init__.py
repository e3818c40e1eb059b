"""Clustering of a task-affinity matrix into groups: every task in exactly one group."""

from grouping.clustering.baselines import random_groups, spectral_groups
from grouping.clustering.rounding import groups_to_labels
from grouping.clustering.sdp import choose_num_groups, sdp_groups, solve_sdp

__all__ = ["choose_num_groups", "groups_to_labels", "random_groups", "sdp_groups", "solve_sdp",
           "spectral_groups"]
