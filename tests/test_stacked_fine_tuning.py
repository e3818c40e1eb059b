"""Fine-tuning θ0 on many subsets side by side gives each subset the figures of its own
fine-tuning (one copy at a time), whatever the batch it shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grouping.config import TrainConfig
from grouping.families.base import TaskFamily
from grouping.families.binary import BinaryLabelFamily
from grouping.models import ModelSpec, build_model
from grouping.stacked_fine_tuning import STACK_SIZE, fine_tuned_figures
from grouping.tasksets.base import TaskSet, random_split

CPU = torch.device("cpu")


def _taskset() -> TaskSet:
    """400 rows of 12 Gaussian features and 8 tasks of 3-40% positives."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((400, 12)).astype(np.float32)
    thresholds = np.linspace(0.3, 1.9, 8)
    labels = (features[:, :8] + 0.7 * rng.standard_normal((400, 8)) > thresholds)
    return TaskSet(features, labels.astype(np.uint8), random_split(400, 0.5, 0.3, rng),
                   [f"task{index}" for index in range(8)])


def _base(dropout: float = 0.0) -> tuple[torch.nn.Module, ModelSpec]:
    spec = ModelSpec(12, (8, 6), 8, dropout=dropout, skip=True)
    return build_model(spec, seed=5), spec


SUBSETS = np.array([[0, 1, 2], [3, 5, 7], [1, 4, 6], [2, 3, 7], [0, 5, 6]])


@pytest.mark.parametrize(("early_stopping", "keep_best", "patience", "target", "lr"), [
    ("val_ap", True, 1, "loss", 0.03),     # copies stop at different epochs
    ("val_loss", True, 1, "loss", 0.03),
    ("val_loss", True, 8, "ap", 0.01),
    ("val_ap", False, 8, "loss", 0.01),    # a fixed schedule keeps the last state
])
def test_side_by_side_figures_are_each_subsets_own_fine_tuning(early_stopping, keep_best,
                                                               patience, target, lr):
    taskset = _taskset()
    base, spec = _base()
    config = TrainConfig(lr=lr, batch_size=32, patience=patience, pos_weight="sqrt",
                         early_stopping=early_stopping)
    family = BinaryLabelFamily()
    one_at_a_time = TaskFamily.fine_tuned_figures(family, base, spec, taskset, SUBSETS,
                                                  config, 8, 11, CPU, keep_best, target)
    side_by_side = family.fine_tuned_figures(base, spec, taskset, SUBSETS, config, 8, 11, CPU,
                                             keep_best, target)
    assert side_by_side.shape == (len(SUBSETS), 3)
    np.testing.assert_allclose(side_by_side, one_at_a_time, rtol=1e-5, atol=1e-7)
    untuned = family.validation_losses(base, spec, taskset, np.arange(8), CPU, target=target)
    assert not np.allclose(side_by_side, untuned[SUBSETS])  # the copies did train


def test_a_subsets_figures_do_not_depend_on_its_batch_mates():
    taskset = _taskset()
    base, spec = _base()
    config = TrainConfig(lr=0.01, batch_size=32, patience=2, pos_weight="sqrt",
                         early_stopping="val_ap")
    many = np.concatenate([SUBSETS] * 4)  # more than one stack
    assert len(many) > STACK_SIZE
    together = fine_tuned_figures(base, spec, taskset, many, config, 4, 2, CPU, True)
    for index in (0, 3, len(many) - 1):
        alone = fine_tuned_figures(base, spec, taskset, many[index:index + 1], config, 4, 2,
                                   CPU, True)
        assert np.array_equal(alone[0], together[index])


def test_a_model_with_dropout_is_fine_tuned_one_copy_at_a_time():
    taskset = _taskset()
    base, spec = _base(dropout=0.2)
    config = TrainConfig(lr=0.01, batch_size=32, patience=3)
    with pytest.raises(ValueError, match="dropout"):
        fine_tuned_figures(base, spec, taskset, SUBSETS, config, 2, 0, CPU, True)
    family = BinaryLabelFamily()
    np.testing.assert_array_equal(
        family.fine_tuned_figures(base, spec, taskset, SUBSETS, config, 2, 0, CPU, True),
        TaskFamily.fine_tuned_figures(family, base, spec, taskset, SUBSETS, config, 2, 0, CPU,
                                      True))


