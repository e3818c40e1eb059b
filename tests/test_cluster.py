"""Cluster readiness: the launcher files validate against Ray's schema, and a run on a
simulated three-node cluster with its run directory at a file:// URI survives losing a worker
node during the gradient and the surrogate stages with an identical affinity matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cluster.yaml", "configs/cluster-local.yaml"])
def test_launcher_files_are_valid_ray_cluster_configs(name):
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load((ROOT / name).read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts  # reached through `ray dashboard` only


def test_lost_worker_nodes_change_nothing_and_the_run_lives_at_its_uri(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "cluster_scenario.py"),
                             str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert [fault["stage"] for fault in outcome["faults"]] == ["gradients", "estimates"]
    assert all(fault["removed_node"] and not fault["stage_finished_before"]
               for fault in outcome["faults"])
    assert outcome["affinity_identical"]
    assert {"manifest.json", "affinity.npy", "report.md", "comparison.json", "tune"} <= set(
        outcome["files_at_uri"])
    assert outcome["resume_reran"] == []
    assert outcome["cuda_visible_devices"] == "0"
