"""Multi-label tables (CSV, ARFF) and user-built task sets: loading, clean errors, and a
custom builder through the whole pipeline on Ray."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from grouping.artifacts import RunDirectory
from grouping.config import ConfigError, TableTaskSetConfig, parse_config
from grouping.tasksets import TEST, TRAIN, VAL, TaskSet, build_taskset
from grouping.tasksets.base import random_split
from grouping.tasksets.table import load_table
from workers.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def planted_builder(seed: int, families: int = 2, tasks_per_family: int = 3,
                    examples: int = 600) -> TaskSet:
    """Gaussian features; the tasks of a family threshold noisy copies of one direction."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((examples, 8)).astype(np.float32)
    directions = rng.standard_normal((families, 8))
    family = np.repeat(np.arange(families), tasks_per_family)
    scores = features @ directions[family].T
    scores += 0.3 * rng.standard_normal(scores.shape)
    labels = (scores > 0.5).astype(np.uint8)
    split = random_split(examples, 0.5, 0.25, rng)
    names = [f"task{task}" for task in range(len(family))]
    return TaskSet(features, labels, split, names, family)


def not_a_taskset(seed: int) -> dict:
    return {"seed": seed}


def _table(path: Path, **fields) -> TableTaskSetConfig:
    return TableTaskSetConfig(kind="table", path=path, **fields)


def _write_csv(tmp_path: Path, rows: int = 200) -> tuple[Path, np.ndarray]:
    """Columns f1, const, f2 (features) then a, b (0/1 labels)."""
    rng = np.random.default_rng(3)
    values = np.column_stack([rng.normal(5, 3, rows), np.full(rows, 7.0),
                              rng.normal(-1, 0.5, rows), rng.integers(0, 2, rows),
                              rng.integers(0, 2, rows)])
    lines = ["f1,const,f2,a,b"] + [
        f"{x:.6f},{c},{y:.6f},{int(a)},{int(b)}" for x, c, y, a, b in values]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, values


def test_csv_labels_by_name_and_by_last_n(tmp_path):
    path, values = _write_csv(tmp_path)
    named = load_table(_table(path, labels=["b", "a"]), seed=0)
    assert named.task_names == ["b", "a"]
    assert np.array_equal(named.labels, values[:, [4, 3]].astype(np.uint8))
    assert named.labels.dtype == np.uint8 and named.features.shape == (200, 3)
    last = load_table(_table(path, last_labels=2), seed=0)
    assert last.task_names == ["a", "b"]
    assert np.array_equal(last.labels, named.labels[:, ::-1])
    assert np.array_equal(last.features, named.features)


def test_csv_features_are_standardised_on_the_training_split(tmp_path):
    path, values = _write_csv(tmp_path)
    taskset = load_table(_table(path, labels=["a", "b"]), seed=0)
    train = taskset.split == TRAIN
    assert taskset.features.dtype == np.float32
    assert np.allclose(taskset.features[train][:, [0, 2]].mean(0), 0, atol=1e-5)
    assert np.allclose(taskset.features[train][:, [0, 2]].std(0), 1, atol=1e-5)
    assert not np.allclose(taskset.features[~train][:, 0].mean(), 0, atol=1e-6)
    assert np.all(taskset.features[:, 1] == 0)  # the constant column
    mean, scale = values[train, 0].mean(), values[train, 0].std()
    assert np.allclose(taskset.features[:, 0], (values[:, 0] - mean) / scale, atol=1e-4)


def test_csv_split_fractions_and_seeding(tmp_path):
    path, _ = _write_csv(tmp_path)
    config = _table(path, labels=["a"], splits={"train": 0.5, "val": 0.25})
    first, again, other = (load_table(config, seed) for seed in (4, 4, 5))
    assert [int((first.split == part).sum()) for part in (TRAIN, VAL, TEST)] == [100, 50, 50]
    assert np.array_equal(first.split, again.split)
    assert np.array_equal(first.features, again.features)
    assert not np.array_equal(first.split, other.split)



def test_gzip_compressed_tables_read_the_same(tmp_path):
    path, _ = _write_csv(tmp_path)
    packed = tmp_path / "table.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    plain, unpacked = (load_table(_table(name, last_labels=2), seed=1) for name in (path, packed))
    assert np.array_equal(plain.features, unpacked.features)
    assert np.array_equal(plain.labels, unpacked.labels)


ARFF = """% a comment before the header
@relation 'small: -C 3'

@attribute lab1 {0,1}
@attribute 'lab 2' {0,1}
@attribute lab3 {false,true}
@attribute x numeric
@attribute y real
% a comment inside the data
@data
1,0,true,0.5,2
0,1,false,1.5,4
{0 1, 2 true, 3 2.5, 4 6}
0,0,false,3.5,8
"""


