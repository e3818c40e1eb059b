"""The user's console: the driver's own lines and one progress bar per stage, with every other
byte a run's libraries write (Ray's start-up and core-worker lines, Tune's banners, PyG and
torch warnings, C++ log lines) sent to a log file in the run directory.

:func:`quiet` points the process's file descriptors 1 and 2 at the log file (so output from
C++ code and from handlers created at import time lands there too) and keeps duplicates of the
original descriptors for :func:`say` and :func:`bar_stream`. Without :func:`quiet` (the
driver's ``--verbose``, and the tests that call the pipeline directly) both write to the
process's current stdout and stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

_streams: dict[str, TextIO] = {}


def quiet(log_path: Path) -> None:
    """Send everything but :func:`say` and :func:`bar_stream` to ``log_path`` (appended)."""
    sys.stdout.flush()
    sys.stderr.flush()
    _streams["out"] = os.fdopen(os.dup(1), "w", buffering=1)
    _streams["err"] = os.fdopen(os.dup(2), "w", buffering=1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    logging.captureWarnings(True)


def say(text: str) -> None:
    """One line for the user (stdout, or the original stdout once :func:`quiet` ran)."""
    print(text, file=_streams.get("out", sys.stdout), flush=True)


def bar_stream() -> TextIO:
    """Where progress bars draw (stderr, or the original stderr once :func:`quiet` ran)."""
    return _streams.get("err", sys.stderr)
