"""The estimator interface and its estimators: each ranks a family-mate subset above a
stranger subset on a planted table, the surrogate is the landed solver unchanged, the
first-order and overlap statistics are what their docstrings say, and the config picks them
by name."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import small_sbm_config

from grouping.affinity.estimators import (
    ESTIMATORS,
    BaseModel,
    EstimatorInputs,
    make_estimator,
    task_loss_gradients,
)
from grouping.affinity.estimators.base import SEED_OFFSET
from grouping.affinity.estimators.label_overlap import training_jaccard
from grouping.affinity.rows import RowTable
from grouping.affinity.surrogate import subset_losses
from grouping.affinity.true_affinity import (
    base_losses,
    fine_tune_subset,
    train_subset_from_scratch,
)
from grouping.config import AffinityConfig, ConfigError, EstimatorName, RayConfig, parse_config
from grouping.models import ModelSpec, build_model, restore
from grouping.tasksets import TRAIN, VAL, build_taskset
from grouping.training import train_model

ROOT = Path(__file__).resolve().parents[1]
FAMILIES, PER_FAMILY, DIM = 3, 3, 24


def planted_table(seed: int = 0) -> EstimatorInputs:
    """Nine tasks in three families. Every task has the same 60 training and 40 validation
    examples; a family's tasks share their positives (a block of the examples, each task
    dropping a random fifth of it) and their positive rows' gradient features point along
    the family's own direction, so pooling family-mates fits and aligns with a task's
    validation rows, pooling strangers does not."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(DIM, FAMILIES)))[0].T * 3
    train_examples, val_examples = np.arange(60), np.arange(60, 100)
    block = np.arange(100) % FAMILIES
    parts = {key: [] for key in ("example", "task", "split", "label", "f0", "gradient")}
    offsets = np.zeros((FAMILIES * PER_FAMILY, 3), np.int64)
    count = 0
    for task in range(FAMILIES * PER_FAMILY):
        family = task // PER_FAMILY
        for split, examples in ((TRAIN, train_examples), (VAL, val_examples)):
            offsets[task, split] = count
            labels = ((block[examples] == family) & (rng.random(len(examples)) > 0.2))
            noise = rng.normal(size=(len(examples), DIM))
            parts["example"].append(examples)
            parts["task"].append(np.full(len(examples), task))
            parts["split"].append(np.full(len(examples), split, np.int8))
            parts["label"].append(labels.astype(np.float32))
            parts["f0"].append(np.full(len(examples), -1.0, np.float32))
            parts["gradient"].append((noise + labels[:, None] * directions[family])
                                     .astype(np.float32))
            count += len(examples)
        offsets[task, 2] = count
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    rows = RowTable(arrays["example"], arrays["task"], arrays["split"], arrays["label"],
                    np.ones(count, np.float32), offsets)
    return EstimatorInputs(rows, arrays["f0"], arrays["gradient"])


def _estimate(options: AffinityConfig, subsets: np.ndarray, table: EstimatorInputs) -> np.ndarray:
    estimator = make_estimator(options)
    return estimator.estimate(subsets, table, estimator.prepare(subsets, table))


def test_the_config_names_every_estimator_and_nothing_else():
    assert set(typing.get_args(EstimatorName)) == set(ESTIMATORS)
    for name, estimator in ESTIMATORS.items():
        assert estimator.name == name and estimator.cost and estimator.__doc__


@pytest.mark.parametrize("name", sorted(name for name, estimator in ESTIMATORS.items()
                                         if not estimator.needs_base_model))
def test_each_estimator_ranks_family_mates_above_strangers(name):
    table = planted_table()
    # Task 0 beside its two family-mates, and beside one task of each other family.
    subsets = np.array([[0, 1, 2], [0, 3, 6], [0, 4, 7], [0, 5, 8]])
    estimate = _estimate(AffinityConfig(estimator=name), subsets, table)
    assert estimate.shape == subsets.shape
    assert estimate[0, 0] < estimate[1:, 0].min()


def test_the_surrogate_estimator_is_the_batched_solver_unchanged():
    table = planted_table(1)
    subsets = np.array([[0, 1, 2], [0, 3, 6], [2, 4, 8], [1, 5, 7]])
    options = AffinityConfig(estimator="surrogate", l2=0.05)
    direct = subset_losses(subsets, table.rows, table.f0, table.gradients, 0.05,
                           options.newton_iterations, options.tolerance)
    assert np.array_equal(_estimate(options, subsets, table), direct)


