"""The diagnostic benchmarks: the label-feature probe, the training curves from the linear
start and θ0's residuals on training and validation rows measure what they say, and refuse
what they cannot measure in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import small_sbm_config

from grouping.config import parse_config
from grouping.models.per_task_linear import fit_per_task_linear
from grouping.tasksets import TEST, build_taskset
from grouping.training import average_precisions

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *arguments],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def labelled_config(tmp_path_factory) -> Path:
    """The planted SBM with propagated training labels and the linear start (skip on)."""
    path = tmp_path_factory.mktemp("probe") / "labelled.yaml"
    data = small_sbm_config(features={"propagated_labels": {"enabled": True}},
                            model={"skip": True, "skip_init": "linear"})
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_label_feature_probe_compares_own_column_with_every_tasks(labelled_config,
                                                                       tmp_path):
    output = tmp_path / "probe.json"
    result = _script("bench_label_features.py", "--config", str(labelled_config),
                     "--json", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())
    assert 0 < figures["tasks"] <= 24
    assert 0 < figures["own_column_ap"] <= 1 and 0 < figures["with_other_tasks_ap"] <= 1
    assert figures["difference"] == pytest.approx(
        figures["with_other_tasks_ap"] - figures["own_column_ap"])
    assert figures["difference_se"] > 0


def test_the_label_feature_probe_refuses_a_task_set_without_label_columns(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config()))
    result = _script("bench_label_features.py", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: features.propagated_labels: the task set has no per-task label columns"]


def test_training_curves_start_at_the_regressions_and_follow_every_epoch(labelled_config,
                                                                        tmp_path):
    output = tmp_path / "curves.json"
    result = _script("bench_training_curves.py", "--config", str(labelled_config),
                     "--epochs", "3", "--seeds", "1", "--variant", "default=",
                     "--variant", "slow=train.lr=1e-6", "--json", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())["variants"]
    default, slow = figures["default"], figures["slow"]
    assert len(default["test_ap"]) == len(default["val_ap"]) == 4  # the start and 3 epochs
    # epoch 0 of a linear start is the per-task regressions' own mean test AP
    taskset = build_taskset(parse_config(yaml.safe_load(labelled_config.read_text())))
    test = taskset.indices(TEST)
    logits = torch.tensor(fit_per_task_linear(taskset).logits(taskset.features[test]))
    regressions = float(torch.nanmean(average_precisions(
        logits, torch.tensor(taskset.labels[test], dtype=torch.float64))))
    assert default["start_test_ap"] == pytest.approx(regressions, abs=1e-5)
    assert slow["start_test_ap"] == default["start_test_ap"]
    # the curves are trained: the default moves, a rate of 1e-6 barely does
    moved = np.abs(np.diff(default["test_ap"])).sum()
    assert moved > 10 * np.abs(np.diff(slow["test_ap"])).sum()
    assert default["best_test_ap"] == max(default["test_ap"])


def test_base_residuals_reads_the_fit_signal_of_training_and_validation_rows(tmp_path):
    """The residual figures are θ0's σ(f0) − y by split; the training-against-validation
    figures are the norms and cosine of each task's weighted mean loss gradients; two
    validation halves made of the same rows agree exactly (cosine 1)."""
    rng = np.random.default_rng(0)
    tasks, dim = 3, 5
    parts = {key: [] for key in ("example", "task", "split", "label", "weight")}
    offsets, f0, gradients = [], [], []
    for task in range(tasks):
        start = len(parts["task"])
        train_labels = [1, 1, 0, 0, 0]
        val_pairs = [1, 0, 0]  # each validation row twice in a row: identical halves
        labels = train_labels + [label for label in val_pairs for _ in range(2)]
        splits = [0] * len(train_labels) + [1] * 2 * len(val_pairs)
        logits = list(rng.normal(size=len(train_labels)))
        features = list(rng.normal(size=(len(train_labels), dim)))
        for _ in val_pairs:
            logit, feature = rng.normal(), rng.normal(size=dim)
            logits += [logit, logit]
            features += [feature, feature]
        parts["example"] += list(range(len(labels)))
        parts["task"] += [task] * len(labels)
        parts["split"] += splits
        parts["label"] += labels
        parts["weight"] += [1.0] * len(labels)
        offsets.append([start, start + len(train_labels), start + len(labels)])
        f0 += logits
        gradients += features
    run = tmp_path / "run"
    (run / "gradients").mkdir(parents=True)
    np.savez(run / "gradients" / "rows.npz",
             **{key: np.array(values) for key, values in parts.items()},
             offsets=np.array(offsets))
    f0, gradients = np.array(f0), np.array(gradients, dtype=np.float32)
    np.save(run / "gradients" / "f0.npy", f0.astype(np.float32))
    np.save(run / "gradients" / "features.npy", gradients)
    output = tmp_path / "residuals.json"
    result = _script("bench_base_residuals.py", "--run", str(run), "--json", str(output))
    assert result.returncode == 0, result.stderr
    figures = json.loads(output.read_text())
    probability = 1 / (1 + np.exp(-f0.astype(np.float32).astype(np.float64)))
    split, label = np.array(parts["split"]), np.array(parts["label"])
    positives = (split == 0) & (label == 1)
    assert figures["train"]["positive_mean_residual"] == pytest.approx(
        np.mean(1 - probability[positives]))
    means = np.zeros((2, tasks, dim))
    for task in range(tasks):
        for part in (0, 1):
            span = slice(offsets[task][part], offsets[task][part + 1])
            residual = probability[span] - label[span]
            means[part, task] = residual @ gradients[span].astype(np.float64) / len(residual)
    norms = np.linalg.norm(means, axis=2)
    assert figures["gradient_norm_ratio_median"] == pytest.approx(
        np.median(norms[0] / norms[1]))
    assert figures["gradient_cosine_median"] == pytest.approx(
        np.median((means[0] * means[1]).sum(1) / (norms[0] * norms[1])))
    assert figures["validation_halves_cosine_median"] == pytest.approx(1.0)
    missing = _script("bench_base_residuals.py", "--run", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: --run:")
    assert "Traceback" not in missing.stderr