def test_arff_dense_and_sparse_rows_with_first_n_labels(tmp_path):
    path = tmp_path / "small.arff"
    path.write_text(ARFF)
    taskset = load_table(_table(path, first_labels=3, splits={"train": 0.5, "val": 0.25}),
                         seed=0)
    assert taskset.task_names == ["lab1", "lab 2", "lab3"]
    assert taskset.labels.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]]
    train = taskset.split == TRAIN
    raw = np.array([[0.5, 2], [1.5, 4], [2.5, 6], [3.5, 8]])
    expected = (raw - raw[train].mean(0)) / raw[train].std(0)
    assert np.allclose(taskset.features, expected, atol=1e-6)


def test_arff_labels_declared_first_but_written_last_keep_their_names(tmp_path):
    path = tmp_path / "flipped.arff"
    path.write_text("@relation r\n@attribute C1 {0,1}\n@attribute C2 {0,1}\n"
                    "@attribute A1 numeric\n@attribute A2 numeric\n@attribute A3 numeric\n"
                    "@data\n0.1,0.2,0.3,1,0\n0.4,0.5,0.6,0,1\n0.7,0.8,0.9,1,1\n1.0,1.1,1.2,0,0\n")
    taskset = load_table(_table(path, last_labels=2, splits={"train": 0.5, "val": 0.25}),
                         seed=0)
    assert taskset.task_names == ["C1", "C2"]
    assert taskset.labels.tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]


CSV_HEADER = "x,a,b\n"


@pytest.mark.parametrize(("name", "text", "selector", "message"), [
    ("short.csv", CSV_HEADER + "1,0,1\n2,1\n", {"labels": ["a", "b"]},
     r"short\.csv line 3: expected 3 fields, found 2"),
    ("word.csv", CSV_HEADER + "1,0,1\n\nabc,1,0\n", {"last_labels": 2},
     r"word\.csv line 4: feature 'x' must be a finite number, found 'abc'"),
    ("two.csv", CSV_HEADER + "1,0,1\n2,2,1\n", {"labels": ["a", "b"]},
     r"two\.csv line 3: label 'a' must be 0 or 1, found '2'"),
    ("nolabel.csv", CSV_HEADER + "1,0,1\n", {"labels": ["a", "c"]},
     r"nolabel\.csv: no column named 'c'"),
    ("short.arff", "@relation r\n@attribute a {0,1}\n@attribute x numeric\n@data\n1,0.5\n"
     "% comment\n0\n", {"first_labels": 1}, r"short\.arff line 7: expected 2 fields, found 1"),
    ("word.arff", "@relation r\n@attribute a {0,1}\n@attribute x numeric\n@data\n1,?\n",
     {"first_labels": 1}, r"word\.arff line 5: feature 'x' must be a finite number, found '\?'"),
    ("two.arff", "@relation r\n@attribute a {0,1}\n@attribute x numeric\n@data\n1,0.5\n2,1\n",
     {"first_labels": 1}, r"two\.arff line 6: label 'a' must be 0 or 1, found '2'"),
    ("header.arff", "@relation r\n@attribute a\n@data\n1\n", {"first_labels": 1},
     r"header\.arff line 2: expected '@attribute NAME TYPE'"),
    ("type.arff", "@relation r\n@attribute a {0,1}\n@attribute x complex\n@data\n1,2\n",
     {"first_labels": 1}, r"type\.arff line 3: unknown type 'complex'"),
    ("nodata.arff", "@relation r\n@attribute a {0,1}\n@attribute x numeric\n",
     {"first_labels": 1}, r"nodata\.arff: no @data section"),
    ("sparse.arff", "@relation r\n@attribute a {0,1}\n@attribute x numeric\n@data\n{0 1, 9 2}\n",
     {"first_labels": 1}, r"sparse\.arff line 5: sparse index 9 beyond the 2 attributes"),
])
def test_malformed_tables_name_the_file_and_line(tmp_path, name, text, selector, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_table(_table(path, **selector), seed=0)
    assert "\n" not in str(caught.value)


def _table_config(path: Path, **taskset) -> dict:
    return {"name": "table", "seed": 0,
            "taskset": {"kind": "table", "path": str(path), **taskset},
            "affinity": {"subset_size": 2, "projection_dim": 20},
            "clustering": {"num_groups": 2}, "dmtg": {"enabled": False}}


@pytest.mark.parametrize(("taskset", "message"), [
    ({"labels": ["a"], "last_labels": 1}, "taskset: name the label columns with exactly one"),
    ({}, "taskset: name the label columns with exactly one"),
    ({"first_labels": 0}, r"taskset\.first_labels"),
    ({"labels": ["a", "a"]}, "labels must not repeat"),
])
def test_table_selector_mistakes_name_their_field(tmp_path, taskset, message):
    path, _ = _write_csv(tmp_path)
    with pytest.raises(ConfigError, match=message):
        parse_config(_table_config(path, **taskset))


def test_table_config_checks_the_file_suffix_and_graph_only_sections(tmp_path):
    path, _ = _write_csv(tmp_path)
    with pytest.raises(ConfigError, match=r"taskset\.path: file not found"):
        parse_config(_table_config(tmp_path / "none.csv", last_labels=3))
    with pytest.raises(ConfigError, match=r"taskset: path must end in \.csv or \.arff"):
        parse_config(_table_config(tmp_path / "table.tsv", last_labels=3))
    given = _table_config(path, last_labels=3)
    given["features"] = {"kind": "given", "path": str(path)}
    with pytest.raises(ConfigError, match="features.path: the features section applies to "
                                          "graph task sets"):
        parse_config(given)
    three = tmp_path / "three.csv"
    three.write_text("x,a,b,c\n" + "".join(f"{row},{row % 2},{row % 3 // 2},1\n"
                                          for row in range(20)))
    config = parse_config(_table_config(three, last_labels=3))
    assert config.taskset.num_tasks == 3
    taskset = build_taskset(config)
    assert taskset.task_names == ["a", "b", "c"] and taskset.features.shape == (20, 1)


def test_driver_exits_2_naming_the_file_of_a_malformed_row(tmp_path):
    table = tmp_path / "broken.csv"
    table.write_text("x,a,b,c\n1,0,1,0\n2,1,0,1\n3,0,1,1\n4,1,0\n")
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(_table_config(table, labels=["a", "b", "c"])))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"),
                             "--config", str(config), "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {table} line 5: expected 4 fields, found 3"]
    assert "Traceback" not in result.stderr


