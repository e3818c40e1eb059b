"""The pipeline end to end on Ray: planted groups recovered, results independent of the
number of workers, resume and the run directory's safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_sbm_config

from grouping.affinity.estimators import ESTIMATORS
from grouping.artifacts import RunDirectory
from grouping.config import ConfigError, parse_config
from grouping.models import restore, spec_from_dict
from grouping.models.per_task_linear import PerTaskLinear, fit_per_task_linear
from grouping.tasksets import VAL, build_taskset
from grouping.training import mean_average_precision, predict
from workers.pipeline import Pipeline

TRUE_AFFINITY = {"enabled": True, "num_subsets": 12, "all_subsets": True}
DMTG = {"enabled": True}
NUM_SUBSETS = 184  # coverage 30 × 24·23 task pairs / (10·9) pairs per subset


def _run(tmp_path, name: str, resume: bool = False, **sections) -> RunDirectory:
    config = parse_config(small_sbm_config(**sections))
    run = RunDirectory(tmp_path / name, resume)
    Pipeline(config, run, resume).execute()
    return run


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("runs"), "main", true_affinity=TRUE_AFFINITY,
                dmtg=DMTG)


def test_pipeline_recovers_the_planted_families(finished):
    groups = json.loads(finished.file("groups.json").read_text())
    assert groups["ari_planted"] >= 0.8
    assert sorted(t for group in groups["groups"] for t in group) == list(range(24))


def test_run_directory_holds_every_artifact(finished):
    for name in ("config.yaml", "manifest.json", "affinity.npy", "subset_losses.npz",
                 "subset_losses.csv", "groups.json", "summary.json", "report.md",
                 "comparison.json", "affinity_heatmap.png", "comparison.png",
                 "base_model.pt", "group_models/group0.pt"):
        assert finished.file(name).is_file(), name
    rows = json.loads(finished.file("comparison.json").read_text())
    assert {(row["grouping"], row["optimizer"]) for row in rows} == {
        ("all", "adam"), ("gradtag", "adam"), ("random", "adam"), ("true", "adam"),
        ("all", "adatask_adam_mean"), ("gradtag", "adatask_adam_mean"), ("dmtg", "adam"),
        ("dmtg_groups", "adam"), ("per_task_linear", "lbfgs")}
    for row in rows:
        assert set(row) >= {"grouping", "optimizer", "num_groups", "mean_test_f1",
                            "worst_test_f1", "mean_test_ap", "seconds"}
        assert 0 <= row["worst_test_f1"] <= row["mean_test_f1"] <= 1
        # DMTG's models start from its search, not from a fresh start: not counted
        fresh = row["grouping"] not in ("per_task_linear", "dmtg")
        assert (row["kept_start_fraction"] is not None) == fresh
    manifest = json.loads(finished.file("manifest.json").read_text())
    assert set(manifest["stages"]) == {"linear", "base", "gradients", "estimates", "affinity",
                                       "true_affinity", "error_report", "groups", "dmtg",
                                       "comparison"}
    summary = finished.read_json("summary.json")
    assert set(summary["dominance"]) == {"adatask_adam_mean", "adam"}
    assert set(summary["dominance"]["adam"]) == {"trunk.0.weight", "trunk.0.bias",
                                                 "trunk.2.weight", "trunk.2.bias"}
    dmtg = finished.read_json("dmtg.json")
    (dmtg_run,) = dmtg["runs"]
    assert sorted(t for group in dmtg_run["groups"] for t in group) == list(range(24))
    # DMTG's groups are also trained as every grouping is, with DMTG's own seed
    (trained,) = [row for row in rows if row["grouping"] == "dmtg_groups"]
    assert trained["init_seed"] == dmtg_run["seed"]
    assert trained["num_groups"] == sum(1 for group in dmtg_run["groups"] if group)
    keyed = finished.read_json("task_metrics.json")[f"dmtg_groups-seed0-init{dmtg_run['seed']}"]
    assert sorted(task["task"] for task in keyed) == list(range(24))
    assert finished.file("dominance.png").is_file()
    report = finished.file("report.md").read_text()
    assert "| estimated groups | Adam |" in report
    assert "| models at their start | seconds (search + training) |" in report
    assert report.index("## Verdict") < report.index("## Groups") < report.index("## Evidence")


def test_one_and_three_workers_give_identical_affinity(finished, tmp_path):
    three = _run(tmp_path, "three", ray={"num_workers": 3, "num_cpus_per_worker": 0.5})
    one = _run(tmp_path, "one", ray={"num_workers": 1})
    for run in (one, three):
        assert np.array_equal(run.load_array("gradients/f0.npy"),
                              finished.load_array("gradients/f0.npy"))
        assert np.array_equal(run.load_array("affinity.npy"), finished.load_array("affinity.npy"))
        assert run.read_json("groups.json")["groups"] == finished.read_json("groups.json")["groups"]


def test_an_estimator_without_gradient_features_gets_the_base_outputs_only(finished):
    """The default lookahead reads no gradient features: the gradients stage writes the rows,
    their base logits f0 (a forward pass of θ0) and a feature table of width 0."""
    config = parse_config(small_sbm_config())
    assert not ESTIMATORS[config.affinity.estimator].uses_gradient_features
    rows = finished.load_arrays("gradients/rows.npz")
    assert finished.load_array("gradients/features.npy").shape == (len(rows["example"]), 0)
    saved = finished.load_torch("base_model.pt")
    model = restore(spec_from_dict(saved["spec"]), saved["state"])
    logits = predict(model, torch.tensor(build_taskset(config).features)).numpy()
    assert np.allclose(finished.load_array("gradients/f0.npy"),
                       logits[rows["example"], rows["task"]], atol=1e-6)
    assert len(set(rows["task"].tolist())) == 24


SURROGATE = {"estimator": "surrogate"}


@pytest.fixture(scope="module")
def surrogate_run(ray_session, tmp_path_factory):
    """The planted run with the surrogate estimator, up to its error report."""
    config = parse_config(small_sbm_config(affinity=SURROGATE,
                                           true_affinity={"enabled": True, "num_subsets": 6}))
    run = RunDirectory(tmp_path_factory.mktemp("runs") / "surrogate", False)
    Pipeline(config, run, False).execute(until="error_report")
    return run


def test_the_surrogate_reads_gradient_features_identical_for_one_and_three_workers(
        surrogate_run, finished, tmp_path):
    features = surrogate_run.load_array("gradients/features.npy")
    assert features.shape == (len(surrogate_run.load_arrays("gradients/rows.npz")["example"]),
                               400)
    assert np.array_equal(surrogate_run.load_array("gradients/f0.npy"),
                          finished.load_array("gradients/f0.npy"))
    errors = surrogate_run.read_json("error_report.json")["linearization_error"]
    assert len(errors) == 3 and all(np.isfinite(errors))
    config = parse_config(small_sbm_config(
        affinity=SURROGATE, ray={"num_workers": 3, "num_cpus_per_worker": 0.5}))
    three = RunDirectory(tmp_path / "three", False)
    Pipeline(config, three, False).execute(until="affinity")
    for name in ("gradients/features.npy", "affinity.npy"):
        assert np.array_equal(three.load_array(name), surrogate_run.load_array(name)), name


def test_resume_reuses_current_stages_and_redoes_changed_ones(finished, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished.path, copy)
    before = json.loads((copy / "manifest.json").read_text())["stages"]
    config = parse_config(small_sbm_config(clustering={"num_groups": 2}))
    Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute()
    after = json.loads((copy / "manifest.json").read_text())["stages"]
    for stage in ("base", "gradients", "estimates", "affinity"):
        assert after[stage] == before[stage], stage
    assert after["groups"]["finished_at"] >= before["groups"]["finished_at"]
    assert after["groups"]["digest"] != before["groups"]["digest"]
    assert json.loads((copy / "groups.json").read_text())["num_groups"] == 2


def test_estimate_is_closer_to_true_fine_tuning_than_the_base_losses(finished):
    report = finished.read_json("error_report.json")
    assert report["num_pairs"] == NUM_SUBSETS * 10
    assert report["relative_distance"] < report["base_relative_distance"]
    assert np.isfinite(report["true_noise_floor"])
    assert report["flops"]["estimate"] > 0 and report["flops"]["true_extrapolated"] > 0
    assert report["groups_ari"] == finished.read_json("groups.json")["ari_estimated_vs_true"]
    assert report["within_task_spearman"] > 0
    assert set(report) >= {"relative_distance", "mean_relative_error", "median_relative_error",
                           "spearman", "within_task_spearman", "true_noise_floor",
                           "base_relative_distance", "mean_true_change", "num_pairs",
                           "estimate_seconds", "true_seconds_extrapolated", "cost_ratio"}
    assert report["linearization_error"] == []  # the lookahead computes no gradients
    assert "## Estimated vs true affinity" in finished.file("report.md").read_text()
    assert finished.file("estimate_scatter.png").is_file()


def test_report_script_rerenders_from_saved_files(finished, tmp_path):
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "copy"
    shutil.copytree(finished.path, copy)
    (copy / "report.md").unlink()
    (copy / "gradients" / "features.npy").unlink()
    script = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
    result = subprocess.run([sys.executable, str(script), str(copy)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy / "report.md").read_text() == finished.file("report.md").read_text()


def test_interrupted_true_fine_tuning_resumes_without_redoing_finished_trials(finished,
                                                                               tmp_path):
    import shutil

    copy = tmp_path / "killed"
    shutil.copytree(finished.path, copy)
    (copy / "true_losses.npz").unlink()
    trials = sorted((copy / "true_trials").glob("*/*.json"))
    assert len(trials) == NUM_SUBSETS + 12
    lost, kept = trials[::2], trials[1::2]
    for path in lost:
        path.unlink()
    for path in kept:
        path.write_text(path.read_text())  # a marker: rewritten trials would lose it
        with path.open("a") as handle:
            handle.write(" ")
    config = parse_config(small_sbm_config(true_affinity=TRUE_AFFINITY))
    Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute()
    assert all(path.read_text().endswith(" ") for path in kept)
    assert all(path.is_file() for path in lost)
    resumed = RunDirectory(copy, resume=True).load_arrays("true_losses.npz")
    original = finished.load_arrays("true_losses.npz")
    for key in ("subsets", "losses", "losses_repeat", "base_losses"):
        assert np.array_equal(resumed[key], original[key], equal_nan=True), key


def test_interrupted_group_training_restores_the_tune_experiment(finished, tmp_path):
    import shutil

    copy = tmp_path / "tuned"
    shutil.copytree(finished.path, copy)
    (copy / "comparison.json").unlink()
    shutil.rmtree(copy / "group_trials")  # only the Tune experiment holds the trained models
    results = sorted((copy / "tune").glob("*/*/checkpoint_*/result.pt"))
    # one trial per distinct group model (one lr each), as the finished run's trial store holds
    assert len(results) == len(list(finished.path.glob("group_trials/*.pt"))) > 0
    stamps = [path.stat().st_mtime_ns for path in results]
    config = parse_config(small_sbm_config(true_affinity=TRUE_AFFINITY, dmtg=DMTG))
    Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute()
    assert [path.stat().st_mtime_ns for path in results] == stamps
    assert (json.loads((copy / "comparison.json").read_text())
            == finished.read_json("comparison.json"))


def test_a_killed_driver_resumes_from_the_finished_shards_of_its_stage(finished, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    data = small_sbm_config(ray={"num_workers": 1, "subsets_per_batch": 8})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    output = tmp_path / "killed-driver"
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_grouping.py"
    driver = subprocess.Popen([sys.executable, str(script), "--config", str(tmp_path / "run.yaml"),
                               "--output", str(output)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(output.glob("shards/estimates-*/*.npz"))) < 3:
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    shard = sorted(output.glob("shards/estimates-*/*.npz"))[0]
    with np.load(shard) as saved:
        marked = saved["losses"] + 1000.0  # a reused shard keeps the mark; a refit loses it
    np.savez(shard, losses=marked)
    Pipeline(parse_config(data), RunDirectory(output, resume=True), resume=True).execute()
    losses = np.load(output / "subset_losses.npz")["losses"]
    expected = finished.load_arrays("subset_losses.npz")["losses"].copy()
    batch = int(shard.stem)
    expected[batch * 8:(batch + 1) * 8] += 1000.0
    assert np.array_equal(losses, expected)
    assert not list(output.glob("shards/estimates-*"))


@pytest.fixture(scope="module")
def true_method(ray_session, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("runs"), "true-method", affinity={"method": "true"})


def test_true_method_fine_tunes_every_subset_and_matches_the_true_affinity(finished,
                                                                          true_method):
    run = true_method
    assert "gradients" not in run.read_json("manifest.json")["stages"]
    assert np.array_equal(run.load_array("affinity.npy"),
                          finished.load_array("true_affinity.npy"))
    rows = run.read_json("comparison.json")
    assert {row["grouping"] for row in rows} == {"all", "true", "random", "per_task_linear"}
    assert run.read_json("groups.json")["groups"] == finished.read_json("groups.json")[
        "true_groups"]


def test_changing_the_true_training_redoes_the_true_method_stages(true_method, tmp_path):
    """``affinity.method: true`` trains every subset with ``true_affinity``'s settings: a
    resumed run with other epochs retrains them and recomputes what follows."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(true_method.path, copy)
    before = RunDirectory(copy, resume=True).manifest["stages"]
    config = parse_config(small_sbm_config(affinity={"method": "true"},
                                           true_affinity={"epochs": 2}))
    Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute(until="groups")
    resumed = RunDirectory(copy, resume=True)
    after = resumed.manifest["stages"]
    assert after["base"] == before["base"]
    for stage in ("true_subsets", "affinity", "groups"):
        assert after[stage]["digest"] != before[stage]["digest"], stage
    assert not np.array_equal(resumed.load_arrays("subset_losses.npz")["losses"],
                              true_method.load_arrays("subset_losses.npz")["losses"])
    assert "epochs: 2" in resumed.file("config.yaml").read_text()


