"""Multi-label tables (CSV or ARFF) as binary tasks over standardised numeric features.

Every malformed input raises :class:`ConfigError` with one line naming the file and, for an
error in a given line, its number.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from grouping.config import ConfigError, TableTaskSetConfig
from grouping.tasksets.base import TRAIN, VAL, TaskSet, random_split

LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1, "f": 0, "t": 1,
                "no": 0, "yes": 1, "n": 0, "y": 1}
NUMERIC_TYPES = ("numeric", "real", "integer")
ATTRIBUTE = re.compile(r"@attribute\s+('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)\s+(.+)",
                       re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, declared type and the line declaring it.

    ``kind`` is ``numeric``, ``nominal`` (with ``categories``), another ARFF type (``string``,
    ``date``, ``relational``), or ``untyped`` for a CSV column.
    """

    name: str
    kind: str
    line: int
    categories: tuple[str, ...] = ()

    @property
    def binary(self) -> bool:
        """A nominal attribute whose two categories read as 0 and 1."""
        values = {LABEL_VALUES.get(category.lower()) for category in self.categories}
        return self.kind == "nominal" and len(self.categories) == 2 and values == {0, 1}


@dataclass(frozen=True)
class RawTable:
    """A table as read: columns in data-row order, values as text, each row's line number."""

    path: Path
    columns: list[Column]
    values: np.ndarray
    lines: np.ndarray