def test_first_order_is_the_inner_product_of_mean_loss_gradients():
    table = planted_table(2)
    train, val, base = task_loss_gradients(table)
    rows = table.rows
    for task in (0, 4):
        span = slice(rows.offsets[task, TRAIN], rows.offsets[task, TRAIN + 1])
        residual = 1 / (1 + np.exp(-table.f0[span].astype(np.float64))) - rows.label[span]
        assert np.allclose(train[task], residual @ table.gradients[span] / len(residual))
        val_span = slice(rows.offsets[task, VAL], rows.offsets[task, VAL + 1])
        logit, label = table.f0[val_span].astype(np.float64), rows.label[val_span]
        assert base[task] == pytest.approx(np.mean(np.logaddexp(0, logit) - label * logit))
    subsets = np.array([[0, 1, 5], [2, 3, 4]])
    estimate = _estimate(AffinityConfig(estimator="first_order"), subsets, table)
    for s, subset in enumerate(subsets):
        for k, task in enumerate(subset):
            assert estimate[s, k] == pytest.approx(-val[task] @ train[subset].mean(0))
    unit = _estimate(AffinityConfig(estimator="first_order", first_order={"normalize": True}),
                     subsets, table)
    assert np.all(np.abs(unit) <= 1 + 1e-12)
    cosine = (val[0] @ train[1]) / np.linalg.norm(val[0]) / np.linalg.norm(train[1])
    self_cosine = (val[0] @ train[0]) / np.linalg.norm(val[0]) / np.linalg.norm(train[0])
    cosine_5 = (val[0] @ train[5]) / np.linalg.norm(val[0]) / np.linalg.norm(train[5])
    assert unit[0, 0] == pytest.approx(-(self_cosine + cosine + cosine_5) / 3)


def test_label_overlap_reads_training_positives_only():
    table = planted_table(3)
    rows = table.rows
    jaccard = training_jaccard(rows)
    positives = [set(rows.example[(rows.task == t) & (rows.split == TRAIN) & (rows.label == 1)])
                 for t in range(2)]
    assert jaccard[0, 1] == pytest.approx(len(positives[0] & positives[1])
                                          / len(positives[0] | positives[1]))
    assert np.allclose(np.diag(jaccard), 1.0) and np.allclose(jaccard, jaccard.T)
    flipped = rows.label.copy()
    flipped[rows.split == VAL] = 1 - flipped[rows.split == VAL]
    changed = EstimatorInputs(RowTable(rows.example, rows.task, rows.split, flipped, rows.weight,
                                     rows.offsets), table.f0, table.gradients)
    subsets = np.array([[0, 1, 2], [0, 3, 6]])
    options = AffinityConfig(estimator="label_overlap")
    assert np.array_equal(_estimate(options, subsets, table), _estimate(options, subsets, changed))
    assert _estimate(options, subsets, table)[0, 0] == pytest.approx(
        -(jaccard[0, 1] + jaccard[0, 2]) / 2)


@pytest.mark.parametrize("name", ["first_order", "label_overlap"])
def test_estimates_do_not_depend_on_workers_or_batches(ray_session, name):
    from workers.estimates import compute_subset_losses

    table = planted_table(4)
    rng = np.random.default_rng(0)
    subsets = np.sort(np.array([rng.choice(9, 3, replace=False) for _ in range(20)]), axis=1)
    options = AffinityConfig(estimator=name)
    one = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                RayConfig(num_workers=1, subsets_per_batch=20))
    many = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                 RayConfig(num_workers=2, subsets_per_batch=3))
    assert np.array_equal(one, many)
    assert np.array_equal(one, _estimate(options, subsets, table))