def test_dmtg_that_cannot_fit_is_refused_before_any_stage(tmp_path):
    config = parse_config(small_sbm_config(dmtg={"enabled": True, "max_memory_gib": 1e-6}))
    run = RunDirectory(tmp_path / "refused", resume=False)
    with pytest.raises(ConfigError, match=r"dmtg\.max_memory_gib"):
        Pipeline(config, run, resume=False).execute()
    assert not run.file("base_model.pt").exists()


def test_an_earlier_run_is_never_overwritten(finished):
    with pytest.raises(ConfigError, match="--resume"):
        RunDirectory(finished.path, resume=False)


def test_until_stops_after_the_named_stage_without_a_report(finished, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished.path, copy)
    for name in ("groups.json", "comparison.json", "report.md"):
        (copy / name).unlink()
    config = parse_config(small_sbm_config(clustering={"num_groups": 3}))
    Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute(until="groups")
    assert json.loads((copy / "groups.json").read_text())["num_groups"] == 3
    assert not (copy / "comparison.json").exists() and not (copy / "report.md").exists()
    with pytest.raises(ConfigError, match=r"^--until dmtg: this config does not run"):
        Pipeline(config, RunDirectory(copy, resume=True), resume=True).execute(until="dmtg")


@pytest.mark.parametrize(("limit", "tracked"), [(5, [True, False]), (None, [True, True])])
def test_dominance_is_tracked_on_models_up_to_the_limit(tmp_path, limit, tracked):
    config = parse_config(small_sbm_config(group_training={"dominance_max_tasks": limit}))
    pipeline = Pipeline(config, RunDirectory(tmp_path / "run", resume=False), resume=False)
    assert [pipeline._tracks_dominance(list(range(size))) for size in (5, 6)] == tracked


