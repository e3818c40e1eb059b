"""Config validation and the driver's handling of user mistakes (exit code 2, one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import small_sbm_config

from grouping.config import ConfigError, dump_config, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_valid_config_round_trips_through_yaml(tmp_path):
    config = parse_config(small_sbm_config())
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_overrides_set_nested_fields_with_yaml_values():
    config = parse_config(small_sbm_config(), ["affinity.l2=0.5", "model.hidden=[3, 2]",
                                               "clustering.num_groups=3"])
    assert config.affinity.l2 == 0.5
    assert config.model.hidden == [3, 2]
    assert config.clustering.num_groups == 3


@pytest.mark.parametrize(("change", "field"), [
    ({"affinity": {"l2": -1}}, "affinity.l2"),
    ({"affinity": {"typo": 1}}, "affinity.typo"),
    ({"model": {"hidden": "wide"}}, "model.hidden"),
    ({"affinity": {"subset_size": 24}}, "affinity.subset_size"),
    ({"clustering": {"num_groups": 99}}, "clustering.num_groups"),
    ({"taskset": {"num_families": 20}}, "num_families"),
    ({"taskset": {"splits": {"train": 0.6, "val": 0.5}}}, "taskset.splits"),
    ({"affinity": {"method": "true"}, "true_affinity": {"enabled": True}},
     "true_affinity.enabled"),
    ({"group_training": {"optimizers": ["sgd"]}}, "group_training.optimizers"),
    ({"group_training": {"lrs": []}}, "group_training.lrs"),
    ({"affinity": {"surrogate_dtype": "float16"}}, "affinity.surrogate_dtype"),
    ({"affinity": {"projection": "sparse"}}, "affinity.projection"),
    ({"clustering": {"solver": "MOSEK"}}, "clustering.solver"),
])
def test_mistakes_name_their_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(small_sbm_config(**change))


def test_missing_data_files_are_named():
    data = small_sbm_config(taskset={"kind": "snap", "edges": "missing-edges.txt",
                                     "communities": "missing-cmty.txt", "num_tasks": 20})
    for key in ("num_blocks", "block_size", "p_in", "p_out", "num_families",
                "tasks_per_family", "drop_fraction", "flip_fraction"):
        data["taskset"].pop(key)
    with pytest.raises(ConfigError, match="taskset.edges: file not found"):
        parse_config(data)


def _driver(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"), *arguments],
                          capture_output=True, text=True, timeout=120)


def test_driver_exits_2_with_one_line_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config(affinity={"projection_dim": 0})))
    result = _driver("--config", str(path), "--output", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "affinity.projection_dim" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_driver_refuses_to_overwrite_an_earlier_run(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config()))
    earlier = tmp_path / "run"
    earlier.mkdir()
    (earlier / "report.md").write_text("earlier")
    result = _driver("--config", str(path), "--output", str(earlier))
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (earlier / "report.md").read_text() == "earlier"


def test_driver_names_a_bad_override_and_a_missing_config(tmp_path):
    result = _driver("--config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2 and "none.yaml" in result.stderr
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config()))
    result = _driver("--config", str(path), "--set", "train.lr=fast")
    assert result.returncode == 2 and "train.lr" in result.stderr