def test_estimators_free_of_batch_mates_give_every_worker_batches():
    """A capped run's 50 subsets make one batch of 64 for the surrogate, whose batched fit
    depends on its batch, and at least four batches per worker for every other estimator
    (rounded up to whole stacks for the lookahead); a large run keeps
    ``ray.subsets_per_batch``; the size never depends on the cluster."""
    from workers.estimates import BATCHES_PER_WORKER, estimate_batch_size

    config = RayConfig(num_workers=2, subsets_per_batch=64)
    for name in ("surrogate", "calibrated_surrogate"):
        assert not ESTIMATORS[name].independent_subsets
        assert estimate_batch_size(AffinityConfig(estimator=name), 50, config) == 64
    for name in sorted(set(ESTIMATORS) - {"surrogate", "calibrated_surrogate", "lookahead"}):
        options = AffinityConfig(estimator=name)
        size = estimate_batch_size(options, 50, config)
        assert size == 7 and -(-50 // size) >= BATCHES_PER_WORKER * config.num_workers
        assert estimate_batch_size(options, 1100, config) == 64
        assert estimate_batch_size(options, 3, config) == 1
        assert estimate_batch_size(options, 50, RayConfig(num_workers=1)) == 13
    # the validated lookahead's copies are trained in stacks of 16: batches fill whole
    # stacks; under a curve rule (and the default, which may resolve to one) the stack
    # follows how many of a batch's subsets train, so the batch is ray.subsets_per_batch
    lookahead = AffinityConfig(estimator="lookahead", lookahead={"stopping": "validation"})
    assert ESTIMATORS["lookahead"].batch_multiple == 16
    for stopping in (None, "curve_screened", "task_curves"):
        curved = AffinityConfig(estimator="lookahead", lookahead={"stopping": stopping})
        assert estimate_batch_size(curved, 50, config) == 64
        assert estimate_batch_size(curved, 50, RayConfig(num_workers=1)) == 64
    assert estimate_batch_size(lookahead, 50, config) == 16
    assert estimate_batch_size(lookahead, 3, config) == 16
    assert estimate_batch_size(lookahead, 1100, config) == 64
    assert estimate_batch_size(lookahead, 50, RayConfig(subsets_per_batch=8)) == 8


@pytest.fixture(scope="module")
def planted_base() -> BaseModel:
    """θ0 trained on the quickstart's planted SBM (6 families of 4 tasks)."""
    config = parse_config(small_sbm_config())
    taskset = build_taskset(config)
    spec = ModelSpec.from_config(config.model, taskset.features.shape[1], taskset.num_tasks)
    model = build_model(spec, config.seed)
    train_model(model, taskset, np.arange(taskset.num_tasks), config.train, config.seed,
                torch.device("cpu"))
    return BaseModel(taskset, spec, model.state_dict(), config.fine_tuning(), config.seed,
                     config)


def test_lookahead_ranks_family_mates_above_strangers_on_a_planted_sbm(planted_base):
    options = AffinityConfig(estimator="lookahead")
    inputs = EstimatorInputs(None, None, None, planted_base)
    for family in range(6):
        task = 4 * family
        mates = np.arange(task, task + 4)
        strangers = np.sort([task, (task + 4) % 24, (task + 8) % 24, (task + 12) % 24])
        estimate = _estimate(options, np.stack([mates, strangers]), inputs)
        assert estimate[0, 0] < estimate[1, list(strangers).index(task)]


def test_lookahead_is_a_short_fine_tuning_with_seeds_of_its_own(ray_session, planted_base):
    from workers.estimates import compute_subset_losses

    subsets = np.array([[0, 1, 5], [2, 7, 9], [3, 4, 8]])
    options = AffinityConfig(estimator="lookahead", lookahead={"epochs": 2, "seeds": 2,
                                                                "keep_best": False})
    expected = [np.mean([fine_tune_subset(restore(planted_base.spec, planted_base.state),
                                          planted_base.spec, planted_base.taskset, subset,
                                          planted_base.training, 2, planted_base.seed + offset,
                                          torch.device("cpu"))["losses"]
                         for offset in (SEED_OFFSET, SEED_OFFSET + 1)], axis=0)
                for subset in subsets]
    table = planted_table()
    losses = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                   RayConfig(num_workers=2, subsets_per_batch=2),
                                   base=planted_base)
    assert np.allclose(losses, np.stack(expected), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the base model"):
        compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                              RayConfig())


def test_lookahead_batch_size_is_the_fine_tuning_batch_size(planted_base):
    subset = np.array([0, 1, 5])
    options = AffinityConfig(estimator="lookahead", lookahead={"epochs": 1, "batch_size": 256,
                                                                "keep_best": False})
    inputs = EstimatorInputs(None, None, None, planted_base)
    training = planted_base.training.model_copy(update={"batch_size": 256})
    expected = fine_tune_subset(restore(planted_base.spec, planted_base.state),
                                planted_base.spec, planted_base.taskset, subset, training, 1,
                                planted_base.seed + SEED_OFFSET, torch.device("cpu"))["losses"]
    estimate = _estimate(options, subset[None], inputs)
    assert np.allclose(estimate[0], expected, rtol=1e-6)
    default = _estimate(AffinityConfig(estimator="lookahead",
                                      lookahead={"epochs": 1, "keep_best": False}),
                        subset[None], inputs)
    assert not np.allclose(default, estimate)


