"""Types shared by the recording writer and reader: per-frame array layout, writer stats and errors."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from wire.frames import FrameMeta

FRAME_FIELDS: dict[str, np.dtype] = {
    f.name: np.dtype({"int": np.int64, "float": np.float64, "bool": np.bool_}[f.type])
    for f in fields(FrameMeta)
    if f.name != "index"  # a frame's index is its position in the arrays
}
"""Name and on-disk dtype of every per-frame metadata array, in FrameMeta order."""

TRACK_FIELDS: dict[str, np.dtype] = {
    "t": np.dtype(np.int64),
    "id": np.dtype(np.int64),
    "z": np.dtype(np.float32),
    "y": np.dtype(np.float32),
    "x": np.dtype(np.float32),
    "intensity": np.dtype(np.float32),
    "dff": np.dtype(np.float32),
}
"""Columns of the growing tracks table (positions in um, t = frame index)."""


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of the background writer: what was queued, what is durably stored, and any failure."""

    frames_queued: int
    frames_stored: int
    volumes_queued: int
    volumes_stored: int
    volumes_skipped_by_policy: int
    volumes_skipped_for_space: int  # not stored: the disk kept its reserve for raw frames (storage.disk_reserve)
    track_rows_stored: int
    queue_depth: int
    behind: bool
    error: BaseException | None


class WriterError(RuntimeError):
    """The recording writer cannot take more data (failed, behind, closed) or cannot create the store."""


class WriterBehindError(WriterError):
    """The writer's bounded queue is full: this item was not stored (the writer itself still works)."""


class RecordingExistsError(WriterError, FileExistsError):
    """The output path already holds data and overwrite was not asked for."""


class RecordingError(OSError):
    """A recording cannot be opened or read (missing, foreign, unsupported or corrupt)."""


class CorruptChunkError(RecordingError):
    """One stored chunk of a recording array cannot be decoded; the rest of the recording stays readable."""
