"""SNAP ground-truth community files (Yang and Leskovec, ICDM 2012) as labelling tasks."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grouping.config import ConfigError, SnapTaskSetConfig
from grouping.tasksets.base import random_split
from grouping.tasksets.graph import CommunityGraph


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


_READ_ERRORS = (OSError, EOFError, UnicodeDecodeError)


def _data_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(1-based line number, line, its fields) of every line with data ('#' comments and
    blank lines skipped, still counted)."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split("#", 1)[0].split()
            if fields:
                yield number, line, fields


def _first_bad_line(path: Path) -> str:
    """Where an edge list stops being pairs of integer ids: "line N: ..." (1-based, counting
    comment lines), found by reading the file again on the error path only."""
    width = None
    for number, line, fields in _data_lines(path):
        try:
            [int(field) for field in fields]
        except ValueError:
            return f"line {number}: expected integer node ids, found {line.strip()!r}"
        width = width or len(fields)
        if len(fields) != width:
            return f"line {number}: {len(fields)} fields where earlier lines have {width}"
    return "unreadable rows"


def read_edge_list(path: Path) -> np.ndarray:
    """[E, 2] int64 original ids from a white-space separated edge list ('#' comments)."""
    try:
        with _open_text(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            edges = np.loadtxt(handle, comments="#", dtype=np.int64, ndmin=2)
    except ValueError:
        raise ConfigError(f"{path}: not an edge list of integer id pairs "
                          f"({_first_bad_line(path)})") from None
    except _READ_ERRORS as error:
        raise ConfigError(f"{path}: cannot read as an edge list ({error})") from None
    if len(edges) == 0:
        raise ConfigError(f"{path}: no edges (expected two integer node ids per line)")
    if edges.shape[1] < 2:
        raise ConfigError(f"{path}: expected two integer node ids per line")
    return edges[:, :2]


def read_communities(path: Path) -> list[np.ndarray]:
    """One array of original node ids per non-empty, non-comment line."""
    communities = []
    try:
        for number, _, fields in _data_lines(path):
            try:
                communities.append(np.array(fields, dtype=np.int64))
            except ValueError:
                raise ConfigError(f"{path}: line {number}: expected integer node ids") from None
    except _READ_ERRORS as error:
        raise ConfigError(f"{path}: cannot read as a community file ({error})") from None
    return communities


def load_snap(config: SnapTaskSetConfig, seed: int) -> CommunityGraph:
    """The graph of ``config.edges`` with the ``num_tasks`` largest communities as tasks.

    Node ids may be arbitrary and non-contiguous; they are mapped to 0..n-1 in sorted order.
    Community members absent from the edge list are ignored. Ties in size keep file order.
    """
    raw_edges = read_edge_list(config.edges)
    ids, inverse = np.unique(raw_edges, return_inverse=True)
    edges = inverse.reshape(raw_edges.shape).astype(np.int64)
    communities = read_communities(config.communities)
    if len(communities) < config.num_tasks:
        raise ConfigError(f"taskset.num_tasks: {config.communities} holds only "
                          f"{len(communities)} communities, {config.num_tasks} requested")
    order = sorted(range(len(communities)), key=lambda c: -len(communities[c]))
    chosen = order[:config.num_tasks]
    labels = np.zeros((len(ids), config.num_tasks), np.uint8)
    for task, community in enumerate(chosen):
        members = communities[community]
        index = np.searchsorted(ids, members)
        present = (index < len(ids)) & (ids[np.minimum(index, len(ids) - 1)] == members)
        labels[index[present], task] = 1
    rng = np.random.default_rng(seed)
    split = random_split(len(ids), config.splits.train, config.splits.val, rng)
    names = [f"community{c}" for c in chosen]
    return CommunityGraph(edges, len(ids), labels, split, names)