def test_lookahead_keep_best_keeps_the_epoch_a_group_model_would_stop_at(planted_base):
    """With keep_best, f̂ is the fixed schedule's figure at the epoch (0..epochs) of the best
    mean validation criterion over S's tasks (1 − mean AP: train.early_stopping val_ap), the
    checkpoint a group model's early stopping keeps; the same batch orders as the fixed
    schedule, so every candidate epoch is a fixed schedule of that length."""
    subset = np.array([0, 1, 5])
    base = dataclasses.replace(planted_base, training=planted_base.training.model_copy(
        update={"early_stopping": "val_ap"}))
    inputs = EstimatorInputs(None, None, None, base)
    candidates = [fine_tune_subset(restore(base.spec, base.state), base.spec, base.taskset,
                                   subset, base.training, epochs, base.seed + SEED_OFFSET,
                                   torch.device("cpu"), "ap")["losses"]
                  for epochs in (1, 2, 3, 4)]
    start = base_losses(restore(base.spec, base.state), base.spec, base.taskset,
                        torch.device("cpu"), "ap")[subset]
    candidates.insert(0, start)
    assert len({round(float(c.mean()), 12) for c in candidates}) > 1
    kept = _estimate(AffinityConfig(estimator="lookahead", lookahead={
        "epochs": 4, "target": "ap", "keep_best": True, "stopping": "validation"}),
        subset[None], inputs)[0]
    best = int(np.argmin([c.mean() for c in candidates]))
    assert np.allclose(kept, candidates[best])
    assert kept.mean() <= candidates[-1].mean() and kept.mean() <= start.mean()
    # With a patience, the fine-tuning stops as a group model's early stopping does: the
    # kept epoch is the best among those run before `patience` epochs in a row failed.
    means = [c.mean() for c in candidates]
    for patience in (1, 2):
        best, since = 0, 0
        for epoch in range(1, 5):
            best, since = (epoch, 0) if means[epoch] < means[best] else (best, since + 1)
            if since >= patience:
                break
        stopped = _estimate(AffinityConfig(estimator="lookahead", lookahead={
            "epochs": 4, "target": "ap", "patience": patience, "stopping": "validation"}),
            subset[None], inputs)[0]
        assert np.allclose(stopped, candidates[best])


def test_truncated_is_the_from_scratch_truth_cut_short(ray_session, planted_base):
    """f̂ is a fresh group model trained as the from-scratch truth trains it, at seeds of the
    estimator's own, stopped at truncated.epochs; at the truth's own budget it is the truth
    (at the estimator's seed); the same on one worker or several."""
    from workers.estimates import compute_subset_losses

    run = planted_base.run
    subsets = np.array([[0, 1, 5], [2, 7, 9]])
    seed = planted_base.seed + SEED_OFFSET
    cut = run.model_copy(update={"train": run.train.model_copy(update={"max_epochs": 4})})
    expected = np.stack([train_subset_from_scratch(planted_base.taskset, subset, cut, seed,
                                                   torch.device("cpu"))["losses"]
                         for subset in subsets])
    options = AffinityConfig(estimator="truncated", truncated={"epochs": 4})
    table = planted_table()
    one, many = (compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                       RayConfig(num_workers=workers, subsets_per_batch=1),
                                       base=planted_base) for workers in (1, 2))
    assert np.array_equal(one, many) and np.allclose(one, expected, rtol=1e-6)
    inputs = EstimatorInputs(None, None, None, planted_base)
    whole = _estimate(AffinityConfig(estimator="truncated", truncated={
        "epochs": run.train.max_epochs}), subsets[:1], inputs)
    truth = train_subset_from_scratch(planted_base.taskset, subsets[0], run, seed,
                                      torch.device("cpu"))["losses"]
    assert np.allclose(whole[0], truth, rtol=1e-6) and not np.allclose(whole[0], one[0])
    with pytest.raises(ValueError, match="run's config"):
        _estimate(options, subsets, EstimatorInputs(
            None, None, None, dataclasses.replace(planted_base, run=None)))


def test_truncated_patience_is_the_truths_early_stopping_with_that_patience(planted_base):
    """With truncated.patience p, f̂ is the from-scratch truth trained with train.patience p
    (at the estimator's seed): the budget follows the subset's own validation curve."""
    run = planted_base.run
    subset = np.array([0, 1, 5])
    seed = planted_base.seed + SEED_OFFSET
    inputs = EstimatorInputs(None, None, None, planted_base)
    estimates = {}
    for patience in (2, run.train.patience):
        options = AffinityConfig(estimator="truncated", truncated={
            "epochs": run.train.max_epochs, "patience": patience})
        estimates[patience] = _estimate(options, subset[None], inputs)[0]
        short = run.model_copy(update={"train": run.train.model_copy(update={
            "patience": patience})})
        truth = train_subset_from_scratch(planted_base.taskset, subset, short, seed,
                                          torch.device("cpu"))["losses"]
        assert np.allclose(estimates[patience], truth, rtol=1e-6)
    assert not np.allclose(estimates[2], estimates[run.train.patience])


def test_truncated_ranks_family_mates_above_strangers_on_a_planted_sbm(planted_base):
    """At 60 of the truth's 200 epochs (the quickstart's narrow trunk at 1e-3 learns slowly
    from scratch: at 15 epochs it ranks four of the six families right, at 5 three)."""
    options = AffinityConfig(estimator="truncated", truncated={"epochs": 60})
    inputs = EstimatorInputs(None, None, None, planted_base)
    wins = 0
    for family in range(6):
        task = 4 * family
        mates = np.arange(task, task + 4)
        strangers = np.sort([task, (task + 4) % 24, (task + 8) % 24, (task + 12) % 24])
        estimate = _estimate(options, np.stack([mates, strangers]), inputs)
        wins += estimate[0, 0] < estimate[1, list(strangers).index(task)]
    assert wins == 6


