"""A successful run's console: the run directory, one progress bar per stage, a result line
for the stages that have one, the verdict and where the report is; every line of Ray, Tune,
PyG and Python warnings goes to the run's logs/ instead. The report opens with its verdict and
has a self-contained HTML twin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "seed": 0,
    "taskset": {"kind": "sbm", "num_blocks": 6, "block_size": 80, "p_in": 0.08,
                "p_out": 0.003, "num_families": 3, "tasks_per_family": 3,
                "drop_fraction": 0.1, "flip_fraction": 0.1},
    "features": {"kind": "fastrp", "dim": 16, "hops": 2, "sign_hops": 1},
    "model": {"hidden": [4], "skip": False},
    "train": {"max_epochs": 20, "patience": 5, "pos_weight": "none",
              "early_stopping": "val_loss"},
    "affinity": {"projection_dim": 32, "subset_size": 3, "coverage": 3},
    "true_affinity": {"enabled": True, "num_subsets": 4, "epochs": 2},
    "clustering": {"num_groups": 3},
    "groups": {"single_task": False, "random_seeds": 2, "spectral": False},
    "group_training": {"optimizers": ["adam"], "seeds": 2},
    "dmtg": {"enabled": True, "warmup_epochs": 2, "max_epochs": 6},
}
BARS = ("per-task logistic regression", "base model", "gradient features", "subset estimates",
        "true training", "true training, second seed", "DMTG search", "group models")
LIBRARY = re.compile(r"Warning|WARNING|INFO|ray|Ray|Tune|tune|Checkpoint|tensorboard|Trial")


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    output = folder / "run"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"),
                             "--config", str(folder / "tiny.yaml"), "--output", str(output)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, output


def test_the_console_holds_only_the_drivers_lines_and_progress_bars(quiet_run):
    result, output = quiet_run
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"run directory: {output}"
    assert lines[-2].startswith("verdict: use ")
    assert lines[-1].startswith("finished in ") and "report.html" in lines[-1]
    assert len(lines) <= 15
    assert not any(LIBRARY.search(line.replace(str(output), "")) for line in lines)
    bars = [line for line in re.split(r"[\r\n]+", result.stderr) if line.strip()]
    assert bars and all(line.split(":")[0] in BARS for line in bars), bars[:5]
    assert {line.split(":")[0] for line in bars} == set(BARS)


def test_the_libraries_output_goes_to_the_runs_logs(quiet_run):
    _, output = quiet_run
    (run_log,) = output.glob("logs/run-*.log")
    text = run_log.read_text()
    assert "Started a local Ray instance" in text
    assert "Configuration for experiment" in text  # Tune's banner
    assert "has constructor arguments in the object store" not in text
    (checks,) = output.glob("logs/checks-*.log")
    assert "UserWarning" in checks.read_text()  # PyG's sparse-tensor notices


def test_the_report_opens_with_its_verdict_and_has_a_self_contained_html(quiet_run):
    _, output = quiet_run
    report = (output / "report.md").read_text()
    assert report.index("## Verdict") < report.index("## Groups") < report.index("## Evidence")
    assert "all tasks in one model" in report and "random groups" in report
    page = (output / "report.html").read_text()
    assert "<table>" in page and page.count("data:image/png;base64,") >= 3
    assert not re.search(r'src="[^"]+\.png"', page)