def test_the_linear_stage_is_the_start_of_every_model_and_the_compared_baseline(
        ray_session, tmp_path):
    config = parse_config(small_sbm_config(model={"skip": True}, train={"max_epochs": 10}))
    assert config.model.linear_start
    run = RunDirectory(tmp_path / "linear", False)
    Pipeline(config, run, False).execute(until="base")
    linear = PerTaskLinear(**run.load_arrays("linear_model.npz"))
    direct = fit_per_task_linear(build_taskset(config))
    assert np.array_equal(linear.weights, direct.weights)
    assert len(run.read_json("per_task_linear.json")["tasks"]) == 24
    # The base model's best validation criterion is no worse than its start, the regressions.
    metrics = run.read_json("base_metrics.json")
    taskset = build_taskset(config)
    val = taskset.indices(VAL)
    start_criterion = 1 - mean_average_precision(
        torch.from_numpy(linear.logits(taskset.features[val])),
        torch.from_numpy(taskset.labels[val].astype(np.float64)))
    assert metrics["best_criterion"] <= start_criterion + 1e-6
    # A random start does not run the stage unless the baseline row is compared.
    random = parse_config(small_sbm_config(model={"skip": True, "skip_init": "random"},
                                           groups={"per_task_linear": False}))
    stages = [stage[0] for stage in Pipeline(random, RunDirectory(tmp_path / "random", False),
                                             False, taskset)._stages()]
    assert "linear" not in stages and stages[0] == "base"


def test_the_from_scratch_truth_of_a_linear_start_reaches_the_error_report(ray_session,
                                                                           tmp_path):
    config = parse_config(small_sbm_config(
        model={"skip": True}, train={"max_epochs": 5}, affinity={"coverage": 3},
        true_affinity={"enabled": True, "protocol": "from_scratch", "num_subsets": 4}))
    assert config.model.linear_start
    run = RunDirectory(tmp_path / "scratch", False)
    Pipeline(config, run, False).execute(until="error_report")
    report = run.read_json("error_report.json")
    assert report["flops"]["true_per_subset"] > 0 and np.isfinite(report["true_seed_effect"])
