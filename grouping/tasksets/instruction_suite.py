"""A seeded, offline suite of instruction tasks with planted relatedness.

Each family is one skill (a function from a shared pool of synthetic inputs to an answer);
its tasks ask for that skill in different words. Tasks of a family therefore share their
input-to-answer mapping, and pooling their few examples helps each of them, while tasks of
other families compete for the same adapter. ``answer_noise`` replaces that fraction of
training and validation answers with another answer of the family, independently per task
(test answers stay clean), so each task alone is small and noisy.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from grouping.config import InstructionsTaskSetConfig
from grouping.tasksets.base import TEST, random_split
from grouping.tasksets.instructions import InstructionTaskSet, prompt_text


@dataclass(frozen=True)
class Skill:
    """A family's skill: its name, how it draws an input, the answer it computes and the
    instructions (one per task) that ask for it."""

    name: str
    draw: Callable[[np.random.Generator], str]
    answer: Callable[[str], str]
    instructions: tuple[str, ...]


def _word(rng: np.random.Generator) -> str:
    letters = rng.choice(list(string.ascii_lowercase), int(rng.integers(3, 6)))
    return "".join(letters)


def _digits(rng: np.random.Generator) -> str:
    first, second = rng.integers(0, 10, 2)
    return f"{first} {second}"


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(10, 100)))


def _pair(text: str) -> tuple[int, int]:
    first, second = text.split()
    return int(first), int(second)


SKILLS: tuple[Skill, ...] = (
    Skill("reverse", _word, lambda w: w[::-1], (
        "Reverse the word.", "Write the letters backwards.", "Spell the word in reverse order.",
        "Give the word reversed.", "Read the word from right to left.",
        "Mirror the order of the letters.")),
    Skill("first_letter", _word, lambda w: w[0], (
        "What is the first letter?", "Give the initial letter.", "Which letter starts the word?",
        "Write the leading character.", "Name the opening letter.",
        "Return the letter at the start.")),
    Skill("last_letter", _word, lambda w: w[-1], (
        "What is the last letter?", "Give the final letter.", "Which letter ends the word?",
        "Write the closing character.", "Name the letter at the end.",
        "Return the trailing letter.")),
    Skill("length", _word, lambda w: str(len(w)), (
        "How many letters are there?", "Count the letters.", "Give the length of the word.",
        "Write the number of characters.", "How long is the word?",
        "Return the letter count.")),
    Skill("upper", _word, str.upper, (
        "Write the word in capitals.", "Convert to upper case.", "Capitalise every letter.",
        "Give the word in block letters.", "Shout the word.", "Return the word uppercased.")),
    Skill("has_vowel", _word, lambda w: "yes" if set(w) & set("aeiou") else "no", (
        "Does the word contain a vowel?", "Is there a vowel in it?", "Any of a, e, i, o, u?",
        "Answer yes if a vowel appears.", "Check the word for vowels.",
        "Does a vowel occur in the word?")),
    Skill("sum", _digits, lambda t: str(sum(_pair(t))), (
        "Add the two numbers.", "What is their sum?", "Give the total of both digits.",
        "Compute first plus second.", "Sum the pair.", "Return the addition result.")),
    Skill("max", _digits, lambda t: str(max(_pair(t))), (
        "Which number is larger?", "Give the maximum.", "Return the bigger digit.",
        "Pick the greater of the two.", "Name the highest number.", "Write the larger value.")),
    Skill("parity", _number, lambda t: "even" if int(t) % 2 == 0 else "odd", (
        "Is the number even or odd?", "Give the parity.", "Say even or odd.",
        "Classify the number by parity.", "Odd or even?", "State whether it is even.")),
    Skill("greater", _digits, lambda t: "yes" if _pair(t)[0] > _pair(t)[1] else "no", (
        "Is the first number greater than the second?", "Does the first exceed the second?",
        "Answer yes if the left digit is larger.", "Is the first one bigger?",
        "Compare: first above second?", "Is the leading number the greater one?")),
)


def _family_examples(skill: Skill, count: int, rng: np.random.Generator) -> tuple[list[str],
                                                                                  list[str]]:
    inputs = [skill.draw(rng) for _ in range(count)]
    return inputs, [skill.answer(text) for text in inputs]


def generate_suite(config: InstructionsTaskSetConfig, seed: int) -> InstructionTaskSet:
    """``num_families`` skills × ``tasks_per_family`` instructions, ``examples_per_task``
    examples per task drawn from the family's input distribution, split by ``splits``."""
    rng = np.random.default_rng(seed)
    prompts, answers, tasks, splits, names, families = [], [], [], [], [], []
    for family, skill in enumerate(SKILLS[:config.num_families]):
        for variant in range(config.tasks_per_family):
            task = len(names)
            names.append(f"{skill.name}_{variant}")
            families.append(family)
            inputs, gold = _family_examples(skill, config.examples_per_task, rng)
            split = random_split(len(inputs), config.splits.train, config.splits.val, rng)
            pool = sorted(set(gold))
            for text, answer, where in zip(inputs, gold, split):
                if where != TEST and len(pool) > 1 and rng.random() < config.answer_noise:
                    answer = str(rng.choice([other for other in pool if other != answer]))
                prompts.append(prompt_text(skill.instructions[variant], text))
                answers.append(answer)
                tasks.append(task)
                splits.append(where)
    return InstructionTaskSet(prompts, answers, np.array(tasks, np.int64),
                              np.array(splits, np.int8), names, np.array(families))
