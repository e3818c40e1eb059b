"""The grouping-quality benchmark: the verdict logic, seeds and their spread, the
from-scratch truth, the per-task linear baseline, and the benchmark end to end on a tiny
planted task set."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import small_sbm_config

from grouping.affinity.true_affinity import train_subset_from_scratch
from grouping.artifacts import RunDirectory
from grouping.config import ConfigError, parse_config
from grouping.evaluation import linear_baseline
from grouping.evaluation.comparison import gap, summarize_rows
from grouping.families import BinaryLabelFamily
from grouping.models import per_task_linear, restore
from grouping.tasksets import TEST, TRAIN, VAL, build_taskset

CPU = torch.device("cpu")
BINARY = BinaryLabelFamily()


def _row(grouping: str, value: float, init_seed: int | None, seed: int | None = None) -> dict:
    return {"grouping": grouping, "optimizer": "adam", "num_groups": 2, "seed": seed,
            "init_seed": init_seed, "metric": "test_f1", "secondary_metric": "test_ap",
            "mean_test_f1": value, "worst_test_f1": value / 2, "mean_test_ap": value,
            "seconds": 1.0}


def _lines(rows: list[dict]) -> dict[str, dict]:
    return {line["grouping"]: line for line in summarize_rows(rows)}


def test_summary_gives_the_standard_error_over_seeds():
    lines = _lines([_row("a", value, seed) for seed, value in enumerate([0.5, 0.6, 0.7])]
                   + [_row("linear", 0.4, None), _row("once", 0.3, 0)])
    assert lines["a"]["runs"] == 3
    assert lines["a"]["mean_test_f1"] == pytest.approx(0.6)
    assert lines["a"]["mean_test_f1_std"] == pytest.approx(0.1)
    assert lines["a"]["mean_test_f1_se"] == pytest.approx(0.1 / np.sqrt(3))
    assert lines["linear"]["mean_test_f1_se"] == 0.0  # deterministic: no spread to have
    assert lines["once"]["mean_test_f1_se"] is None  # one seeded run: spread unknown


def test_the_share_of_models_that_kept_their_start_is_counted_per_row():
    """A model whose early stopping kept epoch 0 never left its start: the row records the
    share of such models, averaged over seeds; a baseline without epochs records none."""
    from grouping.evaluation.comparison import Plan, comparison_row

    def trained(best_epochs: list[int], seed: int) -> dict:
        results = [{"tasks": [{"test_f1": 0.5, "test_ap": 0.5}], "seconds": 1.0,
                    "best_epoch": epoch} for epoch in best_epochs]
        return comparison_row(Plan("groups", [[0]] * len(best_epochs)), results, "adam", seed,
                              ("test_f1", "test_ap"))

    rows = [trained([0, 0, 3, 0], 0), trained([0, 5, 3, 2], 1)]
    assert [row["kept_start_fraction"] for row in rows] == [0.75, 0.25]
    linear = comparison_row(Plan("per_task_linear", [[0]]), [
        {"tasks": [{"test_f1": 0.4, "test_ap": 0.4}], "seconds": 1.0}], "lbfgs", None,
        ("test_f1", "test_ap"))
    assert linear["kept_start_fraction"] is None
    lines = _lines([*rows, linear])
    assert lines["groups"]["kept_start_fraction"] == pytest.approx(0.5)
    assert lines["per_task_linear"]["kept_start_fraction"] is None


def test_verdict_refuses_beats_within_two_standard_errors():
    rows = [_row("a", value, seed) for seed, value in enumerate([0.50, 0.60, 0.70])]
    rows += [_row("b", value, seed) for seed, value in enumerate([0.45, 0.55, 0.65])]
    rows += [_row("c", value, seed) for seed, value in enumerate([0.20, 0.21, 0.22])]
    lines = _lines(rows)
    close = gap(lines["a"], lines["b"], "mean_test_f1")
    assert close.gain == pytest.approx(0.05)
    assert close.se == pytest.approx(np.hypot(0.1 / np.sqrt(3), 0.1 / np.sqrt(3)))
    assert not close.beats and not close.loses and abs(close.z) < 2
    far = gap(lines["a"], lines["c"], "mean_test_f1")
    assert far.beats and far.z > 2 and "standard errors" in far.describe()
    assert gap(lines["c"], lines["a"], "mean_test_f1").loses
    assert (far.verb(), far.verb(singular=True)) == ("beat", "beats")
    assert close.verb(singular=True) == "is indistinguishable from"


def test_the_quality_verdicts_agree_with_a_singular_subject():
    from workers.quality import ROW_NAMES, verdicts

    rows = [_row(name, value + 0.01 * seed, seed) for name, value in
            (("all", 0.5), ("per_task_linear", 0.8)) for seed in range(3)]
    sentences = verdicts(_lines(rows), "mean_test_f1", ROW_NAMES)
    assert sentences["all_vs_per_task_linear"].startswith(
        "the all-in-one model loses to per-task logistic: ")


def test_verdict_refuses_beats_without_a_spread():
    lines = _lines([_row("a", 0.9, 0), _row("b", 0.1, 0)])
    difference = gap(lines["a"], lines["b"], "mean_test_f1")
    assert difference.se is None and not difference.beats and not difference.loses
    assert "single run" in difference.describe()


@pytest.fixture(scope="module")
def tiny():
    data = small_sbm_config(taskset={"num_blocks": 6, "num_families": 3, "tasks_per_family": 2},
                            affinity={"subset_size": 3},
                            train={"max_epochs": 30, "patience": 5})
    config = parse_config(data)
    return config, build_taskset(config)


def test_subset_caps_apply_to_every_config_or_to_the_one_named():
    from workers.quality import subset_caps

    names = ["yeast", "snap_dblp_sub"]
    assert subset_caps([], names, "--max-subsets") == {"yeast": 100, "snap_dblp_sub": 100}
    assert subset_caps(["60", "snap_dblp_sub=40"], names, "--max-subsets") == {
        "yeast": 60, "snap_dblp_sub": 40}
    assert subset_caps(["snap_dblp_sub=40", "60"], names, "--max-subsets") == {
        "yeast": 60, "snap_dblp_sub": 60}
    with pytest.raises(ConfigError, match="--repeat-subsets: no config named 'cal500'"):
        subset_caps(["cal500=10"], names, "--repeat-subsets")
    for item in ("yeast=0", "-3", "many", "yeast="):
        with pytest.raises(ConfigError, match=r"--max-subsets: .* N >= 1"):
            subset_caps([item], names, "--max-subsets")


def test_from_scratch_truth_is_the_group_models_validation_loss(tiny):
    config, taskset = tiny
    subset = np.array([1, 4, 5])
    truth = train_subset_from_scratch(taskset, subset, config, 7, CPU)["losses"]
    train = config.train.model_copy(update={"lr": config.group_training.first_lr})
    group = BINARY.train_group(taskset, subset.tolist(), config, train, CPU,
                            config.group_training.optimizers[0], seed=7)
    model = restore(group["spec"], group["state"])
    expected = BINARY.validation_losses(model, group["spec"], taskset, subset, CPU, np.arange(3))
    assert np.array_equal(truth, expected)
    other_seed = train_subset_from_scratch(taskset, subset, config, 8, CPU)["losses"]
    assert not np.array_equal(truth, other_seed)


def test_the_average_precision_truth_is_one_minus_each_tasks_validation_ap(tiny):
    from sklearn.metrics import average_precision_score

    config, taskset = tiny
    subset = np.array([1, 4, 5])
    ap_config = config.model_copy(update={"true_affinity": config.true_affinity.model_copy(
        update={"target": "ap"})})
    truth = train_subset_from_scratch(taskset, subset, ap_config, 7, CPU)["losses"]
    train = config.train.model_copy(update={"lr": config.group_training.first_lr})
    group = BINARY.train_group(taskset, subset.tolist(), config, train, CPU,
                            config.group_training.optimizers[0], seed=7)
    model = restore(group["spec"], group["state"])
    val = taskset.indices(VAL)
    logits = model(torch.from_numpy(taskset.features[val])).detach().numpy()
    expected = [1 - average_precision_score(taskset.labels[val, task], logits[:, head])
                for head, task in enumerate(subset)]
    assert np.allclose(truth, expected, atol=1e-9)
    # A task without a validation positive records 1: a constant that ranks no subset.
    emptied = taskset.labels.copy()
    emptied[val, 4] = 0
    blank = dataclasses.replace(taskset, labels=emptied)
    assert BINARY.validation_losses(model, group["spec"], blank, subset, CPU, np.arange(3),
                                    "ap")[1] == 1.0


def test_group_seeds_change_the_model(tiny):
    config, taskset = tiny
    train = config.train
    first, second = (BINARY.train_group(taskset, [0, 1], config, train, CPU, "adam", seed=seed)
                     for seed in (0, 1))
    assert not torch.equal(first["state"]["trunk.0.weight"], second["state"]["trunk.0.weight"])


def test_per_task_linear_fits_training_rows_and_never_reads_test_labels(tiny):
    _, taskset = tiny
    features = taskset.features.astype(np.float64)
    labels = taskset.labels[:, 0].copy()
    train, val, test = (taskset.indices(split) for split in (TRAIN, VAL, TEST))

    def scores_of(task_labels: np.ndarray) -> np.ndarray:
        weight, intercept, _ = per_task_linear.fit_task(features, task_labels, train, val)
        return features @ weight + intercept

    scores = scores_of(labels)
    shuffled = labels.copy()
    shuffled[test] = 1 - shuffled[test]
    assert np.array_equal(scores_of(shuffled), scores)
    flipped = labels.copy()
    flipped[train] = 1 - flipped[train]
    assert not np.allclose(scores_of(flipped), scores)
    result = linear_baseline.per_task_linear(taskset)
    assert [task["task"] for task in result["tasks"]] == list(range(taskset.num_tasks))
    assert all(c in per_task_linear.INVERSE_L2_GRID for c in result["inverse_l2"])


def test_benchmark_on_a_planted_task_set_recovers_the_families(ray_session, tmp_path):
    from workers.quality import (
        PROTOCOLS,
        VARIANT_GRADIENTS,
        BenchmarkSettings,
        benchmark_config,
        markdown,
    )

    data = small_sbm_config(taskset={"num_blocks": 8, "num_families": 3, "tasks_per_family": 3,
                                     "flip_fraction": 0.1},
                            affinity={"subset_size": 3, "coverage": 4},
                            clustering={"num_groups": 3})
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(data))
    settings = BenchmarkSettings(max_subsets=60, repeat_subsets=20, seeds=2, random_seeds=2,
                                 single_task_max_tasks=0,
                                 variants=("lookahead", "surrogate", "first_order",
                                           "first_order:projection_dim=40",
                                           "label_overlap"))
    figures = benchmark_config(path, tmp_path / "bench", settings)
    assert max(figures["ari_planted_oracle"].values()) >= 0.9
    # the default lookahead reads no gradients; the gradient variants' table is computed once,
    # in the first protocol's run, and linked into the other's
    runs = [RunDirectory(tmp_path / "bench" / protocol, True) for protocol in PROTOCOLS]
    assert runs[0].load_array("gradients/features.npy").shape[1] == 0
    assert os.path.samefile(runs[0].file(VARIANT_GRADIENTS), runs[1].file(VARIANT_GRADIENTS))
    num_rows = len(runs[0].load_arrays("gradients/rows.npz")["example"])
    assert runs[0].load_array(VARIANT_GRADIENTS).shape == (num_rows, 400)
    # a variant of another projection dimension reads a table of its own width
    assert runs[0].load_array("benchmark/gradient_features_dense_40_2048.npy").shape == (
        num_rows, 40)
    rows = {row["grouping"]: row for row in figures["rows"]}
    assert {"all-in-one", "estimated groups", "random groups", "per-task logistic",
            "oracle groups (from-scratch truth)", "oracle groups (fine-tune truth)"} <= set(rows)
    assert rows["estimated groups"]["n_seeds"] == 2
    assert rows["estimated groups"]["se_test_f1"] is not None
    assert rows["per-task logistic"]["se_test_f1"] == 0.0
    assert figures["default_estimator"] == "lookahead"
    assert set(figures["estimators"]) == {"lookahead", "surrogate", "first_order",
                                          "first_order:projection_dim=40", "label_overlap"}
    for estimators in figures["estimators_by_truth"].values():
        floors = {estimator["noise_floor"] for estimator in estimators.values()}
        assert len(floors) == 1 and floors.pop() <= 1
        for estimator in estimators.values():
            assert np.isfinite(estimator["within_task_spearman"])
            assert estimator["cost_ratio"] > 0
    assert np.isnan(figures["estimators"]["first_order"]["mean_change"])
    # the default among the variants is timed on started workers, not read from its stage
    # (whose seconds include the workers' start, which the truth's trials do not), and it
    # estimates what the run's own stage estimated, figure for figure
    for protocol, run in zip(PROTOCOLS, runs):
        figure = figures["estimators_by_truth"][protocol]["lookahead"]
        assert figure["estimate_seconds"] != run.stage_seconds()["estimates"]
        assert figure["within_task_spearman"] == pytest.approx(
            run.read_json("error_report.json")["within_task_spearman"])
    assert figures["truth"]["protocol"] in ("from_scratch", "fine_tune")
    assert "standard errors" in figures["verdict"] or "single run" in figures["verdict"]
    for protocol, room in figures["truth_effects"].items():
        assert room["noise_floor"] == figures["estimators_by_truth"][protocol]["lookahead"][
            "noise_floor"]
        assert room["composition_effect"] >= 0 and room["seed_effect"] > 0
        assert np.isfinite(room["selection_gain"])
    at_start = rows["estimated groups"]["kept_start_fraction"]
    assert 0 <= at_start <= 1 and rows["per-task logistic"]["kept_start_fraction"] is None
    assert figures["verdicts"]["estimated_models_at_start"].startswith(f"{100 * at_start:.0f}%")
    lines = markdown("planted", figures)
    assert lines[0] == "### planted"
    assert any(line.endswith("| models at their start |") for line in lines)
    assert any(line.startswith("| truth protocol | noise floor | composition effect")
               for line in lines)