def test_lookahead_target_ap_records_one_minus_the_validation_ap(planted_base):
    from grouping.affinity.estimators.lookahead import LookaheadEstimator

    subset = np.array([0, 1, 5])
    options = AffinityConfig(estimator="lookahead", lookahead={"epochs": 1, "target": "ap",
                                                                "keep_best": False})
    inputs = EstimatorInputs(None, None, None, planted_base)
    expected = fine_tune_subset(restore(planted_base.spec, planted_base.state),
                                planted_base.spec, planted_base.taskset, subset,
                                planted_base.training, 1, planted_base.seed + SEED_OFFSET,
                                torch.device("cpu"), "ap")["losses"]
    estimate = _estimate(options, subset[None], inputs)[0]
    assert np.allclose(estimate, expected) and np.all((estimate >= 0) & (estimate <= 1))
    assert LookaheadEstimator.predicted_figure(options) == "ap"
    assert ESTIMATORS["surrogate"].predicted_figure(options) == "loss"
    assert ESTIMATORS["first_order"].predicted_figure(options) is None


def test_an_unknown_estimator_names_the_field():
    with pytest.raises(ConfigError, match="affinity.estimator"):
        parse_config(small_sbm_config(affinity={"estimator": "oracle"}))


def test_the_driver_exits_2_on_an_unknown_estimator(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(small_sbm_config(affinity={"estimator": "oracle"})))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"),
                             "--config", str(config), "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "affinity.estimator" in errors[0]
    assert not (tmp_path / "run").exists()


def test_benchmark_variants_are_parsed_and_checked():
    from workers.quality import variant_options

    config = parse_config(small_sbm_config())
    options = variant_options(config, "surrogate:l2=0.01,newton_iterations=20")
    assert (options.estimator, options.l2, options.newton_iterations) == ("surrogate", 0.01, 20)
    normalized = variant_options(config, "first_order:first_order.normalize=true")
    assert normalized.first_order.normalize is True
    for bad in ("oracle", "surrogate:l2", "surrogate:l2=-1", "surrogate:nothing=1"):
        with pytest.raises(ConfigError, match="estimator variant"):
            variant_options(config, bad)


def test_task_curves_sees_a_subset_only_through_where_it_stops(planted_base):
    """What task_curves cannot see, pinned down: on the planted SBM, whose families share
    trunk features, a family-mate subset and a stranger subset that stop at the same epoch
    give a task the same f̂ (the lookahead ranks the mates first, test above), and f̂ is the
    task's own curve at S's kept epoch."""
    from grouping.affinity.estimators.task_curves import kept_epochs, subset_criteria

    options = AffinityConfig(estimator="task_curves")
    inputs = EstimatorInputs(None, None, None, planted_base)
    estimator = make_estimator(options)
    subsets = []
    for family in range(6):
        task = 4 * family
        subsets += [np.arange(task, task + 4),
                    np.sort([task, (task + 4) % 24, (task + 8) % 24, (task + 12) % 24])]
    subsets = np.stack(subsets)
    curves = estimator.prepare(subsets, inputs)
    estimate = estimator.estimate(subsets, inputs, curves)
    members = np.searchsorted(curves.tasks, subsets)
    reads_ap = planted_base.training.early_stopping == "val_ap"
    kept = kept_epochs(subset_criteria(curves, members, reads_ap), 8)
    assert (kept[0::2] == kept[1::2]).any()
    assert np.array_equal(estimate, curves.figure[members, kept[:, None]])
    assert (curves.figure[:, 1:] != curves.figure[:, :1]).all()  # the copies did train
    for family in range(6):
        mates, strangers = 2 * family, 2 * family + 1
        task = 4 * family
        if kept[mates] == kept[strangers]:
            assert estimate[mates, 0] == estimate[strangers,
                                                  list(subsets[strangers]).index(task)]


def _frozen_trunk_heads(model, spec, heads):
    """select_heads with every parameter but the heads' and skip rows' frozen."""
    from grouping.models.sign_mlp import HEAD_PARAMETERS, select_heads

    copy = select_heads(model, spec, heads)
    for name, parameter in copy.named_parameters():
        parameter.requires_grad_(name.startswith(HEAD_PARAMETERS))
    return copy


@pytest.mark.parametrize(("early_stopping", "target", "patience"), [
    ("val_ap", "loss", None), ("val_ap", "ap", 2), ("val_loss", "loss", 1)])
