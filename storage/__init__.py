"""OME-Zarr (Zarr v3, NGFF 0.5) recording store: a durable background writer and a reader."""

from storage.reader import RecordingReader
from storage.records import (
    CorruptChunkError,
    RecordingError,
    RecordingExistsError,
    WriterBehindError,
    WriterError,
    WriterStats,
)
from storage.writer import RecordingWriter

__all__ = [
    "CorruptChunkError",
    "RecordingError",
    "RecordingExistsError",
    "RecordingReader",
    "RecordingWriter",
    "WriterBehindError",
    "WriterError",
    "WriterStats",
]
