"""Group models as Ray Tune trials: learning rates searched per optimizer, the best
validation criterion kept per job."""

from __future__ import annotations

import pytest
from conftest import small_binary_taskset, small_sbm_config

from grouping.config import ConfigError, parse_config
from workers.tuning import GroupJob, train_group_trials


def test_a_mapping_of_learning_rates_must_name_every_optimizer():
    config = parse_config(small_sbm_config(group_training={
        "optimizers": ["adatask_adam_mean", "adam"],
        "lrs": {"adam": [1e-3], "adatask_adam_mean": [3e-3, 1e-2]}}))
    assert config.group_training.lrs_for("adatask_adam_mean") == [3e-3, 1e-2]
    assert config.group_training.first_lr == 3e-3
    assert parse_config(small_sbm_config()).group_training.lrs_for("adam") == [1e-3]
    with pytest.raises(ConfigError, match=r"group_training.*'adam'"):
        parse_config(small_sbm_config(group_training={"optimizers": ["adatask_adam", "adam"],
                                                      "lrs": {"adatask_adam": [1e-3]}}))
    with pytest.raises(ConfigError, match="group_training.lrs"):
        parse_config(small_sbm_config(group_training={"lrs": {"adam": []}}))


def test_each_job_is_searched_over_its_own_optimizers_rates(ray_session, tmp_path):
    rates = {"adam": [1e-3, 1e-2], "adatask_adam_mean": [3e-2]}
    config = parse_config(small_sbm_config(
        model={"hidden": [4]}, train={"max_epochs": 5},
        group_training={"optimizers": ["adatask_adam_mean", "adam"], "lrs": rates}))
    jobs = [GroupJob([0, 1], "adam", seed=0), GroupJob([0, 1, 2, 3], "adatask_adam_mean", seed=0)]
    results = train_group_trials(small_binary_taskset(), jobs, config, str(tmp_path), "rates",
                                 "rates")
    assert results[0]["lr"] in rates["adam"] and results[1]["lr"] == 3e-2
    assert [len(result["tasks"]) for result in results] == [2, 4]
    trials = sorted(path.name for path in (tmp_path / "rates").iterdir() if path.is_dir())
    assert len(trials) == 3