def test_task_curves_with_a_frozen_trunk_is_the_lookahead_that_keeps_its_best(
        planted_base, monkeypatch, early_stopping, target, patience):
    """With the trunk frozen, a subset's copy trains each head and skip row on its own (Adam
    ignores the 1/|S| scale of a head's gradient), so reading S's stopping epoch off the
    tasks' own curves must give the lookahead's keep-best figures; different subsets must
    stop at different epochs for this to test the stopping rule."""
    import grouping.stacked_fine_tuning as stacked

    monkeypatch.setattr(stacked, "select_heads", _frozen_trunk_heads)
    base = dataclasses.replace(planted_base, training=planted_base.training.model_copy(
        update={"early_stopping": early_stopping, "lr": 0.02}))
    inputs = EstimatorInputs(None, None, None, base)
    rng = np.random.default_rng(7)
    subsets = np.sort(np.array([rng.choice(24, 4, replace=False) for _ in range(12)]), axis=1)
    settings = {"epochs": 5, "target": target, "patience": patience}
    curves_options = AffinityConfig(estimator="task_curves", task_curves=settings)
    estimate = _estimate(curves_options, subsets, inputs)
    lookahead = _estimate(AffinityConfig(estimator="lookahead", lookahead={
        **settings, "keep_best": True}), subsets, inputs)
    np.testing.assert_allclose(estimate, lookahead, rtol=2e-4, atol=1e-6)
    estimator = make_estimator(curves_options)
    curves = estimator.prepare(subsets, inputs)
    from grouping.affinity.estimators.task_curves import kept_epochs, subset_criteria

    members = np.searchsorted(curves.tasks, subsets)
    kept = kept_epochs(subset_criteria(curves, members, early_stopping == "val_ap"),
                       patience or 5)
    assert len(set(kept.tolist())) > 1


def test_task_curves_stopping_rule_and_criterion():
    """The kept epoch is the strict best before `patience` epochs in a row fail; S's AP
    criterion averages the tasks with a validation positive and falls back to the mean
    weighted loss when none has one."""
    from grouping.affinity.estimators.task_curves import kept_epochs, subset_criteria
    from grouping.stacked_fine_tuning import FineTuningCurves

    criterion = np.array([[1.0, 0.9, 0.95, 0.97, 0.8],
                          [1.0, 1.0, 1.1, 0.5, 0.4],
                          [0.5, 0.6, 0.7, 0.8, 0.9]])
    assert kept_epochs(criterion, 4).tolist() == [4, 4, 0]
    assert kept_epochs(criterion, 2).tolist() == [1, 0, 0]
    assert kept_epochs(criterion, 3).tolist() == [4, 4, 0]
    nan = float("nan")
    curves = FineTuningCurves(
        tasks=np.arange(3),
        precision=np.array([[0.2, 0.4], [0.6, 0.2], [nan, nan]]),
        weighted_loss=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]),
        figure=np.zeros((3, 2)))
    members = np.array([[0, 1], [0, 2], [2, 2]])
    np.testing.assert_allclose(subset_criteria(curves, members, True),
                               [[0.6, 0.7], [0.8, 0.6], [5.0, 7.0]])
    np.testing.assert_allclose(subset_criteria(curves, members, False),
                               [[2.0, 3.0], [3.0, 4.5], [5.0, 7.0]])


def test_task_curves_refuses_a_model_with_dropout():
    data = small_sbm_config()
    data["model"] = {**data.get("model", {}), "dropout": 0.2}
    data["affinity"] = {**data.get("affinity", {}), "estimator": "task_curves"}
    with pytest.raises(ConfigError, match="affinity.estimator"):
        parse_config(data)


def test_task_curves_through_the_estimate_stage_on_any_number_of_workers(ray_session,
                                                                          planted_base):
    from workers.estimates import compute_subset_losses

    rng = np.random.default_rng(1)
    subsets = np.sort(np.array([rng.choice(24, 4, replace=False) for _ in range(10)]), axis=1)
    options = AffinityConfig(estimator="task_curves", task_curves={"epochs": 3})
    table = planted_table()
    one = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                RayConfig(num_workers=1, subsets_per_batch=10),
                                base=planted_base)
    many = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                 RayConfig(num_workers=2, subsets_per_batch=3),
                                 base=planted_base)
    assert np.array_equal(one, many)
    assert np.array_equal(one, _estimate(options, subsets,
                                         EstimatorInputs(None, None, None, planted_base)))


