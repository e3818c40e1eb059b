"""Model and training options for rare labels: positive weighting, early stopping on mean
validation AP, the per-task linear skip and its start at the per-task logistic regression;
and the per-task logistic-regression baseline's use of the splits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import small_sbm_config
from sklearn.metrics import average_precision_score

import grouping.models.per_task_linear as per_task_linear_module
from grouping.config import parse_config
from grouping.evaluation.linear_baseline import per_task_linear
from grouping.families import BinaryLabelFamily
from grouping.models import ModelSpec, build_model, restore
from grouping.models.per_task_linear import PerTaskLinear, fit_per_task_linear
from grouping.tasksets import TEST, VAL, build_taskset
from grouping.training import (
    _loss,
    mean_average_precision,
    positive_weights,
    predict,
    train_model,
)

CPU = torch.device("cpu")


def _planted(**train):
    config = parse_config({**small_sbm_config(), "train": {"max_epochs": 30, "patience": 5,
                                                           **train}})
    return config, build_taskset(config)


def _train_group(config, model_config, taskset, tasks, linear=None) -> dict:
    """A group model of ``tasks`` under ``config`` with ``model_config`` as its model."""
    return BinaryLabelFamily().train_group(taskset, tasks, config.model_copy(
        update={"model": model_config}), config.train, CPU, seed=0, linear=linear)


def test_positive_weights_follow_the_negative_to_positive_ratio():
    labels = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]])
    labels[:, 2] = 1
    assert positive_weights(labels, "none").tolist() == [1.0, 1.0, 1.0]
    assert positive_weights(labels, "balanced").tolist() == pytest.approx([1.5, 1.0, 1.0])
    assert positive_weights(labels, "sqrt").tolist() == pytest.approx([1.5 ** 0.5, 1.0, 1.0])


def test_a_positive_weight_scales_the_positive_term_of_the_loss_only():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=generator)
    targets = (torch.rand(50, 3, generator=generator) < 0.2).float()
    weight = torch.tensor([1.0, 4.0, 9.0])
    expected = -(weight * targets * torch.nn.functional.logsigmoid(logits)
                 + (1 - targets) * torch.nn.functional.logsigmoid(-logits)).mean()
    assert float(_loss(logits, targets, weight)) == pytest.approx(float(expected), rel=1e-6)
    negatives_only = torch.zeros_like(targets)
    assert float(_loss(logits, negatives_only, weight)) == pytest.approx(
        float(_loss(logits, negatives_only)), rel=1e-6)


def test_mean_average_precision_matches_scikit_learn():
    generator = np.random.default_rng(0)
    scores = generator.normal(size=(200, 4))
    targets = (generator.random((200, 4)) < 0.1).astype(np.float32)
    targets[:, 3] = 0
    scores[::3, 1] = 0.5  # ties form one threshold
    expected = np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in range(3)])
    assert mean_average_precision(torch.tensor(scores), torch.tensor(targets)) == \
        pytest.approx(expected, rel=1e-9)
    assert np.isnan(mean_average_precision(torch.tensor(scores), torch.zeros(200, 4)))


def test_early_stopping_on_validation_ap_keeps_the_epoch_where_it_peaks():
    config, taskset = _planted(early_stopping="val_ap")
    spec = ModelSpec(taskset.features.shape[1], tuple(config.model.hidden), taskset.num_tasks)
    model = build_model(spec, seed=0)
    result = train_model(model, taskset, np.arange(taskset.num_tasks), config.train, 0, CPU)
    curve = result.criterion_curve
    assert result.best_criterion == min(curve) and curve.index(min(curve)) == result.best_epoch
    assert len(curve) - 1 in (result.best_epoch + config.train.patience, config.train.max_epochs)
    val = taskset.indices(VAL)
    logits = predict(model, torch.from_numpy(taskset.features[val])).numpy()
    labels = taskset.labels[val]
    aps = [average_precision_score(labels[:, k], logits[:, k])
           for k in range(taskset.num_tasks) if labels[:, k].any()]
    assert 1 - np.mean(aps) == pytest.approx(result.best_criterion, abs=1e-9)


def test_positive_weighting_changes_training_and_val_loss_criterion_uses_it():
    config, taskset = _planted(pos_weight="none", early_stopping="val_loss")
    spec = ModelSpec(taskset.features.shape[1], tuple(config.model.hidden), taskset.num_tasks)
    plain = train_model(build_model(spec, 0), taskset, np.arange(taskset.num_tasks),
                        config.train, 0, CPU, max_epochs=3, keep_best=False)
    weighted_config = config.train.model_copy(update={"pos_weight": "balanced"})
    weighted = train_model(build_model(spec, 0), taskset, np.arange(taskset.num_tasks),
                           weighted_config, 0, CPU, max_epochs=3, keep_best=False)
    # Same initial model, a weighted criterion: positives are rare, so it is larger.
    assert weighted.criterion_curve[0] > plain.criterion_curve[0]
    assert weighted.criterion_curve[1:] != plain.criterion_curve[1:]


def test_the_skip_path_with_a_zeroed_trunk_is_one_linear_model_per_task():
    spec = ModelSpec(6, (5, 4), 3, skip=True)
    model = build_model(spec, seed=1)
    with torch.no_grad():
        for param in model.trunk.parameters():
            param.zero_()
    inputs = torch.randn(10, 6)
    expected = inputs @ model.skip.weight.T + model.heads.bias
    assert torch.allclose(model(inputs), expected, atol=1e-6)
    assert not any(name.startswith("trunk.") for name, _ in model.skip.named_parameters())
    no_skip = build_model(ModelSpec(6, (5, 4), 3), seed=1)
    assert model.skip is not None and no_skip.skip is None


def test_a_linear_start_makes_the_untrained_model_the_per_task_logistic_regression():
    _, taskset = _planted()
    tasks = np.array([3, 0, 5])
    linear = fit_per_task_linear(taskset, tasks)
    spec = ModelSpec(taskset.features.shape[1], (5, 4), len(tasks), skip=True)
    model = build_model(spec, seed=2, linear=linear)
    expected = linear.logits(taskset.features)
    assert np.allclose(predict(model, torch.from_numpy(taskset.features)).numpy(), expected,
                       atol=1e-4)
    # The trunk keeps its seeded random initialisation: only the heads and the skip moved.
    random = build_model(spec, seed=2)
    for name, value in random.trunk.state_dict().items():
        assert torch.equal(model.trunk.state_dict()[name], value), name
    assert not model.heads.weight.detach().any()
    with pytest.raises(ValueError, match="skip"):
        build_model(ModelSpec(spec.in_dim, (5, 4), len(tasks)), seed=2, linear=linear)
    with pytest.raises(ValueError, match="one regression per head"):
        build_model(ModelSpec(spec.in_dim, (5, 4), 2, skip=True), seed=2, linear=linear)


def test_a_fixed_linear_start_trains_everything_but_the_skip():
    config, taskset = _planted(early_stopping="val_ap", max_epochs=3)
    model_config = config.model.model_copy(update={"skip": True, "skip_init": "linear_fixed"})
    assert model_config.linear_start
    tasks = [1, 4]
    linear = fit_per_task_linear(taskset)
    spec = ModelSpec.from_config(model_config, taskset.features.shape[1], len(tasks))
    assert not spec.skip_trainable
    with pytest.raises(ValueError, match="fixed skip"):
        build_model(spec, seed=0)
    model = build_model(spec, 0, linear.select(tasks))
    started = copy.deepcopy(model.state_dict())
    train_model(model, taskset, np.asarray(tasks), config.train, 0, CPU, keep_best=False)
    assert torch.equal(model.skip.weight, started["skip.weight"])
    for name in ("trunk.0.weight", "heads.weight", "heads.bias"):
        assert not torch.equal(model.state_dict()[name], started[name]), name
    result = _train_group(config, model_config, taskset, tasks, linear=linear)
    assert not restore(result["spec"], result["state"]).skip.weight.requires_grad
    assert np.allclose(result["state"]["skip.weight"].numpy(), linear.select(tasks).weights,
                       atol=1e-6)


def test_per_task_regressions_do_not_depend_on_how_tasks_are_chunked():
    _, taskset = _planted()
    whole = fit_per_task_linear(taskset, np.arange(6))
    chunked = PerTaskLinear.concatenate([fit_per_task_linear(taskset, np.arange(0, 4)),
                                         fit_per_task_linear(taskset, np.arange(4, 6))])
    for name, value in whole.as_arrays().items():
        assert np.array_equal(value, getattr(chunked, name)), name
    picked = whole.select([4, 1])
    assert np.array_equal(picked.weights, whole.weights[[4, 1]])
    assert np.array_equal(picked.intercepts, whole.intercepts[[4, 1]])


def test_a_task_with_one_training_class_gets_a_constant_logit():
    _, taskset = _planted()
    empty = copy.deepcopy(taskset)
    empty.labels[:, 0] = 0
    linear = fit_per_task_linear(empty, np.array([0, 1]))
    assert not linear.weights[0].any() and linear.intercepts[0] < -5
    assert np.isnan(linear.inverse_l2[0]) and not np.isnan(linear.inverse_l2[1])
    assert per_task_linear(empty, np.array([0, 1]), fit=linear)["inverse_l2"][0] is None


def test_a_group_model_with_a_linear_start_is_no_worse_on_validation_than_the_regressions():
    config, taskset = _planted(early_stopping="val_ap", pos_weight="sqrt")
    tasks = [2, 7, 11]
    linear = fit_per_task_linear(taskset)
    model_config = config.model.model_copy(update={"skip": True})
    started = _train_group(config, model_config, taskset, tasks, linear=linear)
    val = taskset.indices(VAL)
    regression_logits = linear.select(tasks).logits(taskset.features[val])
    regression_criterion = 1 - mean_average_precision(
        torch.from_numpy(regression_logits), torch.from_numpy(
            taskset.labels[val][:, tasks].astype(np.float64)))
    # Epoch 0 is the regressions (up to float32), and the best epoch is kept.
    assert started["best_criterion"] <= regression_criterion + 1e-6
    with pytest.raises(ValueError, match="linear start needs the per-task regressions"):
        _train_group(config, model_config, taskset, tasks)
    # Random start and a config without the skip ignore the regressions.
    random_config = model_config.model_copy(update={"skip_init": "random"})
    assert not random_config.linear_start and not config.model.linear_start
    ignored = _train_group(config, random_config, taskset, tasks, linear=linear)
    plain = _train_group(config, random_config, taskset, tasks)
    assert ignored["best_criterion"] == plain["best_criterion"]
    assert started["best_criterion"] != plain["best_criterion"]


def test_the_linear_baseline_fits_on_training_rows_and_thresholds_on_validation_rows(
        monkeypatch):
    _, taskset = _planted()
    tasks = np.arange(4)
    reference = per_task_linear(taskset, tasks)
    # Test labels are used for nothing but the test metrics: flipping them leaves the chosen C
    # of every task unchanged.
    test_flipped = copy.deepcopy(taskset)
    test_flipped.labels[taskset.indices(TEST)] = 1 - test_flipped.labels[taskset.indices(TEST)]
    assert per_task_linear(test_flipped, tasks)["inverse_l2"] == reference["inverse_l2"]
    # Validation labels choose C and the threshold only: with one C, flipping them leaves the
    # fitted scores (so the test AP) unchanged and moves the F1 threshold.
    monkeypatch.setattr(per_task_linear_module, "INVERSE_L2_GRID", (1.0,))
    val_flipped = copy.deepcopy(taskset)
    val_flipped.labels[taskset.indices(VAL)] = 1 - val_flipped.labels[taskset.indices(VAL)]
    fixed, flipped = per_task_linear(taskset, tasks), per_task_linear(val_flipped, tasks)
    assert [row["test_ap"] for row in fixed["tasks"]] == \
        pytest.approx([row["test_ap"] for row in flipped["tasks"]])
    assert [row["test_f1"] for row in fixed["tasks"]] != \
        [row["test_f1"] for row in flipped["tasks"]]


def test_the_model_options_benchmark_compares_variants_with_the_linear_baseline(tmp_path):
    import argparse
    import importlib.util
    from pathlib import Path

    import yaml

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("bench_models", script)
    bench_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_models)
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config(train={"max_epochs": 15, "patience": 5})))
    variants = [bench_models.parse_variant("plain="),
                bench_models.parse_variant("options=model.skip=true;model.skip_init=random;"
                                           "train.pos_weight=sqrt;train.early_stopping=val_ap")]
    arguments = argparse.Namespace(set=[], seed=0, seeds=2, device="cpu")
    figures = bench_models.bench_config(path, variants, arguments)
    linear, plain, default = figures["rows"]
    assert (linear["variant"], plain["variant"], default["variant"]) == \
        ("per_task_linear", "plain", "options")
    assert linear["runs"] == 1 and linear["mean_test_ap_se"] == 0.0
    assert plain["runs"] == 2 and plain["mean_test_ap_se"] is not None
    assert plain["mean_test_ap"] != default["mean_test_ap"]
    assert "standard errors" in default["vs_first"] and "vs_first" not in plain
    assert all("vs_linear" in row for row in (plain, default))
    table = "\n".join(bench_models.markdown("planted", figures))
    assert table.count("\n| ") == 4
