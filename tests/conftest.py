"""Shared fixtures: Ray started once per session; small configs made by the tests."""

from __future__ import annotations

import pytest
import ray
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_session():
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def small_sbm_config(**sections) -> dict:
    """The quickstart's planted SBM (6 families × 4 tasks on 16 blocks of 150 nodes, narrow
    trunk, the quickstart's model: no per-task skip, unweighted loss, stopping on validation
    loss), with only the Grad-TAG groups and one random grouping trained, one
    initialisation seed each."""
    config = {
        "name": "test-sbm",
        "seed": 1,
        "taskset": {"kind": "sbm", "num_blocks": 16, "block_size": 150, "p_in": 0.04,
                    "p_out": 0.0015, "num_families": 6, "tasks_per_family": 4,
                    "drop_fraction": 0.1, "flip_fraction": 0.2},
        "features": {"kind": "fastrp", "dim": 64, "hops": 4, "sign_hops": 2,
                     "propagated_labels": {"enabled": False}},
        "model": {"hidden": [4, 4], "skip": False},
        "train": {"max_epochs": 200, "patience": 20, "pos_weight": "none",
                  "early_stopping": "val_loss"},
        "affinity": {"projection_dim": 400, "subset_size": 10, "coverage": 30},
        "clustering": {"num_groups": 6},
        "groups": {"single_task": False, "random_seeds": 1, "spectral": False},
        "group_training": {"seeds": 1},
        "dmtg": {"enabled": False},
        "ray": {"num_workers": 2, "chunk_rows": 2048, "subsets_per_batch": 8},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def small_binary_taskset():
    """120 rows of 6 Gaussian features and 4 binary tasks, each a noisy sign of one feature
    (half training, 30% validation)."""
    import numpy as np

    from grouping.tasksets.base import TaskSet, random_split

    rng = np.random.default_rng(0)
    features = rng.standard_normal((120, 6)).astype(np.float32)
    labels = (features[:, :4] + 0.5 * rng.standard_normal((120, 4)) > 0).astype(np.uint8)
    return TaskSet(features, labels, random_split(120, 0.5, 0.3, rng),
                   [f"task{index}" for index in range(4)])
