"""A Ray worker process killed mid-stage (the OOM killer, a segfault in a native library) is
survived: the gradient stage's restartable actors, the surrogate stage's retried tasks and the
comparison's Tune trials are rerun, and the results are bit-identical to an undisturbed run.

The victim is found by its process title, which Ray sets to ``ray::<task or method>`` while it
runs (no dashboard needed), and killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import numpy as np
import psutil
import pytest
import torch
from conftest import small_sbm_config

from grouping.affinity.aggregate import affinity_from_losses
from grouping.affinity.rows import label_rows
from grouping.affinity.subsets import sample_subsets
from grouping.config import parse_config
from grouping.models import ModelSpec, build_model
from grouping.tasksets import build_taskset
from workers.estimates import compute_subset_losses
from workers.gradients import compute_gradient_features
from workers.tuning import GroupJob, train_group_trials

CONFIG = parse_config(small_sbm_config(
    affinity={"estimator": "surrogate"},
    ray={"num_workers": 2, "chunk_rows": 128, "subsets_per_batch": 1, "max_retries": 3},
    group_training={"optimizers": ["adam"], "lrs": [1e-3]}))


class Killer(threading.Thread):
    """Kills the first process whose title starts with ``title`` (SIGKILL), once."""

    def __init__(self, title: str) -> None:
        super().__init__(daemon=True)
        self.title, self.killed, self.stop = title, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for process in psutil.process_iter(["pid", "cmdline"]):
                command = process.info["cmdline"] or [""]
                if command[0].startswith(self.title):
                    os.kill(process.info["pid"], signal.SIGKILL)
                    self.killed = process.info["pid"]
                    return
            time.sleep(0.01)


def _disturbed(title: str, work: Callable[[], object]) -> tuple[object, int]:
    """``work()`` while a killer waits for a process titled ``title``; its result and the pid
    killed (asserted killed while ``work`` was still running)."""
    killer = Killer(title)
    killer.start()
    try:
        result = work()
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None, f"no process titled {title!r} ran"
    assert not psutil.pid_exists(killer.killed) or psutil.Process(
        killer.killed).status() == psutil.STATUS_ZOMBIE
    return result, killer.killed


@pytest.fixture(scope="module")
def inputs(ray_session):
    taskset = build_taskset(CONFIG)
    spec = ModelSpec.from_config(CONFIG.model, taskset.features.shape[1], taskset.num_tasks)
    state = build_model(spec, CONFIG.seed).state_dict()
    rows = label_rows(taskset, CONFIG.affinity.max_negatives, CONFIG.seed)
    return taskset, spec, state, rows


def _gradients(inputs) -> tuple[np.ndarray, np.ndarray]:
    taskset, spec, state, rows = inputs
    projected = np.empty((len(rows), CONFIG.affinity.projection_dim), np.float32)
    f0 = compute_gradient_features(spec, state, taskset, rows.example, rows.task,
                                   CONFIG.affinity, CONFIG.seed, CONFIG.ray, projected)
    return f0, projected


@pytest.fixture(scope="module")
def calm_gradients(inputs):
    return _gradients(inputs)


def test_a_killed_gradient_worker_is_restarted_with_identical_features(inputs, calm_gradients):
    (f0, projected), _ = _disturbed("ray::GradientWorker.compute", lambda: _gradients(inputs))
    assert np.array_equal(f0, calm_gradients[0]) and np.array_equal(projected,
                                                                    calm_gradients[1])


def test_a_killed_surrogate_worker_is_retried_with_an_identical_affinity(inputs,
                                                                         calm_gradients):
    taskset, _, _, rows = inputs
    f0, projected = calm_gradients
    subsets = sample_subsets(taskset.num_tasks, CONFIG.affinity.subset_size, 24, CONFIG.seed)

    def losses() -> np.ndarray:
        return compute_subset_losses(subsets, rows, f0, projected, CONFIG.affinity, CONFIG.ray)

    calm = losses()
    disturbed, _ = _disturbed("ray::_estimate_batch", losses)
    assert np.array_equal(disturbed, calm)
    assert np.array_equal(affinity_from_losses(subsets, disturbed, taskset.num_tasks),
                          affinity_from_losses(subsets, calm, taskset.num_tasks))


def test_a_killed_tune_trial_is_rerun_with_the_same_rows(inputs, tmp_path):
    taskset = inputs[0]
    jobs = [GroupJob(list(range(start, start + 4)), "adam", seed=CONFIG.seed)
            for start in (0, 4, 8)]

    def trained(name: str) -> list[dict]:
        return train_group_trials(taskset, jobs, CONFIG, str(tmp_path / "tune"), name, name)

    calm = trained("calm")
    disturbed, _ = _disturbed("ray::ImplicitFunc.train", lambda: trained("disturbed"))
    for before, after in zip(calm, disturbed):
        assert after["tasks"] == before["tasks"]
        assert after["best_epoch"] == before["best_epoch"]
        assert all(torch.equal(after["state"][key], before["state"][key])
                   for key in before["state"])
