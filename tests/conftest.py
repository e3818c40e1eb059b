"""Shared fixtures: Ray started once per session; small configs made by the tests."""

from __future__ import annotations

import pytest
import ray
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ray_session():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def small_sbm_config(**sections) -> dict:
    """A strongly planted SBM: 3 families × 4 tasks on 8 blocks of 100 nodes."""
    config = {
        "name": "test-sbm",
        "seed": 0,
        "taskset": {"kind": "sbm", "num_blocks": 8, "block_size": 100, "p_in": 0.06,
                    "p_out": 0.002, "num_families": 3, "tasks_per_family": 4,
                    "drop_fraction": 0.1, "flip_fraction": 0.2},
        "features": {"kind": "fastrp", "dim": 32, "hops": 3},
        "model": {"hidden": [8, 8]},
        "train": {"max_epochs": 100, "patience": 15},
        "affinity": {"projection_dim": 100, "subset_size": 4, "coverage": 20},
        "clustering": {"num_groups": "auto"},
        "groups": {"single_task": False, "random_seeds": 1, "spectral": False},
        "ray": {"num_workers": 2, "chunk_rows": 512, "subsets_per_batch": 4},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config
