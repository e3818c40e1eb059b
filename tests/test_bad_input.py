"""The driver's bad-input contract, one test per class of mistake: one line on stderr naming
the field or file, exit code 2, no traceback, no library output, and nothing an earlier run
wrote changed (no directory left behind by a refused new run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import small_sbm_config

from grouping.artifacts import RunDirectory
from grouping.config import ConfigError, load_config, parse_config
from grouping.tasksets.snap import read_edge_list

ROOT = Path(__file__).resolve().parents[1]


def _driver(*arguments: str, cwd: Path | None = None,
            path: Path | None = None) -> subprocess.CompletedProcess:
    environment = None
    if path is not None:
        import os

        environment = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"), *arguments],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=environment)


def _refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """The one stderr line of a refused run, after checking the contract."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert result.stdout == ""
    for name in names:
        assert name in lines[0]
    return lines[0]


def _config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(small_sbm_config(**sections)))
    return path


def _earlier_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory holding what a finished run leaves (manifest, config, a model file)."""
    run = tmp_path / "earlier"
    run.mkdir()
    files = {"manifest.json": json.dumps({"stages": {"base": {"digest": "x", "files": []}}}),
             "config.yaml": yaml.safe_dump(small_sbm_config()), "base_model.pt": "weights"}
    for name, text in files.items():
        (run / name).write_text(text)
    return run, {name: (run / name).read_bytes() for name in files}


def _unchanged(run: Path, files: dict[str, bytes]) -> bool:
    return {path.name: path.read_bytes() for path in run.iterdir()} == files


def test_a_binary_config_file_is_named(tmp_path):
    path = tmp_path / "junk.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    _refused(_driver("--config", str(path)), str(path), "not a text")


@pytest.mark.parametrize("content,found", [("", "found nothing"), ("- a\n- b\n", "a list")])
def test_an_empty_or_list_config_names_its_file(tmp_path, content, found):
    path = tmp_path / "odd.yaml"
    path.write_text(content)
    _refused(_driver("--config", str(path)), str(path), found)


def test_a_directory_given_for_a_file_is_named_as_such(tmp_path):
    _refused(_driver("--config", str(tmp_path)), "is a directory")
    (tmp_path / "cmty.txt").write_text("1 2\n")
    data = {"taskset": {"kind": "snap", "edges": str(tmp_path), "num_tasks": 3,
                        "communities": str(tmp_path / "cmty.txt")},
            "affinity": {"subset_size": 2}}
    with pytest.raises(ConfigError, match=r"taskset\.edges: .* is a directory, expected a file"):
        parse_config(data)


@pytest.mark.parametrize("value", ["[0.001", "{a: 1", "!!python/object/apply:os.system [ls]"])
def test_an_override_that_is_not_yaml_is_one_line(tmp_path, value):
    line = _refused(_driver("--config", str(_config(tmp_path)), "--set",
                            f"group_training.lrs={value}"), "--set group_training.lrs")
    assert "not valid YAML" in line


def test_a_bad_stage_name_is_one_line():
    _refused(_driver("--until", "bogus"), "--until", "bogus")


def test_a_builder_that_raises_is_named(tmp_path):
    (tmp_path / "raising_builder.py").write_text(
        "def build(seed, **params):\n    raise TypeError('no tasks here\\nsecond line')\n")
    path = tmp_path / "python.yaml"
    path.write_text(yaml.safe_dump({"taskset": {"kind": "python",
                                                "builder": "raising_builder:build",
                                                "num_tasks": 3},
                                    "affinity": {"subset_size": 2}}))
    line = _refused(_driver("--config", str(path), "--output", str(tmp_path / "run"),
                            path=tmp_path), "taskset.builder", "TypeError", "no tasks here")
    assert "second line" in line
    assert not (tmp_path / "run").exists()


def _snap_config(tmp_path: Path, edges: str) -> Path:
    (tmp_path / "edges.txt").write_text(edges)
    (tmp_path / "cmty.txt").write_text("1 2 3\n2 3\n1 3\n")
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump({
        "taskset": {"kind": "snap", "edges": str(tmp_path / "edges.txt"),
                    "communities": str(tmp_path / "cmty.txt"), "num_tasks": 3},
        "affinity": {"subset_size": 2}}))
    return path


def test_an_empty_edge_file_is_one_line_without_warnings(tmp_path):
    line = _refused(_driver("--config", str(_snap_config(tmp_path, "# no edges\n")),
                            "--output", str(tmp_path / "run")), "edges.txt", "no edges")
    assert "Warning" not in line
    assert not (tmp_path / "run").exists()


def test_a_bad_edge_row_is_reported_by_its_line_number(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("# comment\n1 2\n2 x\n")
    with pytest.raises(ConfigError, match=r"line 3: expected integer node ids, found '2 x'"):
        read_edge_list(path)
    path.write_text("1 2\n2 3 4\n")
    with pytest.raises(ConfigError, match="line 2: 3 fields where earlier lines have 2"):
        read_edge_list(path)


def test_resume_of_a_directory_without_a_run_changes_nothing(tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "config.yaml").write_text("mine\n")
    _refused(_driver("--config", str(_config(tmp_path)), "--output", str(folder), "--resume"),
             "--resume", "holds no run")
    assert (folder / "config.yaml").read_text() == "mine\n"
    _refused(_driver("--config", str(_config(tmp_path)), "--output", str(tmp_path / "none"),
                     "--resume"), "holds no run")
    assert not (tmp_path / "none").exists()


def test_a_resume_that_fails_its_checks_keeps_the_runs_config(tmp_path):
    run, files = _earlier_run(tmp_path)
    bad_data = _snap_config(tmp_path, "1 2\n2 x\n")
    _refused(_driver("--config", str(bad_data), "--output", str(run), "--resume"), "line 2")
    assert _unchanged(run, files)
    refused_dmtg = _config(tmp_path, dmtg={"enabled": True, "max_memory_gib": 1e-6})
    _refused(_driver("--config", str(refused_dmtg), "--output", str(run), "--resume"),
             "dmtg.max_memory_gib")
    assert _unchanged(run, files)


def test_a_resumed_run_with_a_changed_config_keeps_the_earlier_one(tmp_path):
    run, files = _earlier_run(tmp_path)
    directory = RunDirectory(run, resume=True)
    directory.record_config("changed: true\n")
    assert (run / "config.yaml").read_text() == "changed: true\n"
    (kept,) = run.glob("config-before-*.yaml")
    assert kept.read_bytes() == files["config.yaml"]
    directory.record_config("changed: true\n")
    assert len(list(run.glob("config-before-*.yaml"))) == 1


def test_a_projection_too_large_for_memory_is_refused_before_any_work(tmp_path):
    _refused(_driver("--config", str(_config(tmp_path)), "--output", str(tmp_path / "run"),
                     "--set", "affinity.projection_dim=10000000",
                     "--set", "affinity.estimator=surrogate"), "affinity.projection_dim",
             "GiB")
    assert not (tmp_path / "run").exists()


def test_a_worker_memory_budget_is_checked_against_each_estimate(tmp_path):
    line = _refused(_driver("--config", str(_config(tmp_path)), "--output",
                            str(tmp_path / "run"), "--set", "ray.worker_memory_gib=0.001"),
                    "ray.worker_memory_gib")
    assert not (tmp_path / "run").exists()
    assert "each" in line


@pytest.mark.parametrize("spelling", ["true", "'true'", "\"true\""])
def test_the_true_method_can_be_written_unquoted(tmp_path, spelling):
    data = small_sbm_config()
    text = yaml.safe_dump(data).replace("affinity:\n", f"affinity:\n  method: {spelling}\n")
    path = tmp_path / "true.yaml"
    path.write_text(text)
    assert load_config(path).affinity.method == "true"
    assert parse_config(data, [f"affinity.method={spelling}"]).affinity.method == "true"
    with pytest.raises(ConfigError, match=r"affinity\.method: .*boolean false"):
        parse_config(data, ["affinity.method=false"])


def test_the_cost_benchmark_refuses_an_estimator_it_cannot_time(tmp_path):
    """bench_estimator_cost times the training estimators only: a variant of another one is
    refused in one line naming it, before any run directory is made."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_sbm_config()))
    output = tmp_path / "cost"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_estimator_cost.py"), "--config",
         str(config), "--output", str(output), "--variant", "truncated:truncated.patience=2",
         "--variant", "surrogate"], capture_output=True, text=True, timeout=300)
    assert "'surrogate'" in _refused(result) and not output.exists()


def test_the_quality_benchmark_refuses_a_cap_for_a_config_it_does_not_run(tmp_path):
    """A per-config subset cap must name one of ``--configs``: refused in one line naming
    the option and the name, before any run directory is made."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_sbm_config()))
    workdir = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_quality.py"), "--configs", str(config),
         "--workdir", str(workdir), "--max-subsets", "40", "snap_dblp_sub=20"],
        capture_output=True, text=True, timeout=300)
    line = _refused(result)
    assert "--max-subsets" in line and "'snap_dblp_sub'" in line and not workdir.exists()


def test_the_stacked_lookahead_benchmark_refuses_an_empty_stack(tmp_path):
    """A stack size below 1 is refused in one line naming the option, before any run
    directory is made."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_sbm_config()))
    output = tmp_path / "stacks"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_stacked_lookahead.py"), "--config",
         str(config), "--output", str(output), "--stack-sizes", "16", "0"],
        capture_output=True, text=True, timeout=300)
    assert "--stack-sizes" in _refused(result) and not output.exists()
