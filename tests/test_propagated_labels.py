"""Each task's propagated training labels as an input column of its own
(``features.propagated_labels``): what it reads, what it never reads, and how the per-task
regression and the model's linear start use it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import small_sbm_config
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from grouping.config import ConfigError, parse_config
from grouping.models import ModelSpec, build_model
from grouping.models.per_task_linear import (
    MAX_ITERATIONS,
    OWN_WEIGHT_GRID,
    fit_per_task_linear,
)
from grouping.tasksets import TEST, TRAIN, VAL, TaskSet, build_taskset
from grouping.tasksets.features import LOG_FLOOR, propagated_labels, symmetric_adjacency
from grouping.training import predict

ALPHA, ITERATIONS, FOLDS = 0.8, 15, 3


def _small_graph(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A 60-node graph of two dense halves, a label column per half, a random split."""
    rng = np.random.default_rng(seed)
    half = np.arange(60) // 30
    pairs = np.array([(a, b) for a in range(60) for b in range(a + 1, 60)
                      if rng.random() < (0.3 if half[a] == half[b] else 0.02)])
    labels = np.stack([half == 0, half == 1], axis=1).astype(np.uint8)
    split = rng.choice([TRAIN, VAL, TEST], size=60, p=[0.4, 0.3, 0.3]).astype(np.int8)
    return symmetric_adjacency(pairs, 60), labels, split


def _propagate(adjacency, labels, split, seed: int = 0) -> np.ndarray:
    return propagated_labels(adjacency, labels, np.flatnonzero(split == TRAIN), ALPHA,
                             ITERATIONS, FOLDS, np.random.default_rng(seed))


