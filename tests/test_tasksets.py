"""Task-set builders: SNAP files, the planted SBM, FastRP and SIGN features."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from grouping.config import ConfigError, SBMTaskSetConfig, SnapTaskSetConfig, parse_config
from grouping.tasksets import TEST, TRAIN, VAL, build_taskset
from grouping.tasksets.features import fastrp, sign_features, symmetric_adjacency
from grouping.tasksets.sbm import generate_sbm
from grouping.tasksets.snap import load_snap


def _write_snap(tmp_path, compressed: bool):
    edges = "# comment line\n" + "".join(f"{100 + 7 * a}\t{100 + 7 * b}\n" for a, b in
                                         [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (2, 3)])
    path = tmp_path / ("g.txt.gz" if compressed else "g.txt")
    if compressed:
        with gzip.open(path, "wt") as handle:
            handle.write(edges)
    else:
        path.write_text(edges)
    communities = tmp_path / "c.txt"
    communities.write_text("121 128 135\n100 107\n100 107 114 999\n")
    return path, communities


@pytest.mark.parametrize("compressed", [False, True])
def test_snap_loader_maps_ids_and_takes_the_largest_communities(tmp_path, compressed):
    edges, communities = _write_snap(tmp_path, compressed)
    config = SnapTaskSetConfig(kind="snap", edges=edges, communities=communities, num_tasks=2)
    graph = load_snap(config, seed=0)
    assert graph.num_nodes == 6
    assert graph.edges.max() == 5
    # the two largest communities: line 3 (4 ids, one absent from the graph) and line 1
    assert graph.task_names == ["community2", "community0"]
    assert graph.labels[:, 0].tolist() == [1, 1, 1, 0, 0, 0]
    assert graph.labels[:, 1].tolist() == [0, 0, 0, 1, 1, 1]


def test_snap_loader_names_the_file_of_a_malformed_line(tmp_path):
    edges = tmp_path / "bad.txt"
    edges.write_text("1 2\n3 x\n")
    communities = tmp_path / "c.txt"
    communities.write_text("1 2\n")
    config = SnapTaskSetConfig(kind="snap", edges=edges, communities=communities, num_tasks=2)
    with pytest.raises(ConfigError, match="bad.txt"):
        load_snap(config, seed=0)


def test_sbm_is_seeded_and_plants_noisy_families():
    config = SBMTaskSetConfig(kind="sbm", num_blocks=6, block_size=100, num_families=3,
                        tasks_per_family=2, drop_fraction=0.1, flip_fraction=0.2)
    first, second = generate_sbm(config, 4), generate_sbm(config, 4)
    assert np.array_equal(first.edges, second.edges)
    assert np.array_equal(first.labels, second.labels)
    assert not np.array_equal(first.labels, generate_sbm(config, 5).labels)
    block = np.repeat(np.arange(6), 100)
    test = first.split == TEST
    for task, family in enumerate(first.families):
        positives = first.labels[:, task] == 1
        # clean test labels: a subset of the family's block, about 90% of it
        assert np.all(block[positives & test] == family)
        assert 0.8 < positives[test & (block == family)].mean() < 0.97
        for part in (TRAIN, VAL):
            inside = first.split == part
            outside_block = positives & inside & (block != family)
            assert outside_block.sum() > 0
    assert first.families.tolist() == [0, 0, 1, 1, 2, 2]
    within = (block[first.edges[:, 0]] == block[first.edges[:, 1]]).mean()
    assert within > 0.5


def test_fastrp_rows_are_unit_norm_per_hop_and_separate_blocks():
    config = SBMTaskSetConfig(kind="sbm", num_blocks=4, block_size=80, p_in=0.1, p_out=0.005,
                        num_families=1, tasks_per_family=1)
    graph = generate_sbm(config, 0)
    adjacency = symmetric_adjacency(graph.edges, graph.num_nodes)
    embedding = fastrp(adjacency, 16, 3, -0.5, np.random.default_rng(0))
    assert embedding.shape == (320, 48)
    norms = np.linalg.norm(embedding.reshape(320, 3, 16), axis=2)
    assert np.allclose(norms[norms > 0], 1, atol=1e-5)
    block = np.repeat(np.arange(4), 80)
    similarity = embedding @ embedding.T
    same = block[:, None] == block[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.5


def test_sign_features_match_a_scipy_propagation():
    adjacency = symmetric_adjacency(np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]]), 4)
    features = np.arange(8, dtype=np.float32).reshape(4, 2)
    degree = np.asarray(adjacency.sum(1)).ravel()
    normalised = sp.diags(degree ** -0.5) @ adjacency @ sp.diags(degree ** -0.5)
    expected = np.hstack([features, normalised @ features, normalised @ normalised @ features])
    assert np.allclose(sign_features(adjacency, features, 2), expected, atol=1e-5)


def test_given_features_must_match_the_node_count(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((5, 3), np.float32))
    config = parse_config({"taskset": {"kind": "sbm", "num_blocks": 2, "block_size": 10,
                                       "num_families": 1, "tasks_per_family": 3},
                           "features": {"kind": "given", "path": str(path)},
                           "affinity": {"subset_size": 2}})
    with pytest.raises(ConfigError, match="features.path"):
        build_taskset(config)