def test_calibrated_surrogate_fits_at_the_l2_whose_change_matches_the_truths(monkeypatch):
    """λ sets how far the fit moves the losses; the calibration picks the λ
    whose predicted mean change is nearest the truly trained subsets' (on a log scale) and
    every subset is then the surrogate's fit at that λ, bit for bit; it still ranks a
    family-mate subset above strangers on the planted table."""
    from grouping.affinity.estimators.calibrated_surrogate import (
        CalibratedSurrogateEstimator,
        closest_l2,
    )

    table = planted_table(5)
    subsets = np.array([[0, 1, 2], [0, 3, 6], [0, 4, 7], [0, 5, 8], [1, 4, 7], [2, 5, 6]])
    l2s = [1e-3, 1e-2, 1e-1, 1.0]
    options = AffinityConfig(estimator="calibrated_surrogate",
                             calibrated_surrogate={"subsets": 3, "l2s": l2s})
    estimator = make_estimator(options)
    seen = []

    def true_change(self, chosen, inputs):
        seen.append(chosen)
        return 0.05

    monkeypatch.setattr(CalibratedSurrogateEstimator, "true_change", true_change)
    calibration = estimator.prepare(subsets, table)
    assert np.array_equal(seen[0], subsets[:3])
    assert np.ptp(calibration.predicted_changes) > 0.05  # λ sets how far the fit moves
    assert calibration.l2 == closest_l2(l2s, calibration.predicted_changes, 0.05)
    estimate = estimator.estimate(subsets, table, calibration)
    plain = AffinityConfig(estimator="surrogate", l2=calibration.l2)
    assert np.array_equal(estimate, _estimate(plain, subsets, table))
    assert estimate[0, 0] < estimate[1:4, 0].min()
    with pytest.raises(ValueError, match="not prepared"):
        from grouping.affinity.estimators.task_curves import curve_stops
        from grouping.stacked_fine_tuning import FineTuningCurves

        curves = FineTuningCurves(np.array([0, 2]), np.zeros((2, 3)), np.zeros((2, 3)),
                                  np.zeros((2, 3)))
        curve_stops(curves, np.array([[0, 1]]), "val_loss", 2)
    assert closest_l2([1e-2, 1e-1, 1.0], np.array([0.4, 0.1, 0.01]), 0.03) == 1.0
    assert closest_l2([1e-2, 1e-1, 1.0], np.array([0.4, 0.1, 0.01]), 0.2) == 1e-1
    assert closest_l2([1e-2, 1e-1], np.array([np.nan, 0.1]), 0.02) == 1e-1
    assert closest_l2([1e-2, 1e-1], np.array([0.3, 0.1]), float("nan")) is None


def test_calibrated_surrogate_measures_the_truths_change_at_seeds_of_its_own(planted_base):
    """The true change is the from-scratch training of the chosen subsets at the run's seed
    + SEED_OFFSET, each task's validation loss against θ0's."""
    from grouping.affinity.error_report import mean_relative_change

    subsets = np.array([[0, 1, 5], [2, 7, 9]])
    run = planted_base.run.model_copy(update={"true_affinity": planted_base.run.true_affinity
                                              .model_copy(update={"protocol": "from_scratch"})})
    base = dataclasses.replace(planted_base, run=run)
    estimator = make_estimator(AffinityConfig(estimator="calibrated_surrogate"))
    change = estimator.true_change(subsets, EstimatorInputs(None, None, None, base))
    trained = np.stack([train_subset_from_scratch(base.taskset, subset, run,
                                                  base.seed + SEED_OFFSET,
                                                  torch.device("cpu"))["losses"]
                        for subset in subsets])
    start = base_losses(restore(base.spec, base.state), base.spec, base.taskset,
                        torch.device("cpu"))[subsets]
    assert change == pytest.approx(mean_relative_change(trained, start))
    assert change > 0
    with pytest.raises(ValueError, match="needs the base model"):
        estimator.true_change(subsets, EstimatorInputs(None, None, None,
                                                       dataclasses.replace(base, run=None)))


def test_calibrated_surrogate_refuses_a_non_positive_l2():
    data = small_sbm_config()
    data["affinity"] = {**data.get("affinity", {}),
                        "calibrated_surrogate": {"l2s": [0.1, 0.0]}}
    with pytest.raises(ConfigError, match="affinity.calibrated_surrogate.l2s"):
        parse_config(data)


@pytest.mark.parametrize("early_stopping", ["val_ap", "val_loss"])
def test_lookahead_stopping_read_off_task_curves(planted_base, monkeypatch, early_stopping):
    """With the trunk frozen the tasks' curves find S's own stopping epoch, so the lookahead
    that fine-tunes S for exactly that many epochs is the lookahead that evaluates S after
    every epoch and keeps its best; with the trunk trained the two differ."""
    import grouping.stacked_fine_tuning as stacked

    base = dataclasses.replace(planted_base, training=planted_base.training.model_copy(
        update={"early_stopping": early_stopping, "lr": 0.02}))
    inputs = EstimatorInputs(None, None, None, base)
    rng = np.random.default_rng(3)
    subsets = np.sort(np.array([rng.choice(24, 4, replace=False) for _ in range(12)]), axis=1)
    settings = {"epochs": 5, "target": "ap", "patience": 2}
    validated = AffinityConfig(estimator="lookahead",
                               lookahead={**settings, "stopping": "validation"})
    from_curves = AffinityConfig(estimator="lookahead",
                                 lookahead={**settings, "stopping": "task_curves"})
    trained = _estimate(from_curves, subsets, inputs)
    assert not np.allclose(trained, _estimate(validated, subsets, inputs))
    monkeypatch.setattr(stacked, "select_heads", _frozen_trunk_heads)
    np.testing.assert_allclose(_estimate(from_curves, subsets, inputs),
                               _estimate(validated, subsets, inputs), rtol=2e-4, atol=1e-6)