@pytest.mark.parametrize("target", ["loss", "ap"])
def test_per_subset_budgets_are_each_subsets_own_fixed_schedule(target):
    """With budgets, a subset's figures are θ0 fine-tuned on it for exactly its budget (as
    one subset at a time), θ0's own figures for a budget of 0, and the same up to float
    rounding whatever budgets its batch-mates have."""
    taskset = _taskset()
    base, spec = _base()
    config = TrainConfig(lr=0.02, batch_size=32, patience=8, pos_weight="sqrt")
    family = BinaryLabelFamily()
    budgets = np.array([3, 0, 1, 5, 3])
    one_at_a_time = TaskFamily.fine_tuned_figures(family, base, spec, taskset, SUBSETS,
                                                  config, 5, 11, CPU, False, target, budgets)
    side_by_side = family.fine_tuned_figures(base, spec, taskset, SUBSETS, config, 5, 11, CPU,
                                             False, target, budgets)
    np.testing.assert_allclose(side_by_side, one_at_a_time, rtol=1e-5, atol=1e-7)
    untuned = family.validation_losses(base, spec, taskset, np.arange(8), CPU, target=target)
    np.testing.assert_allclose(side_by_side[1], untuned[SUBSETS[1]], rtol=1e-6)
    fixed = family.fine_tuned_figures(base, spec, taskset, SUBSETS[:1], config, 3, 11, CPU,
                                      False, target)
    np.testing.assert_allclose(side_by_side[0], fixed[0], rtol=1e-6)
    many = np.concatenate([SUBSETS] * 4)
    many_budgets = np.arange(len(many)) % 6
    together = fine_tuned_figures(base, spec, taskset, many, config, 5, 11, CPU, False,
                                  target, budgets=many_budgets)
    # the same number of training subsets (more than a stack), other mates and order
    shuffled = np.random.default_rng(1).permutation(len(many))
    again = fine_tuned_figures(base, spec, taskset, many[shuffled], config, 5, 11, CPU, False,
                               target, budgets=many_budgets[shuffled])
    np.testing.assert_allclose(again, together[shuffled], rtol=1e-6, atol=1e-8)
    for index in (0, 3, 8, len(many) - 1):
        alone = fine_tuned_figures(base, spec, taskset, many[index:index + 1], config, 5, 11,
                                   CPU, False, target, budgets=many_budgets[index:index + 1])
        np.testing.assert_allclose(alone[0], together[index], rtol=1e-5, atol=1e-7)
    # fewer training subsets than a stack: one stack of the next power of two
    few = np.array([0, 0, 2, 3, 0])
    other = np.array([4, 0, 0, 3, 0])
    first = fine_tuned_figures(base, spec, taskset, SUBSETS, config, 5, 11, CPU, False,
                               target, budgets=few)
    second = fine_tuned_figures(base, spec, taskset, SUBSETS[[1, 0, 2, 3, 4]], config, 5, 11,
                                CPU, False, target, budgets=other)
    np.testing.assert_allclose(first[3], second[3], rtol=1e-6, atol=1e-8)


def test_per_subset_budgets_with_keep_best_keep_the_best_of_their_own_epochs():
    """With keep_best, a budget bounds the epochs a copy may keep (0..budget), as that copy
    fine-tuned alone for its budget with keep_best; 0 is θ0's figures."""
    taskset = _taskset()
    base, spec = _base()
    config = TrainConfig(lr=0.03, batch_size=32, patience=3, pos_weight="sqrt",
                         early_stopping="val_ap")
    family = BinaryLabelFamily()
    budgets = np.array([2, 0, 6, 1, 6])
    one_at_a_time = TaskFamily.fine_tuned_figures(family, base, spec, taskset, SUBSETS,
                                                  config, 6, 4, CPU, True, "loss", budgets)
    side_by_side = family.fine_tuned_figures(base, spec, taskset, SUBSETS, config, 6, 4, CPU,
                                             True, "loss", budgets)
    np.testing.assert_allclose(side_by_side, one_at_a_time, rtol=1e-5, atol=1e-7)
    full = family.fine_tuned_figures(base, spec, taskset, SUBSETS, config, 6, 4, CPU, True)
    np.testing.assert_allclose(side_by_side[[2, 4]], full[[2, 4]], rtol=1e-6)
    assert not np.allclose(side_by_side[[0, 3]], full[[0, 3]])
