"""The TaskSet type every builder returns and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class TaskSet:
    """T binary tasks over n shared examples.

    Attributes:
        features: [n, F] float32 model inputs (for graphs, already propagated).
        labels: [n, T] uint8 observed labels (noisy where the builder plants noise in the
            training and validation splits; the test split holds clean labels).
        split: [n] int8, TRAIN / VAL / TEST per example.
        task_names: T names.
        families: [T] planted family per task when the builder knows it, else None.
        own_columns: [T] the feature column that belongs to task k alone (its propagated
            training labels, ``features.propagated_labels``), else None: every column is
            shared. A per-task regression reads the shared columns and its own.
    """

    features: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    task_names: list[str]
    families: np.ndarray | None = None
    own_columns: np.ndarray | None = None
    family: ClassVar[str] = "binary_labels"
    """The name of this kind of task set's :class:`grouping.families.TaskFamily`."""

    def __post_init__(self) -> None:
        n, num_tasks = self.labels.shape
        if self.features.shape[0] != n or self.split.shape != (n,):
            raise ValueError("features, labels and split disagree on the number of examples")
        if len(self.task_names) != num_tasks:
            raise ValueError("task_names must name every label column")
        if self.own_columns is not None and (
                self.own_columns.shape != (num_tasks,)
                or len(np.unique(self.own_columns)) != num_tasks
                or not 0 <= self.own_columns.min() <= self.own_columns.max()
                < self.features.shape[1]):
            raise ValueError("own_columns must name one distinct feature column per task")

    @property
    def shared_columns(self) -> np.ndarray:
        """The feature columns every task reads (all of them without own columns)."""
        every = np.arange(self.features.shape[1])
        return every if self.own_columns is None else np.setdiff1d(every, self.own_columns)

    def columns_of(self, task: int) -> np.ndarray:
        """The feature columns task ``task``'s own regression reads: the shared columns,
        then its own column when the task set has them."""
        if self.own_columns is None:
            return self.shared_columns
        return np.append(self.shared_columns, self.own_columns[task])

    @property
    def num_tasks(self) -> int:
        return self.labels.shape[1]

    @property
    def num_examples(self) -> int:
        return self.labels.shape[0]

    def indices(self, split: int) -> np.ndarray:
        """Example indices of one split, ascending."""
        return np.flatnonzero(self.split == split)


def random_split(num_examples: int, train: float, val: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Assign each example to TRAIN, VAL or TEST uniformly at random by the fractions."""
    order = rng.permutation(num_examples)
    split = np.full(num_examples, TEST, dtype=np.int8)
    num_train = int(round(train * num_examples))
    num_val = int(round(val * num_examples))
    split[order[:num_train]] = TRAIN
    split[order[num_train:num_train + num_val]] = VAL
    return split
