"""Run directory: atomic writes, the manifest, and the stage cache behind ``--resume``.

A run directory is a local path or a URI of any filesystem pyarrow reaches (``s3://``,
``gs://``, ``file://``, ...). For a URI, the driver works in a local copy and uploads every
file it writes as soon as it is written (temporary name, then a move), so that finished work
lives in the shared storage; a resumed run downloads that copy first. Ray Tune writes its
experiment straight to ``<run>/tune``."""

from __future__ import annotations

import io
import json
import os
import platform
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from grouping.config import ConfigError
from grouping.run_files import CONFIG, MANIFEST


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


class _RemoteCopy:
    """The run's files at a URI, mirrored from and to a local working copy."""

    def __init__(self, uri: str) -> None:
        try:
            self.filesystem, self.root = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as error:
            raise ConfigError(f"--output: cannot open {uri}: {error}") from None
        self.root = self.root.rstrip("/")
        self.uploaded: dict[str, tuple[int, int]] = {}

    def _files(self) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=True)
        return [info for info in self.filesystem.get_file_info(selector)
                if info.type == pafs.FileType.File]

    def holds_files(self) -> bool:
        return bool(self._files())

    def holds(self, name: str) -> bool:
        info = self.filesystem.get_file_info(f"{self.root}/{name}")
        return info.type == pafs.FileType.File

    def download(self, local: Path) -> None:
        """Copy every file but Tune's experiments (Tune reads those itself)."""
        for info in self._files():
            name = info.path[len(self.root) + 1:]
            if name.startswith("tune/"):
                continue
            with self.filesystem.open_input_stream(info.path) as stream:
                atomic_write_bytes(local / name, stream.read())
            stat = (local / name).stat()
            self.uploaded[name] = (stat.st_mtime_ns, stat.st_size)

    def upload(self, local: Path, name: str, data: bytes | None = None) -> None:
        """Put ``data``, the contents of ``local / name``, at the URI under ``name`` (without
        ``data``, the file is streamed from disk)."""
        target = f"{self.root}/{name}"
        folder = posixpath.dirname(target)
        temporary = f"{folder}/.{posixpath.basename(target)}.partial"
        self.filesystem.create_dir(folder, recursive=True)
        with self.filesystem.open_output_stream(temporary) as stream:
            if data is None:
                with open(local / name, "rb") as source:
                    shutil.copyfileobj(source, stream, 1 << 24)
            else:
                stream.write(data)
        self.filesystem.move(temporary, target)
        stat = (local / name).stat()
        self.uploaded[name] = (stat.st_mtime_ns, stat.st_size)

    def remove(self, folder: str) -> None:
        target = f"{self.root}/{folder}"
        if self.filesystem.get_file_info(target).type != pafs.FileType.NotFound:
            self.filesystem.delete_dir(target)
        self.uploaded = {name: stamp for name, stamp in self.uploaded.items()
                         if not name.startswith(f"{folder}/")}

    def upload_changed(self, local: Path) -> None:
        for path in sorted(local.rglob("*")):
            name = path.relative_to(local).as_posix()
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                if self.uploaded.get(name) != (stat.st_mtime_ns, stat.st_size):
                    self.upload(local, name)


