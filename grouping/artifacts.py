"""Run directory: atomic writes, the manifest, and the stage cache behind ``--resume``."""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grouping.config import ConfigError

MANIFEST = "manifest.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "ray", "numpy", "cvxpy", "torch-geometric", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


class RunDirectory:
    """``results/<run>/``: every file written atomically; stages recorded in manifest.json."""

    def __init__(self, path: str | Path, resume: bool) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--output: {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()) and not resume:
            raise ConfigError(f"--output: {self.path} already holds a run; pass --resume to "
                              "continue it or choose another --output")
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / MANIFEST
        self.manifest: dict[str, Any] = (json.loads(manifest.read_text()) if manifest.is_file()
                                         else {"stages": {}})
        self.manifest["versions"] = _versions()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.file(name), text.encode())

    def write_json(self, name: str, value: Any) -> None:
        self.write_text(name, json.dumps(value, indent=2, default=float) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def save_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write_bytes(self.file(name), buffer.getvalue())

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.file(name), buffer.getvalue())

    def save_torch(self, name: str, value: Any) -> None:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        atomic_write_bytes(self.file(name), buffer.getvalue())

    def load_torch(self, name: str) -> Any:
        return torch.load(self.file(name), weights_only=True)

    def load_array(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.file(name), mmap_mode="r" if mmap else None)

    def load_arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.file(name)) as data:
            return {key: data[key] for key in data.files}

    def stage_is_current(self, stage: str, digest: str) -> bool:
        record = self.manifest["stages"].get(stage)
        return bool(record and record["digest"] == digest
                    and all(self.file(name).is_file() for name in record["files"]))

    def run_stage(self, stage: str, digest: str, files: list[str], compute: Callable[[], None],
                  resume: bool) -> bool:
        """Run ``compute`` (which writes ``files``) unless a resumed run already holds the
        stage with the same digest. Returns whether it ran; records its wall time."""
        if resume and self.stage_is_current(stage, digest):
            return False
        start = time.perf_counter()
        compute()
        self.manifest["stages"][stage] = {"digest": digest, "files": files,
                                          "seconds": time.perf_counter() - start,
                                          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.write_json(MANIFEST, self.manifest)
        return True

    def stage_seconds(self) -> dict[str, float]:
        return {name: record["seconds"] for name, record in self.manifest["stages"].items()}