def _python_config(builder: str, num_tasks: int = 6, **taskset) -> dict:
    return {"name": "custom", "seed": 2,
            "taskset": {"kind": "python", "builder": builder, "num_tasks": num_tasks,
                        **taskset},
            "model": {"hidden": [8, 8]},
            "train": {"max_epochs": 40, "patience": 5},
            "affinity": {"projection_dim": 50, "subset_size": 3, "num_subsets": 20},
            "clustering": {"num_groups": 2},
            "groups": {"single_task": False, "random_seeds": 1, "spectral": False},
            "group_training": {"optimizers": ["adam"]},
            "dmtg": {"enabled": False},
            "ray": {"num_workers": 2}}


@pytest.mark.parametrize(("builder", "message"), [
    ("nomodule:fn", r"taskset\.builder: cannot import 'nomodule'"),
    ("grouping.config:NotThere", r"taskset\.builder: module 'grouping.config' has no function "
                                 "'NotThere'"),
    ("test_table_tasksets:not_a_taskset", r"taskset\.builder: test_table_tasksets:not_a_taskset "
                                          "returned dict, not a grouping.tasksets.TaskSet"),
])
def test_bad_builders_name_taskset_builder(builder, message):
    config = parse_config(_python_config(builder))
    with pytest.raises(ConfigError, match=message):
        build_taskset(config)


def test_builder_strings_sizes_and_params_are_checked():
    with pytest.raises(ConfigError, match=r"taskset\.builder: expected 'package.module:function'"):
        parse_config(_python_config("tests/builders.py"))
    with pytest.raises(ConfigError, match=r"taskset\.num_tasks: the config declares 5 tasks, "
                                          r"test_table_tasksets:planted_builder returned 6"):
        build_taskset(parse_config(_python_config("test_table_tasksets:planted_builder", 5)))
    with pytest.raises(ConfigError, match=r"taskset\.params"):
        build_taskset(parse_config(_python_config("test_table_tasksets:planted_builder",
                                                  params={"colour": 1})))
    config = parse_config(_python_config("test_table_tasksets:planted_builder", 4,
                                         params={"tasks_per_family": 2}))
    assert build_taskset(config).task_names == ["task0", "task1", "task2", "task3"]


def test_a_python_builder_runs_through_the_pipeline(ray_session, tmp_path):
    config = parse_config(_python_config("test_table_tasksets:planted_builder"))
    run = RunDirectory(tmp_path / "run", resume=False)
    Pipeline(config, run, resume=False).execute()
    groups = json.loads(run.file("groups.json").read_text())
    assert sorted(task for group in groups["groups"] for task in group) == list(range(6))
    rows = json.loads(run.file("comparison.json").read_text())
    assert {row["grouping"] for row in rows} == {"all", "gradtag", "random", "per_task_linear"}
