"""The report's bottom line: the best row, comparisons only between rows trained the same way,
"beats" only beyond two standard errors, and whether the estimate carried information."""

from __future__ import annotations

from grouping.evaluation.verdict import estimate_information, verdict


def _line(grouping: str, optimizer: str, mean: float, se: float | None) -> dict:
    return {"grouping": grouping, "optimizer": optimizer, "metric": "test_f1",
            "mean_test_f1": mean, "mean_test_f1_se": se}


SUMMARY = [_line("all", "adatask_adam", 0.40, 0.01), _line("gradtag", "adatask_adam", 0.50, 0.01),
           _line("random", "adatask_adam", 0.45, 0.04), _line("all", "adam", 0.60, 0.01),
           _line("gradtag", "adam", 0.55, 0.01), _line("dmtg", "adam", 0.54, 0.01),
           _line("per_task_linear", "lbfgs", 0.49, 0.0)]


def test_rows_are_compared_only_under_the_same_optimizer():
    result = verdict(SUMMARY)
    pairs = {(item.own["optimizer"], item.other["grouping"], item.other["optimizer"])
             for item in result.comparisons}
    assert pairs == {("adatask_adam", "all", "adatask_adam"),
                     ("adatask_adam", "random", "adatask_adam"), ("adam", "all", "adam"),
                     ("adam", "dmtg", "adam"), ("adatask_adam", "per_task_linear", "lbfgs")}
    gains = {(item.own["optimizer"], item.other["grouping"]): item.difference
             for item in result.comparisons}
    assert gains[("adatask_adam", "all")].beats  # +0.10, 7 standard errors
    assert not gains[("adatask_adam", "random")].beats  # +0.05 ± 0.041: 1.2 standard errors
    assert gains[("adam", "all")].loses


def test_the_best_row_is_among_the_primary_optimizers_rows_and_the_baselines():
    result = verdict(SUMMARY)
    assert (result.best["grouping"], result.best["optimizer"]) == ("dmtg", "adam")
    assert result.recommendation().startswith("use DMTG (Adam): mean test F1 0.540")
    assert "estimated groups (AdaTask-Adam)" in result.recommendation()
    assert result.headline().startswith("verdict: use DMTG")
    headline = result.headline()
    assert "estimated groups vs all tasks in one model +0.100 ± 0.014, beats" in headline
    assert headline.count("vs all tasks in one model") == 1  # the primary optimizer's only


def test_the_verdict_says_how_many_of_the_groups_models_kept_their_start():
    """Under the primary optimizer only, and only where any model kept its start."""
    rows = [_line("all", "adam", 0.40, 0.01), _line("gradtag", "adam", 0.41, 0.01),
            _line("gradtag", "adatask_adam", 0.41, 0.01), _line("all", "adatask_adam", 0.4, 0.01)]
    rows[1]["kept_start_fraction"], rows[2]["kept_start_fraction"] = 0.75, 0.0
    lines = verdict(rows).lines()
    (line,) = [line for line in lines if "starting state" in line]
    assert line.startswith("- 75% of the estimated groups' models kept their starting state")
    rows[1]["kept_start_fraction"], rows[2]["kept_start_fraction"] = 0.0, 0.75
    assert not any("starting state" in line for line in verdict(rows).lines())


def test_a_margin_without_spread_is_never_called_a_win():
    result = verdict([_line("all", "adam", 0.40, None), _line("gradtag", "adam", 0.70, None)])
    assert "no spread" in result.recommendation()
    assert not result.comparisons[0].difference.beats


def test_the_estimate_is_judged_against_the_noise_floor():
    assert "no information" in estimate_information({"within_task_spearman": 0.04,
                                                     "true_noise_floor": 0.74})
    assert "weak" in estimate_information({"within_task_spearman": 0.2,
                                           "true_noise_floor": 0.74})
    assert "well" in estimate_information({"within_task_spearman": 0.62,
                                           "true_noise_floor": 0.65})
    assert "could not be measured" in estimate_information({"within_task_spearman": float("nan"),
                                                            "true_noise_floor": 0.9})
    assert estimate_information(None) is None
    room = estimate_information({"within_task_spearman": 0.5, "true_noise_floor": 0.6,
                                 "true_composition_effect": 0.004, "true_seed_effect": 0.012,
                                 "true_selection_gain": 0.002})
    assert "move its true figure by 0.4%" in room and "one training seed by 1.2%" in room
    assert "saves 0.2% under the other" in room