class RunDirectory:
    """``results/<run>/`` (or a URI): every file written atomically; stages recorded in
    manifest.json."""

    def __init__(self, location: str | Path, resume: bool) -> None:
        """Open ``location`` for a new run (it must hold no files) or, with ``resume``, for
        continuing the run there (it must hold that run's manifest). Nothing is created or
        changed here: the first write creates the directory."""
        self.uri = str(location) if "://" in str(location) else None
        if self.uri is None:
            self.path = Path(location)
            self.remote = None
            if self.path.exists() and not self.path.is_dir():
                raise ConfigError(f"--output: {self.path} exists and is not a directory")
            holds_files = self.path.is_dir() and any(self.path.iterdir())
            holds_run = (self.path / MANIFEST).is_file()
        else:
            self.remote = _RemoteCopy(self.uri)
            self.path = Path(tempfile.mkdtemp(prefix="run-"))
            holds_files = self.remote.holds_files()
            holds_run = self.remote.holds(MANIFEST)
        if resume and not holds_run:
            raise ConfigError(f"--resume: {location} holds no run to continue (no {MANIFEST}); "
                              "drop --resume to start a run there")
        if holds_files and not resume:
            what = "a run" if holds_run else "files"
            raise ConfigError(f"--output: {location} already holds {what}; pass --resume to "
                              "continue a run there or choose another --output")
        if self.remote is not None and resume:
            self.remote.download(self.path)
        manifest = self.path / MANIFEST
        self.manifest: dict[str, Any] = (json.loads(manifest.read_text()) if manifest.is_file()
                                         else {"stages": {}})
        self.manifest["versions"] = _versions()

    def record_config(self, text: str) -> None:
        """Write the run's resolved config as ``config.yaml`` and the manifest; a resumed run
        whose config changed keeps the earlier one beside it as
        ``config-before-<time>.yaml``, so no finished run's own config is lost."""
        current = self.file(CONFIG)
        if current.is_file() and current.read_text() != text:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.write_bytes(f"config-before-{stamp}.yaml", current.read_bytes())
        self.write_text(CONFIG, text)
        self.write_json(MANIFEST, self.manifest)

    @property
    def location(self) -> str:
        """Where the run lives: its URI, or its local path."""
        return self.uri or str(self.path)

    def tune_storage(self) -> str:
        """Storage for Ray Tune experiments: ``<run>/tune`` on the run's own filesystem."""
        return f"{self.uri.rstrip('/')}/tune" if self.uri else str(self.path.resolve() / "tune")

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write one file atomically (and upload it when the run lives at a URI)."""
        atomic_write_bytes(self.file(name), data)
        if self.remote is not None:
            self.remote.upload(self.path, name, data)

    def remove(self, folder: str) -> None:
        """Delete a folder of the run (locally and at the URI)."""
        shutil.rmtree(self.file(folder), ignore_errors=True)
        if self.remote is not None:
            self.remote.remove(folder)

    def publish(self) -> None:
        """Upload files written into the local copy by other code (the report renderer)."""
        if self.remote is not None:
            self.remote.upload_changed(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def write_json(self, name: str, value: Any) -> None:
        self.write_text(name, json.dumps(value, indent=2, default=float) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def save_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array)
        self.write_bytes(name, buffer.getvalue())

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write_bytes(name, buffer.getvalue())

    def save_torch(self, name: str, value: Any) -> None:
        import torch  # imported where used: the driver checks a run directory without it

        buffer = io.BytesIO()
        torch.save(value, buffer)
        self.write_bytes(name, buffer.getvalue())

    def load_torch(self, name: str) -> Any:
        import torch

        return torch.load(self.file(name), weights_only=True)

    @contextmanager
    def array_writer(self, name: str, shape: tuple[int, ...],
                     dtype: np.dtype | type) -> Iterator[np.ndarray]:
        """A writable memory-mapped .npy array that becomes ``name`` atomically (renamed into
        place, then uploaded to the URI) when the block ends without an error; the rows
        written never all have to sit in memory."""
        target = self.file(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype=dtype, shape=shape)
            yield array
            array.flush()
            del array
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.upload(self.path, name)

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


class ShardStore:
    """Finished shards of a stage that is still running (arrays per shard, saved as each
    shard finishes), so that a resumed stage computes only the shards it lacks."""

    def __init__(self, run: RunDirectory, folder: str) -> None:
        self.run, self.folder = run, folder

    def _name(self, key: int) -> str:
        return f"{self.folder}/{key}.npz"

    def load(self, key: int) -> dict[str, np.ndarray] | None:
        name = self._name(key)
        return self.run.load_arrays(name) if self.run.file(name).is_file() else None

    def save(self, key: int, **arrays: np.ndarray) -> None:
        self.run.save_arrays(self._name(key), **arrays)

    def clear(self) -> None:
        """Drop the shards once the stage's own files are written."""
        self.run.remove(self.folder)
