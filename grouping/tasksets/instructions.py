"""Instruction-tuning task sets: each example is a prompt (instruction and input) with a gold
answer, and belongs to exactly one task (Super-NaturalInstructions, Wang et al., EMNLP 2022,
lay tasks out this way: a definition per task, then input/output instances)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from grouping.config import ConfigError, InstructionsTaskSetConfig
from grouping.tasksets.base import TEST, TRAIN, VAL, random_split


@dataclass(frozen=True)
class InstructionTaskSet:
    """n examples over T tasks, one task per example.

    Attributes:
        prompts: n prompt texts (the task's instruction, then the example's input).
        answers: n gold answers.
        task: [n] int64, the task of each example.
        split: [n] int8, TRAIN / VAL / TEST per example.
        task_names: T names.
        families: [T] planted family per task when the builder knows it, else None.
    """

    prompts: list[str]
    answers: list[str]
    task: np.ndarray
    split: np.ndarray
    task_names: list[str]
    families: np.ndarray | None = None
    family: ClassVar[str] = "instructions"
    """The name of this kind of task set's :class:`grouping.families.TaskFamily`."""

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.answers) != n or self.task.shape != (n,) or self.split.shape != (n,):
            raise ValueError("prompts, answers, task and split disagree on the number of "
                             "examples")
        if n and (self.task.min() < 0 or self.task.max() >= len(self.task_names)):
            raise ValueError("task ids must index task_names")

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def num_examples(self) -> int:
        return len(self.prompts)

    def indices(self, split: int) -> np.ndarray:
        """Example indices of one split, ascending."""
        return np.flatnonzero(self.split == split)

    def examples_of(self, tasks: np.ndarray, split: int) -> np.ndarray:
        """Example indices of the given tasks in one split, ascending."""
        return np.flatnonzero((self.split == split) & np.isin(self.task, tasks))


def prompt_text(instruction: str, text: str) -> str:
    """The prompt of one example: the instruction, the input, then the answer cue."""
    return f"{instruction.strip()}\nInput: {text.strip()}\nOutput: "


_SPLITS = {"train": TRAIN, "val": VAL, "validation": VAL, "dev": VAL, "test": TEST}


def _read_records(path: Path) -> list[tuple[str, int, dict]]:
    """(file name, line number, record) of every non-blank line of the JSONL files."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"taskset.path: no .jsonl file in {path}")
    records = []
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ConfigError(f"{file} line {number}: not valid JSON "
                                      f"({error.msg})") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"{file} line {number}: expected a JSON object")
                records.append((str(file), number, record))
    return records


def _text(record: dict, field: str, where: str, required: bool = True) -> str | None:
    value = record.get(field)
    if isinstance(value, list):
        value = value[0] if value and isinstance(value[0], str) else None
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {field!r} must be a string (or a list of strings)")
    return value


def load_instructions(config: InstructionsTaskSetConfig, seed: int) -> InstructionTaskSet:
    """Read JSONL instruction data: one file per task (the task is the file's stem) or a
    task field in each record; the instruction, input and output fields as the config names
    them (an output given as a list counts its first entry as the gold answer). A record's
    split field, when present, assigns it; otherwise each task's examples are split at random
    by ``splits``. The ``num_tasks`` tasks with the most examples are kept (ties by name)."""
    fields = config.fields
    per_task: dict[str, list[tuple[str, str, int | None]]] = {}
    for file, number, record in _read_records(config.path):
        where = f"{file} line {number}"
        task = (_text(record, fields.task, where) if fields.task in record
                else Path(file).name.removesuffix(".jsonl"))
        instruction = _text(record, fields.instruction, where)
        text = _text(record, fields.input, where)
        answer = _text(record, fields.output, where)
        split_name = _text(record, fields.split, where, required=False)
        if split_name is not None and split_name.lower() not in _SPLITS:
            raise ConfigError(f"{where}: field {fields.split!r} must be one of "
                              f"{sorted(_SPLITS)}, found {split_name!r}")
        split = None if split_name is None else _SPLITS[split_name.lower()]
        per_task.setdefault(task, []).append((prompt_text(instruction, text), answer, split))
    ranked = sorted(per_task, key=lambda name: (-len(per_task[name]), name))
    if len(ranked) < config.num_tasks:
        raise ConfigError(f"taskset.num_tasks: {config.path} holds {len(ranked)} tasks, "
                          f"fewer than {config.num_tasks}")
    names = sorted(ranked[:config.num_tasks])
    rng = np.random.default_rng(seed)
    prompts, answers, tasks, splits = [], [], [], []
    for number, name in enumerate(names):
        examples = per_task[name]
        drawn = random_split(len(examples), config.splits.train, config.splits.val, rng)
        for (prompt, answer, given), split in zip(examples, drawn):
            prompts.append(prompt)
            answers.append(answer)
            tasks.append(number)
            splits.append(split if given is None else given)
    return InstructionTaskSet(prompts, answers, np.array(tasks, np.int64),
                              np.array(splits, np.int8), names)