def test_curve_screened_lookahead_trains_only_subsets_whose_curves_move(planted_base):
    """Subsets whose tasks' curves keep epoch 0 keep θ0's figures untrained; every other
    subset gets the default lookahead's figures (validated every epoch)."""
    from grouping.affinity.estimators.task_curves import curve_stops

    base = dataclasses.replace(planted_base, training=planted_base.training.model_copy(
        update={"early_stopping": "val_loss", "lr": 0.05}))  # some curves peak at epoch 0
    inputs = EstimatorInputs(None, None, None, base)
    rng = np.random.default_rng(5)
    subsets = np.sort(np.array([rng.choice(24, 4, replace=False) for _ in range(16)]), axis=1)
    settings = {"epochs": 4, "target": "ap", "patience": 1}
    screened_options = AffinityConfig(estimator="lookahead",
                                      lookahead={**settings, "stopping": "curve_screened"})
    estimator = make_estimator(screened_options)
    curves = estimator.prepare(subsets, inputs)
    stops = curve_stops(curves, subsets, "val_loss", 1)[1]
    assert 0 < (stops == 0).sum() < len(subsets)
    screened = estimator.estimate(subsets, inputs, curves)
    validated = _estimate(AffinityConfig(estimator="lookahead", lookahead={
        **settings, "stopping": "validation"}), subsets, inputs)
    untrained = base_losses(restore(base.spec, base.state), base.spec, base.taskset,
                            torch.device("cpu"), "ap")[subsets]
    moved = stops > 0
    np.testing.assert_allclose(screened[moved], validated[moved], rtol=1e-6)
    np.testing.assert_allclose(screened[~moved], untrained[~moved], rtol=1e-6)


def test_lookahead_stopping_from_task_curves_needs_keep_best():
    data = small_sbm_config()
    data["affinity"] = {**data.get("affinity", {}),
                        "lookahead": {"stopping": "task_curves", "keep_best": False}}
    with pytest.raises(ConfigError, match="affinity.lookahead.stopping"):
        parse_config(data)


def test_the_default_stopping_rule_screens_by_curves_where_copies_train_side_by_side(
        planted_base):
    """Unset, ``lookahead.stopping`` is ``curve_screened`` for a binary-label task set whose
    model has no dropout and keeps its best checkpoint, ``validation`` otherwise; a set
    value is kept as it is."""
    from grouping.affinity.estimators.lookahead import LookaheadEstimator

    def rule(base=planted_base, **lookahead) -> str:
        return LookaheadEstimator(AffinityConfig(lookahead=lookahead)).stopping(base)

    assert rule() == "curve_screened"
    assert rule(keep_best=False) == "validation"
    assert rule(stopping="validation") == "validation"
    assert rule(stopping="task_curves") == "task_curves"
    with_dropout = dataclasses.replace(
        planted_base, spec=dataclasses.replace(planted_base.spec, dropout=0.1))
    assert rule(with_dropout) == "validation"


def test_the_default_lookahead_is_the_same_on_any_number_of_workers(ray_session,
                                                                    planted_base):
    """The curve-screened default: its curves are prepared once, its batches are fixed by
    the config, so one worker and two give the same f̂ bit for bit."""
    from grouping.affinity.estimators.task_curves import curve_stops
    from workers.estimates import compute_subset_losses, estimate_batch_size

    base = dataclasses.replace(planted_base, training=planted_base.training.model_copy(
        update={"lr": 0.05}))  # some subsets' curves keep epoch 0, some move
    rng = np.random.default_rng(2)
    subsets = np.sort(np.array([rng.choice(24, 4, replace=False) for _ in range(100)]), axis=1)
    options = AffinityConfig(estimator="lookahead", lookahead={"epochs": 3})
    estimator = make_estimator(options)
    curves = estimator.prepare(subsets, EstimatorInputs(None, None, None, base))
    stops = curve_stops(curves, subsets, base.training.early_stopping, 3)[1]
    assert 0 < (stops == 0).sum() < len(subsets)
    # the validated lookahead would cut 100 subsets into 32s on one worker, 16s on two
    validated = AffinityConfig(estimator="lookahead", lookahead={"stopping": "validation"})
    assert (estimate_batch_size(validated, 100, RayConfig(num_workers=1, subsets_per_batch=48))
            != estimate_batch_size(validated, 100, RayConfig(num_workers=2,
                                                             subsets_per_batch=48)))
    table = planted_table()
    one = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                RayConfig(num_workers=1, subsets_per_batch=48), base=base)
    two = compute_subset_losses(subsets, table.rows, table.f0, table.gradients, options,
                                RayConfig(num_workers=2, subsets_per_batch=48), base=base)
    assert np.array_equal(one, two)
