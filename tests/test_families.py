"""The task-family interface: each kind of task set finds its family by name, each family
answers the whole interface, and no module outside the families branches on the kind."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_binary_taskset, small_sbm_config
from torch.nn.functional import binary_cross_entropy_with_logits

from grouping.config import InstructionsTaskSetConfig, parse_config
from grouping.evaluation.comparison import Plan, comparison_row
from grouping.families import (
    FAMILIES,
    BinaryLabelFamily,
    InstructionFamily,
    TaskFamily,
    family_of,
)
from grouping.models import restore
from grouping.models.sign_mlp import select_heads
from grouping.tasksets import VAL, InstructionTaskSet, TaskSet
from grouping.tasksets.instruction_suite import generate_suite
from grouping.training import predict, train_model

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
# Where a type test on the kind of task set or model is the module's own business: the task
# sets and model specs themselves, the config schemas, and the families.
KIND_NAMES = {"TaskSet", "InstructionTaskSet", "LMSpec"}
MAY_BRANCH = ("grouping/families/", "grouping/tasksets/", "grouping/models/",
              "grouping/config.py")


def _instruction_taskset() -> InstructionTaskSet:
    return generate_suite(InstructionsTaskSetConfig(
        kind="instructions", num_families=2, tasks_per_family=2, num_tasks=4,
        examples_per_task=12), 0)


def test_each_kind_of_task_set_names_its_family():
    assert isinstance(family_of(small_binary_taskset()), BinaryLabelFamily)
    assert isinstance(family_of(_instruction_taskset()), InstructionFamily)
    assert {TaskSet.family, InstructionTaskSet.family} == set(FAMILIES)
    for name, family in FAMILIES.items():
        assert isinstance(family, TaskFamily) and family.name == name


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_every_family_declares_its_flags_and_metrics(family):
    for flag in ("binary_labels", "supports_dmtg", "tracks_dominance",
                 "checks_linearization"):
        assert isinstance(getattr(family, flag), bool), flag
    primary, secondary = family.metric_names
    assert primary.startswith("test_") and secondary.startswith("test_")


def test_binary_rows_cap_negatives_and_scorable_tasks_need_a_validation_positive():
    taskset = small_binary_taskset()
    family = BinaryLabelFamily()
    rows = family.rows(taskset, max_negatives=5, seed=0)
    for task in range(taskset.num_tasks):
        for split in (0, 1):
            index = rows.rows_of(np.array([task]), split)
            negatives = rows.label[index] == 0
            assert negatives.sum() <= 5
            # Kept negatives stand for all of the split's negatives.
            labels = taskset.labels[taskset.indices(split), task]
            assert np.isclose(rows.weight[index][negatives].sum(), (labels == 0).sum())
    blank = TaskSet(taskset.features, taskset.labels.copy(), taskset.split,
                    taskset.task_names)
    blank.labels[taskset.indices(VAL), 2] = 0
    assert family.scorable_tasks(blank).tolist() == [True, True, False, True]


def test_the_binary_family_trains_a_group_and_measures_it_on_its_own_heads():
    config = parse_config(small_sbm_config(model={"hidden": [4], "skip": False},
                                           train={"max_epochs": 3}))
    taskset = small_binary_taskset()
    family = family_of(taskset)
    result = family.train_group(taskset, [1, 3], config, config.train, CPU, seed=0)
    assert [task["task"] for task in result["tasks"]] == [1, 3]
    model = restore(result["spec"], result["state"])
    losses = family.validation_losses(model, result["spec"], taskset, np.array([1, 3]), CPU,
                                      heads=np.arange(2))
    assert losses.shape == (2,) and np.all(losses > 0)
    # Fine-tuning θ0 on a subset moves only what the subset's heads see in the loss.
    base = restore(result["spec"], result["state"])
    tuned = family.fine_tune(base, result["spec"], taskset, np.array([0]),
                             config.train, 2, 0, CPU)
    assert not torch.equal(tuned.heads.weight[0], base.heads.weight[0])
    assert torch.equal(tuned.heads.weight[1], base.heads.weight[1])


def test_fine_tuning_a_subsets_own_heads_equals_training_with_only_them_in_the_loss():
    """The binary family fine-tunes a copy holding only the subset's heads (select_heads):
    its logits are the full model's columns, and training it moves the subset's heads and
    the trunk as training the whole model with only those heads in the loss does."""
    config = parse_config(small_sbm_config(model={"hidden": [4], "dropout": 0.2, "skip": True,
                                                  "skip_init": "random"},
                                           train={"max_epochs": 3, "weight_decay": 1e-3}))
    taskset = small_binary_taskset()
    family = family_of(taskset)
    result = family.train_group(taskset, list(range(taskset.num_tasks)), config,
                                config.train, CPU, seed=0)
    spec, base = result["spec"], restore(result["spec"], result["state"])
    subset = np.array([3, 0])
    features = torch.tensor(taskset.features)
    picked = select_heads(base, spec, subset)
    assert picked.heads.weight.shape[0] == 2 and picked.skip.weight.shape[0] == 2
    torch.testing.assert_close(predict(picked, features), predict(base, features)[:, subset])
    tuned = family.fine_tune(base, spec, taskset, subset, config.train, 3, 5, CPU)
    reference = copy.deepcopy(base)
    train_model(reference, taskset, np.arange(taskset.num_tasks), config.train.model_copy(
        update={"max_epochs": 3}), 5, CPU, active_heads=subset, keep_best=False)
    torch.testing.assert_close(predict(tuned, features)[:, subset],
                               predict(reference, features)[:, subset], rtol=1e-5, atol=1e-5)
    others = np.setdiff1d(np.arange(taskset.num_tasks), subset)
    assert torch.equal(tuned.skip.weight[others], base.skip.weight[others])
    assert not torch.equal(tuned.skip.weight[subset], base.skip.weight[subset])
    val = taskset.indices(VAL)
    logits = predict(tuned, features[val])[:, subset].double()
    labels = torch.tensor(taskset.labels[np.ix_(val, subset)], dtype=torch.float64)
    expected = binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)
    np.testing.assert_allclose(family.validation_losses(tuned, spec, taskset, subset, CPU),
                               expected.numpy(), rtol=1e-6)


def test_a_comparison_row_reports_the_metrics_its_family_names():
    tasks = [{"task": 0, "test_exact_match": 0.5, "test_token_accuracy": 0.75},
             {"task": 1, "test_exact_match": 1.0, "test_token_accuracy": 1.0}]
    row = comparison_row(Plan("all", [[0, 1]]), [{"tasks": tasks, "seconds": 1.0}], "adam",
                         0, InstructionFamily.metric_names)
    assert row["metric"] == "test_exact_match" and row["mean_test_exact_match"] == 0.75
    assert row["worst_test_exact_match"] == 0.5 and row["mean_test_token_accuracy"] == 0.875


def _kind_tests(path: Path, root: Path = ROOT) -> list[str]:
    """``isinstance(x, K)`` calls in ``path`` whose K names a kind of task set or model."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            names = {child.id for child in ast.walk(node.args[1])
                     if isinstance(child, ast.Name)}
            if names & KIND_NAMES:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_stage_branches_on_the_kind_of_task_set():
    sites = [site for folder in ("grouping", "workers")
             for path in sorted((ROOT / folder).rglob("*.py"))
             if not str(path.relative_to(ROOT)).startswith(MAY_BRANCH)
             for site in _kind_tests(path)]
    assert sites == []


def test_the_branch_check_sees_a_type_test(tmp_path):
    module = tmp_path / "stage.py"
    module.write_text("def f(t):\n    return isinstance(t, InstructionTaskSet | int)\n")
    assert _kind_tests(module, tmp_path) == ["stage.py:2"]