def _open_text(path: Path) -> TextIO:
    """UTF-8 text (a leading byte-order mark dropped), gzip-compressed for a ``.gz`` name."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _check_names(path: Path, columns: list[Column]) -> None:
    seen = set()
    for column in columns:
        if column.name in seen:
            raise ConfigError(f"{path} line {column.line}: column {column.name!r} appears twice")
        seen.add(column.name)


def _table(path: Path, columns: list[Column], rows: list[list[str]],
           lines: list[int]) -> RawTable:
    if not rows:
        raise ConfigError(f"{path}: no data rows")
    _check_names(path, columns)
    return RawTable(path, columns, np.array(rows, dtype=str), np.array(lines))


def _field_count_error(path: Path, line: int, expected: int, found: int) -> ConfigError:
    return ConfigError(f"{path} line {line}: expected {expected} fields, found {found}")


def read_csv(path: Path) -> RawTable:
    """A CSV file with a header row of column names, comma separated, optionally quoted."""
    with _open_text(path) as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{path} line 1: expected a header row of column names")
        columns = [Column(name.strip(), "untyped", 1) for name in header]
        rows, lines = [], []
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(columns):
                raise _field_count_error(path, reader.line_num, len(columns), len(fields))
            rows.append([field.strip() for field in fields])
            lines.append(reader.line_num)
    return _table(path, columns, rows, lines)


def _attribute(path: Path, line: int, text: str) -> Column:
    match = ATTRIBUTE.fullmatch(text)
    if match is None:
        raise ConfigError(f"{path} line {line}: expected '@attribute NAME TYPE'")
    name, kind = _unquote(match.group(1)), match.group(2).strip()
    if kind.startswith("{"):
        if not kind.endswith("}"):
            raise ConfigError(f"{path} line {line}: nominal type of {name!r} lacks its '}}'")
        categories = tuple(_unquote(value) for value in kind[1:-1].split(","))
        return Column(name, "nominal", line, categories)
    word = kind.split()[0].lower()
    if word in NUMERIC_TYPES:
        return Column(name, "numeric", line)
    if word in ("string", "date", "relational"):
        return Column(name, word, line)
    raise ConfigError(f"{path} line {line}: unknown type {kind!r} of attribute {name!r}")


def _sparse_fields(path: Path, line: int, text: str, columns: list[Column]) -> list[str]:
    """A sparse row ``{index value, ...}``; absent numeric values are 0, absent nominal
    values the first declared category (the ARFF convention)."""
    fields = [column.categories[0] if column.kind == "nominal" else "0" for column in columns]
    if not text.endswith("}"):
        raise ConfigError(f"{path} line {line}: sparse row lacks its closing '}}'")
    for entry in filter(None, (part.strip() for part in text[1:-1].split(","))):
        index, _, value = entry.partition(" ")
        if not index.isdigit() or not value.strip():
            raise ConfigError(f"{path} line {line}: expected 'index value' in a sparse row, "
                              f"found {entry!r}")
        if int(index) >= len(columns):
            raise ConfigError(f"{path} line {line}: sparse index {index} beyond the "
                              f"{len(columns)} attributes")
        fields[int(index)] = _unquote(value)
    return fields


def _dense_fields(path: Path, line: int, text: str, count: int) -> list[str]:
    reader = csv.reader([text], quotechar="'", skipinitialspace=True)
    fields = [_unquote(field) for field in next(reader)]
    if len(fields) != count:
        raise _field_count_error(path, line, count, len(fields))
    return fields


def read_arff(path: Path) -> RawTable:
    """A dense or sparse ARFF file: '%' comment lines, @relation, @attribute NAME TYPE lines,
    then @data rows, one per line."""
    columns: list[Column] = []
    rows, lines = [], []
    in_data = False
    with _open_text(path) as handle:
        for line, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text or text.startswith("%"):
                continue
            if in_data:
                rows.append(_sparse_fields(path, line, text, columns) if text.startswith("{")
                            else _dense_fields(path, line, text, len(columns)))
                lines.append(line)
                continue
            keyword = text.split(None, 1)[0].lower()
            if keyword == "@attribute":
                columns.append(_attribute(path, line, text))
            elif keyword == "@data":
                if not columns:
                    raise ConfigError(f"{path} line {line}: @data before any @attribute")
                in_data = True
            elif keyword != "@relation":
                raise ConfigError(f"{path} line {line}: expected @relation, @attribute or "
                                  f"@data, found {text[:40]!r}")
    if not in_data:
        raise ConfigError(f"{path}: no @data section")
    return _table(path, columns, rows, lines)


def read_table(path: Path, file_format: str) -> RawTable:
    """Read a CSV or ARFF file; unreadable files raise ConfigError naming them."""
    reader = read_csv if file_format == "csv" else read_arff
    try:
        return reader(path)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path}: cannot read as {file_format.upper()} ({error})") from None


def in_data_order(columns: list[Column], count: int, at_end: bool) -> list[Column]:
    """The header's columns in the order of the data rows, for labels taken by position.

    If the ``count`` columns at the chosen end are not all binary but the ``count`` columns at
    the other end are, the header is taken to declare the label block at the wrong end (as
    MULAN's yeast.arff does: Class1..Class14 declared first, written last in every row); that
    block is moved to the chosen end so that the tasks keep their declared names.
    """
    size = len(columns)
    chosen = columns[size - count:] if at_end else columns[:count]
    other = columns[:count] if at_end else columns[size - count:]
    if all(column.binary for column in chosen) or not all(column.binary for column in other):
        return columns
    if at_end:
        return columns[count:] + columns[:count]
    return columns[size - count:] + columns[:size - count]


def label_positions(config: TableTaskSetConfig, table: RawTable) -> tuple[list[int], list[Column]]:
    """Positions of the label columns in the data rows, and the columns in data order."""
    columns, path = table.columns, table.path
    if config.labels is not None:
        index = {column.name: position for position, column in enumerate(columns)}
        missing = [name for name in config.labels if name not in index]
        if missing:
            raise ConfigError(f"{path}: no column named {missing[0]!r} (taskset.labels)")
        positions = [index[name] for name in config.labels]
    else:
        count = config.first_labels or config.last_labels
        if count >= len(columns):
            raise ConfigError(f"{path}: {count} label columns leave no feature among its "
                              f"{len(columns)} columns")
        columns = in_data_order(columns, count, at_end=config.last_labels is not None)
        start = len(columns) - count if config.last_labels else 0
        positions = list(range(start, start + count))
    if len(positions) == len(columns):
        raise ConfigError(f"{path}: every column is a label; no feature column remains")
    return positions, columns


def _first_bad(table: RawTable, values: np.ndarray, bad: np.ndarray,
               columns: list[Column]) -> tuple[int, str, Column]:
    row, column = np.argwhere(bad)[0]
    return int(table.lines[row]), str(values[row, column]), columns[column]


def label_matrix(table: RawTable, positions: list[int], columns: list[Column]) -> np.ndarray:
    """[n, T] uint8 labels; every value must read as 0 or 1 (also true/false, yes/no)."""
    values = table.values[:, positions]
    lookup = np.vectorize(lambda text: LABEL_VALUES.get(text.lower(), -1), otypes=[np.int8])
    labels = lookup(values)
    if (labels < 0).any():
        line, text, column = _first_bad(table, values, labels < 0,
                                        [columns[p] for p in positions])
        raise ConfigError(f"{table.path} line {line}: label {column.name!r} must be 0 or 1, "
                          f"found {text!r}")
    return labels.astype(np.uint8)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return np.nan


def feature_matrix(table: RawTable, positions: list[int], columns: list[Column]) -> np.ndarray:
    """[n, F] float64 features; every value must be a finite number."""
    chosen = [columns[p] for p in positions]
    for column in chosen:
        if column.kind not in ("numeric", "nominal", "untyped"):
            raise ConfigError(f"{table.path} line {column.line}: attribute {column.name!r} is "
                              f"{column.kind}; feature columns must be numeric")
    values = table.values[:, positions]
    numbers = np.vectorize(_number, otypes=[np.float64])(values)
    bad = ~np.isfinite(numbers)
    if bad.any():
        line, text, column = _first_bad(table, values, bad, chosen)
        raise ConfigError(f"{table.path} line {line}: feature {column.name!r} must be a finite "
                          f"number, found {text!r}")
    return numbers


def standardize_on(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column by the statistics of ``rows``; a column constant
    on those rows is set to zero everywhere."""
    mean = features[rows].mean(axis=0)
    scale = features[rows].std(axis=0)
    varies = scale > 0
    scaled = (features - mean) / np.where(varies, scale, 1.0)
    return np.where(varies, scaled, 0.0).astype(np.float32)


def load_table(config: TableTaskSetConfig, seed: int) -> TaskSet:
    """The task set of a multi-label table: one binary task per label column (named after
    it), the other columns as features standardised on the training split, and a seeded
    random train/validation/test split."""
    table = read_table(config.path, config.file_format)
    positions, columns = label_positions(config, table)
    labels = label_matrix(table, positions, columns)
    chosen = set(positions)
    features = feature_matrix(table, [p for p in range(len(columns)) if p not in chosen],
                              columns)
    split = random_split(len(labels), config.splits.train, config.splits.val,
                         np.random.default_rng(seed))
    if not ((split == TRAIN).any() and (split == VAL).any()):
        raise ConfigError(f"taskset.splits: {config.path} has {len(labels)} rows, too few for "
                          "a training and a validation split")
    features = standardize_on(features, np.flatnonzero(split == TRAIN))
    return TaskSet(features, labels, split, [columns[p].name for p in positions])
