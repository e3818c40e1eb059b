"""Task-set builders: every builder returns a :class:`TaskSet`."""

from __future__ import annotations

import numpy as np

from grouping.config import (
    ConfigError,
    InstructionsTaskSetConfig,
    PythonTaskSetConfig,
    RunConfig,
    SBMTaskSetConfig,
    TableTaskSetConfig,
)
from grouping.tasksets.base import TEST, TRAIN, VAL, TaskSet
from grouping.tasksets.custom import build_custom
from grouping.tasksets.features import (
    fastrp,
    propagated_labels,
    sign_features,
    standardize,
    symmetric_adjacency,
)
from grouping.tasksets.graph import CommunityGraph
from grouping.tasksets.instruction_suite import generate_suite
from grouping.tasksets.instructions import InstructionTaskSet, load_instructions
from grouping.tasksets.sbm import generate_sbm
from grouping.tasksets.snap import load_snap
from grouping.tasksets.table import load_table

AnyTaskSet = TaskSet | InstructionTaskSet

__all__ = ["TEST", "TRAIN", "VAL", "AnyTaskSet", "InstructionTaskSet", "TaskSet",
           "build_taskset", "graph_taskset"]


def graph_taskset(graph: CommunityGraph, config: RunConfig) -> TaskSet:
    """Node features for a community graph (given or FastRP, then SIGN), as a TaskSet."""
    adjacency = symmetric_adjacency(graph.edges, graph.num_nodes)
    options = config.features
    if options.kind == "given":
        base = np.load(options.path).astype(np.float32)
        if base.ndim != 2 or base.shape[0] != graph.num_nodes:
            raise ConfigError(f"features.path: {options.path} must hold a [num_nodes="
                              f"{graph.num_nodes}, F] array, found shape {base.shape}")
    else:
        rng = np.random.default_rng(config.seed + 1)
        base = fastrp(adjacency, options.dim, options.hops, options.degree_exponent, rng)
    features = sign_features(adjacency, base, options.sign_hops)
    own_columns = None
    labels_options = options.propagated_labels
    if labels_options.enabled is not False:
        own_columns = features.shape[1] + np.arange(graph.labels.shape[1])
        features = np.concatenate([features, propagated_labels(
            adjacency, graph.labels, np.flatnonzero(graph.split == TRAIN),
            labels_options.alpha, labels_options.iterations, labels_options.folds,
            np.random.default_rng(config.seed + 2))], axis=1)
    return TaskSet(standardize(features), graph.labels, graph.split, graph.task_names,
                   graph.families, own_columns)


def build_taskset(config: RunConfig) -> AnyTaskSet:
    """Build the task set a run config names. Tables and custom builders bring their own
    features; only graph task sets go through the ``features`` section (FastRP, SIGN).
    Instruction task sets are texts for a language model."""
    if isinstance(config.taskset, InstructionsTaskSetConfig):
        if config.taskset.source == "generated":
            return generate_suite(config.taskset, config.seed)
        return load_instructions(config.taskset, config.seed)
    if isinstance(config.taskset, TableTaskSetConfig):
        return load_table(config.taskset, config.seed)
    if isinstance(config.taskset, PythonTaskSetConfig):
        return build_custom(config.taskset, config.seed)
    if isinstance(config.taskset, SBMTaskSetConfig):
        graph = generate_sbm(config.taskset, config.seed)
    else:
        graph = load_snap(config.taskset, config.seed)
    return graph_taskset(graph, config)
