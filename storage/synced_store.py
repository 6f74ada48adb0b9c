"""A zarr LocalStore whose writes are atomic and fsynced, so committed data survives a crash or power loss."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_synced(path: Path, data: memoryview, exclusive: bool) -> set[Path]:
    """Write to a temporary file, fdatasync it, then rename into place; return directories to fsync."""
    dirty = {path.parent}
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        dirty.update(path.parent.parents)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fdatasync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dirty


class SyncedLocalStore(LocalStore):
    """LocalStore that fdatasyncs each file before renaming it into place, then commits renames on demand."""

    def __init__(self, root: Path | str, *, read_only: bool = False, fsync: bool = True) -> None:
        super().__init__(root, read_only=read_only)
        self.fsync = fsync
        self._dirty: set[Path] = set()

    def with_read_only(self, read_only: bool = False) -> SyncedLocalStore:
        """Same store, other access mode (zarr calls this when opening)."""
        return type(self)(self.root, read_only=read_only, fsync=self.fsync)

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not self.fsync:
            return await super()._set(key, value, exclusive=exclusive)
        if not self._is_open:
            await self._open()
        self._check_writable()
        dirty = await asyncio.to_thread(_put_synced, self.root / key, value.as_buffer_like(), exclusive)
        self._dirty.update(d for d in dirty if d.is_relative_to(self.root.parent))

    def sync_directories(self) -> None:
        """fsync every directory that gained or replaced a file since the last call."""
        dirty, self._dirty = self._dirty, set()
        for directory in sorted(dirty):
            _fsync_directory(directory)
