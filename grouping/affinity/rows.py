"""The rows of the gradient-feature table: one per (example, task) pair that a surrogate uses.

Rows are sorted by task, then split (train before validation), then example. For rare labels
the negatives of a task may be subsampled (all positives kept); kept negatives then carry the
weight (negatives in split) / (negatives kept), so weighted losses stay unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grouping.tasksets import TRAIN, VAL, InstructionTaskSet, TaskSet


@dataclass(frozen=True)
class RowTable:
    """Parallel arrays over R rows, plus per-task offsets: the rows of task t and split s
    (TRAIN=0, VAL=1) are ``slice(offsets[t, s], offsets[t, s + 1])``."""

    example: np.ndarray
    task: np.ndarray
    split: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.example)

    def rows_of(self, tasks: np.ndarray, split: int) -> np.ndarray:
        """Row indices of the given tasks in one split, concatenated in task order."""
        return np.concatenate([np.arange(self.offsets[t, split], self.offsets[t, split + 1])
                               for t in tasks])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"example": self.example, "task": self.task, "split": self.split,
                "label": self.label, "weight": self.weight, "offsets": self.offsets}


def instruction_rows(taskset: InstructionTaskSet) -> RowTable:
    """The training and validation examples of each instruction task, label 1 (the output is
    the gold answer's log-odds), weight 1."""
    parts = {key: [] for key in ("example", "task", "split")}
    offsets = np.zeros((taskset.num_tasks, 3), np.int64)
    count = 0
    for task in range(taskset.num_tasks):
        for split in (TRAIN, VAL):
            offsets[task, split] = count
            examples = taskset.examples_of(np.array([task]), split)
            parts["example"].append(examples)
            parts["task"].append(np.full(len(examples), task, np.int64))
            parts["split"].append(np.full(len(examples), split, np.int8))
            count += len(examples)
        offsets[task, 2] = count
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    ones = np.ones(count, np.float32)
    return RowTable(label=ones, weight=ones.copy(), offsets=offsets, **arrays)


def label_rows(taskset: TaskSet, max_negatives: int | None, seed: int) -> RowTable:
    """All training and validation rows of every binary task, negatives capped per task and
    split (``max_negatives``, drawn with ``seed``) and reweighted."""
    rng = np.random.default_rng(seed)
    parts = {key: [] for key in ("example", "task", "split", "label", "weight")}
    offsets = np.zeros((taskset.num_tasks, 3), np.int64)
    count = 0
    for task in range(taskset.num_tasks):
        for split in (TRAIN, VAL):
            offsets[task, split] = count
            examples = taskset.indices(split)
            labels = taskset.labels[examples, task]
            weights = np.ones(len(examples), np.float32)
            negatives = np.flatnonzero(labels == 0)
            if max_negatives is not None and len(negatives) > max_negatives:
                kept = np.sort(rng.choice(negatives, max_negatives, replace=False))
                keep = np.sort(np.concatenate([np.flatnonzero(labels == 1), kept]))
                weights[negatives] = len(negatives) / max_negatives
                examples, labels, weights = examples[keep], labels[keep], weights[keep]
            parts["example"].append(examples)
            parts["task"].append(np.full(len(examples), task, np.int64))
            parts["split"].append(np.full(len(examples), split, np.int8))
            parts["label"].append(labels.astype(np.float32))
            parts["weight"].append(weights)
            count += len(examples)
        offsets[task, 2] = count
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    return RowTable(offsets=offsets, **arrays)


@dataclass(frozen=True)
class GatheredRows:
    """Some rows of a per-row array: their row ids (ascending) and values, indexed by row id
    as the whole array would be, so that a worker gets only the rows it reads."""

    ids: np.ndarray
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self.values[np.searchsorted(self.ids, index)]

    @classmethod
    def of_tasks(cls, rows: RowTable, tasks: np.ndarray, values: np.ndarray) -> GatheredRows:
        """The training and validation rows of ``tasks`` read from ``values`` (a memory map
        is read at those rows only)."""
        ids = np.concatenate([np.arange(rows.offsets[task, 0], rows.offsets[task, 2])
                              for task in np.unique(tasks)])
        return cls(ids, np.asarray(values[ids]))


class MappedRows:
    """A .npy file of per-row values, opened memory-mapped where it is used (on a worker of
    the same machine), so that only the rows indexed are ever read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None}

    def _opened(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._opened().shape

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        return self._opened()[index]
