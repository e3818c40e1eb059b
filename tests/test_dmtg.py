"""DMTG one-shot grouping: recovery of planted families, determinism, the memory guard and
the read-off of groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_sbm_config
from sklearn.metrics import adjusted_rand_score

from grouping import dmtg
from grouping.config import DMTGConfig, parse_config
from grouping.models import ModelSpec
from grouping.tasksets import build_taskset

CPU = torch.device("cpu")
SEARCH = DMTGConfig(warmup_epochs=10, temperature=4.0, final_temperature=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: a second intra-op thread only adds synchronisation, which
    costs seconds per search on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted():
    """4 families × 3 tasks with little label noise and half the nodes for training; low-
    dimensional FastRP features and single-unit trunks, so that one branch can serve one
    family but not two."""
    config = parse_config(small_sbm_config(
        seed=2,
        taskset={"num_families": 4, "tasks_per_family": 3, "flip_fraction": 0.05,
                 "splits": {"train": 0.5, "val": 0.25}},
        features={"dim": 16, "hops": 2, "sign_hops": 1},
        model={"hidden": [1]},
        train={"lr": 0.01},
    ))
    taskset = build_taskset(config)
    spec = ModelSpec(taskset.features.shape[1], tuple(config.model.hidden), taskset.num_tasks)
    return taskset, spec, config.train


def test_recovers_planted_families(planted):
    taskset, spec, train = planted
    result = dmtg.search_groups(taskset, spec, 5, train, SEARCH, seed=0, device=CPU)
    labels = np.empty(taskset.num_tasks, int)
    for group, tasks in enumerate(result.groups):
        labels[tasks] = group
    assert adjusted_rand_score(taskset.families, labels) >= 0.7
    assert result.logits.shape == (taskset.num_examples, taskset.num_tasks)
    base_rate = taskset.labels.mean()
    assert np.mean([row["test_ap"] for row in result.tasks]) > 3 * base_rate


def test_same_seed_same_search(planted):
    taskset, spec, train = planted
    short = SEARCH.model_copy(update={"warmup_epochs": 2, "max_epochs": 5})
    first, second, other = (dmtg.search_groups(taskset, spec, 3, train, short, seed, CPU)
                            for seed in (7, 7, 8))
    assert first.groups == second.groups
    np.testing.assert_array_equal(first.branch_logits, second.branch_logits)
    np.testing.assert_array_equal(first.logits, second.logits)
    assert not np.array_equal(first.branch_logits, other.branch_logits)


def test_empty_branches_are_dropped(planted):
    taskset, spec, train = planted
    result = dmtg.search_groups(taskset, spec, 8, train, SEARCH, seed=0, device=CPU)
    assert all(result.groups)
    assert sorted(task for group in result.groups for task in group) == list(
        range(taskset.num_tasks))
    assert len(result.groups) < 8
    assert result.model.branches.num_branches == len(result.groups)
    np.testing.assert_array_equal(result.logits,
                                  dmtg.selected_logits(result.model, taskset, CPU))


def test_read_groups_and_selected_heads():
    logits = np.array([[0.0, 0.0, 2.0], [0.1, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, -1.0, 0.5]])
    assert dmtg.read_groups(logits) == [[0, 1, 3], [2]]
    spec = ModelSpec(in_dim=5, hidden=(3,), num_heads=4)
    branches = dmtg.BranchedMLP.build(spec, 3, seed=0)
    assignment = torch.tensor([2, 0, 1, 2])
    inputs = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    every_head = branches(inputs)
    assert every_head.shape == (3, 6, 4)
    selected = dmtg.SelectedHeads(branches, assignment)(inputs)
    for task, branch in enumerate(assignment.tolist()):
        torch.testing.assert_close(selected[:, task], every_head[branch, :, task])


def test_a_skip_spec_gives_every_branch_the_tasks_own_linear_skip():
    spec = ModelSpec(in_dim=5, hidden=(3,), num_heads=4, skip=True)
    branches = dmtg.BranchedMLP.build(spec, 3, seed=0)
    inputs = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    without = dmtg.BranchedMLP(branches.trunks, branches.weight.detach(),
                               branches.bias.detach())
    torch.testing.assert_close(branches(inputs) - without(inputs),
                               (inputs @ branches.skip.detach()).expand(3, 6, 4))
    kept = branches.select([2, 0])
    torch.testing.assert_close(kept(inputs), branches(inputs)[[2, 0]])
    parameters = sum(p.numel() for p in branches.parameters())
    plain = sum(p.numel() for p in dmtg.BranchedMLP.build(ModelSpec(5, (3,), 4), 3, 0)
                .parameters())
    assert parameters - plain == 5 * 4
    assert dmtg.dmtg_memory_bytes(spec, 4, 3, 64, 100, 5) - dmtg.dmtg_memory_bytes(
        ModelSpec(5, (3,), 4), 4, 3, 64, 100, 5) == 4 * 5 * 5 * 4


def test_temperature_anneals_exponentially():
    config = DMTGConfig(temperature=4.0, final_temperature=0.25)
    assert dmtg.temperature_at(1, 9, config) == pytest.approx(4.0)
    assert dmtg.temperature_at(5, 9, config) == pytest.approx(1.0)
    assert dmtg.temperature_at(9, 9, config) == pytest.approx(0.25)
    constant = DMTGConfig(temperature=2.0, final_temperature=None)
    assert dmtg.temperature_at(5, 9, constant) == 2.0


def test_memory_estimate_grows_linearly_in_branches():
    sizes = [dmtg.dmtg_memory_bytes((16, 8), 30, k, 64, 10_000, 128) for k in (1, 2, 3)]
    assert sizes[2] - sizes[1] == sizes[1] - sizes[0] > 0
    spec = ModelSpec(in_dim=128, hidden=(16, 8), num_heads=30)
    parameters = sum(p.numel() for p in dmtg.BranchedMLP.build(spec, 3, seed=0).parameters())
    assert sizes[2] > 5 * 4 * parameters


def test_refuses_before_training_when_over_the_memory_limit(planted, monkeypatch):
    taskset, spec, train = planted

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built despite the memory limit")

    monkeypatch.setattr(dmtg.BranchedMLP, "build", no_build)
    tiny = DMTGConfig(max_memory_gib=1e-4)
    with pytest.raises(ValueError, match="max_memory_gib"):
        dmtg.search_groups(taskset, spec, 4, train, tiny, seed=0, device=CPU)