def _by_hand(adjacency: sp.csr_matrix, seeds: np.ndarray) -> np.ndarray:
    """p ← αÂp + (1 − α)y from p = y, Â = D^-1/2 A D^-1/2, clamped to [0, 1]."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1.0)))
    normalized = scale @ adjacency @ scale
    scores = seeds.copy()
    for _ in range(ITERATIONS):
        scores = np.clip(ALPHA * (normalized @ scores) + (1 - ALPHA) * seeds, 0.0, 1.0)
    return scores


def test_outside_the_training_rows_each_column_is_the_mean_personalised_pagerank_of_the_folds():
    adjacency, labels, split = _small_graph()
    columns = _propagate(adjacency, labels, split)
    train = np.flatnonzero(split == TRAIN)
    fold_of = np.full(60, -1)
    fold_of[train] = np.random.default_rng(0).integers(0, FOLDS, len(train))
    runs = [_by_hand(adjacency, labels * ((fold_of >= 0) & (fold_of != fold))[:, None])
            for fold in range(FOLDS)]
    outside = fold_of < 0
    assert np.allclose(columns[outside], np.log(np.mean(runs, axis=0)[outside] + LOG_FLOOR),
                       atol=1e-4)
    for fold in range(FOLDS):
        rows = fold_of == fold
        assert np.allclose(columns[rows], np.log(runs[fold][rows] + LOG_FLOOR), atol=1e-4)


def test_only_training_labels_are_read_and_never_a_training_node_s_own():
    adjacency, labels, split = _small_graph()
    columns = _propagate(adjacency, labels, split)
    hidden = labels.copy()
    hidden[split != TRAIN] = 1 - hidden[split != TRAIN]
    assert np.array_equal(_propagate(adjacency, hidden, split), columns)
    for node in np.flatnonzero(split == TRAIN)[:5]:
        flipped = labels.copy()
        flipped[node] = 1 - flipped[node]
        changed = _propagate(adjacency, flipped, split)
        assert np.array_equal(changed[node], columns[node])
        assert not np.array_equal(changed, columns)


def test_a_task_s_column_ranks_its_held_out_members_first():
    adjacency, labels, split = _small_graph()
    columns = _propagate(adjacency, labels, split)
    held_out = split != TRAIN
    for task in range(2):
        assert average_precision_score(labels[held_out, task],
                                       columns[held_out, task]) > 0.95


def _labelled_config(**features) -> dict:
    config = small_sbm_config()
    config["features"] = {**config["features"],
                          "propagated_labels": {"enabled": True, **features}}
    config["model"] = {"hidden": [4, 4], "skip": True, "skip_init": "linear"}
    return config


def test_a_graph_task_set_gains_one_own_column_per_task_by_default_and_is_seeded():
    plain = build_taskset(parse_config(small_sbm_config()))
    config = parse_config(_labelled_config())
    labelled, again = build_taskset(config), build_taskset(config)
    width = plain.features.shape[1]
    assert labelled.features.shape == (plain.num_examples, width + plain.num_tasks)
    assert labelled.own_columns.tolist() == list(range(width, width + plain.num_tasks))
    assert np.array_equal(labelled.features, again.features)
    assert np.allclose(labelled.features[:, :width], plain.features, atol=1e-5)
    # on by default for a graph task set
    default = small_sbm_config()
    del default["features"]["propagated_labels"]
    assert np.array_equal(build_taskset(parse_config(default)).features, labelled.features)


def test_a_task_s_regression_fits_the_shared_columns_and_weighs_its_own_on_validation():
    taskset = build_taskset(parse_config(_labelled_config()))
    tasks = np.array([3, 0, 7])
    fit = fit_per_task_linear(taskset, tasks)
    train = taskset.split == TRAIN
    shared = taskset.shared_columns
    for index, task in enumerate(tasks):
        others = np.setdiff1d(taskset.own_columns, taskset.own_columns[task])
        assert not fit.weights[index, others].any()
        assert fit.weights[index, taskset.own_columns[task]] in OWN_WEIGHT_GRID
        model = LogisticRegression(C=fit.inverse_l2[index], class_weight="balanced",
                                   max_iter=MAX_ITERATIONS)
        model.fit(taskset.features[np.ix_(train, shared)].astype(np.float64),
                  taskset.labels[train, task])
        assert np.allclose(fit.weights[index, shared], model.coef_[0], atol=1e-6)
    # the own column's training rows are never read
    features = taskset.features.copy()
    features[np.ix_(train, taskset.own_columns)] = 0.0
    moved = TaskSet(features, taskset.labels, taskset.split, taskset.task_names,
                    own_columns=taskset.own_columns)
    again = fit_per_task_linear(moved, tasks)
    assert np.array_equal(again.weights, fit.weights)
    assert np.array_equal(again.intercepts, fit.intercepts)


def test_a_linear_start_over_own_columns_is_the_per_task_regressions():
    config = parse_config(_labelled_config())
    taskset = build_taskset(config)
    tasks = [2, 5, 11]
    linear = fit_per_task_linear(taskset, tasks)
    model = build_model(ModelSpec.from_config(config.model, taskset.features.shape[1],
                                              len(tasks)), seed=0, linear=linear)
    logits = predict(model, torch.tensor(taskset.features)).numpy()
    assert np.allclose(logits, linear.logits(taskset.features), atol=1e-4)


def test_own_columns_must_name_one_distinct_feature_column_per_task():
    features = np.zeros((4, 3), np.float32)
    labels = np.zeros((4, 2), np.uint8)
    split = np.zeros(4, np.int8)
    with pytest.raises(ValueError, match="own_columns"):
        TaskSet(features, labels, split, ["a", "b"], own_columns=np.array([2, 2]))
    with pytest.raises(ValueError, match="own_columns"):
        TaskSet(features, labels, split, ["a", "b"], own_columns=np.array([2, 3]))


def test_a_task_set_without_a_graph_refuses_propagated_labels(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("x,y1,y2,y3\n" + "".join(f"{i},{i % 2},{(i // 2) % 2},{(i // 3) % 2}\n"
                                                for i in range(20)))
    with pytest.raises(ConfigError, match="features.propagated_labels.enabled"):
        parse_config({"taskset": {"kind": "table", "path": str(table), "last_labels": 3},
                      "features": {"propagated_labels": {"enabled": True}},
                      "affinity": {"subset_size": 2}})
