"""The on-disk layout of a recording: array names, codecs, chunking and OME-NGFF 0.5 metadata."""

from __future__ import annotations

from typing import Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from storage.collection import add_image, write_ome_xml
from storage.records import FRAME_FIELDS, TRACK_FIELDS

FORMAT_NAME = "deepz-recording"
FORMAT_VERSION = 2  # 2: NGFF collection root (images 0 = raw, 1 = volumes), volumes stored densely
ATTRS_KEY = "deepz"
RAW_NAME = "raw"
VOLUME_NAME = "volumes"
RAW_IMAGE = "0"
VOLUME_IMAGE = "1"
RAW_ARRAY = f"{RAW_IMAGE}/0"
VOLUME_ARRAY = f"{VOLUME_IMAGE}/0"
"""Only the volumes computed, densely: row i is the volume of frame VOLUME_T_ARRAY[i]."""
FRAMES_GROUP = "frames"
VOLUME_T_ARRAY = "volume_t"
TRACKS_GROUP = "tracks"
TRACES_GROUP = "traces"
UNITS_KEY = "units"
FRAME_UNITS = {
    "image_number": "count", "camera_time_s": "second", "host_time_s": "second (unix epoch)",
    "focus_z_um": "micrometer", "exposure_ms": "millisecond", "lost_before": "frames",
    "volume_skipped": "bool",
}  # fmt: skip
TRACK_UNITS = {
    "t": "frame index", "id": "track id", "z": "micrometer", "y": "micrometer", "x": "micrometer",
    "intensity": "camera counts (ADU)", "dff": "dF/F (ratio to baseline)",
}  # fmt: skip
TRACE_UNITS = {"ids": "track id", "t": "frame index", "dff": "dF/F (ratio to baseline)"}
TABLE_CHUNK = 65536
RAW_SHARD_BYTES = 32 * 2**20
"""Raw frames are buffered and written one shard (about this many bytes) at a time."""
QUEUE_BYTES = 512 * 2**20


Compression = Literal["zstd", "lz4"]


DEFAULT_COMPRESSION: Compression = "lz4"
"""Measured fastest here for both streams (bench/results/storage-cpu-2026-11-21.json); zstd packs smaller."""


def compressors(compression: Compression = "zstd") -> list:
    """Lossless blosc level 1 with bit-shuffle (zstd: smaller, lz4: faster) and a crc32c per chunk."""
    return [BloscCodec(cname=compression, clevel=1, shuffle="bitshuffle"), Crc32cCodec()]


def raw_shard_frames(frame_shape: tuple[int, int]) -> int:
    """Frames per raw shard: about RAW_SHARD_BYTES, at least 1 and at most 256."""
    return int(np.clip(RAW_SHARD_BYTES // (2 * frame_shape[0] * frame_shape[1]), 1, 256))


def default_queue_frames(frame_shape: tuple[int, int]) -> int:
    """Writer queue length: about QUEUE_BYTES of frames (10 s of 512x512 at 100 Hz), 8 to 1024 frames."""
    return int(np.clip(QUEUE_BYTES // (2 * frame_shape[0] * frame_shape[1]), 8, 1024))


def plane_geometry(planes_um: np.ndarray) -> tuple[float, float]:
    """(step, first plane) in um of the volume z axis; NGFF needs a grid, exact planes are in attrs."""
    if len(planes_um) < 2:
        return 1.0, float(planes_um[0]) if len(planes_um) else 0.0
    return float(np.mean(np.diff(planes_um))), float(planes_um[0])


def volume_time_axis(volume_t: np.ndarray, frame_interval_s: float) -> tuple[float, float]:
    """(step, first time) in s of the dense volumes' NGFF t axis; their frame indices are VOLUME_T_ARRAY."""
    t = np.asarray(volume_t, np.float64) * frame_interval_s
    if len(t) < 2:
        return frame_interval_s, float(t[0]) if len(t) else 0.0
    return float((t[-1] - t[0]) / (len(t) - 1)) or frame_interval_s, float(t[0])


def _table(group: zarr.Group, columns: dict[str, np.dtype], units: dict[str, str]) -> None:
    group.update_attributes({UNITS_KEY: units})
    for name, dtype in columns.items():
        group.create_array(
            name, shape=(0,), chunks=(TABLE_CHUNK,), dtype=dtype, compressors=compressors(), fill_value=0,
            attributes={"unit": units[name]},
        )  # fmt: skip


def create_layout(
    root: zarr.Group,
    *,
    frame_shape: tuple[int, int],
    pixel_size_um: float,
    frame_interval_s: float,
    planes_um: np.ndarray | None,
    shard_frames: int,
    compression: Compression,
    volume_upsample: int = 1,
    volume_interval_s: float | None = None,
) -> None:
    """Create every group and (empty) array of a new recording under ``root`` (tables always use zstd).

    Volumes may lie on a grid ``volume_upsample`` times finer than the frames (super-resolution models);
    their pixel centres follow the half-pixel convention, hence the NGFF translation of the first pixel.
    ``volume_interval_s`` is the expected time between stored volumes (the writer fits it at close).
    """
    h, w = frame_shape
    raw = add_image(root, RAW_NAME, "tyx", (frame_interval_s, pixel_size_um, pixel_size_um), (0, 0, 0))
    raw.create_array(
        "0",
        shape=(0, h, w),
        chunks=(1, h, w),
        shards=(shard_frames, h, w),
        dtype=np.uint16,
        compressors=compressors(compression),
        fill_value=0,
        dimension_names=("t", "y", "x"),
    )
    _table(root.create_group(FRAMES_GROUP), FRAME_FIELDS, FRAME_UNITS)
    if planes_um is not None:
        dz, z0 = plane_geometry(planes_um)
        k, u = len(planes_um), volume_upsample
        h, w, vpx, v0 = h * u, w * u, pixel_size_um / u, -pixel_size_um * (u - 1) / (2 * u)
        dt = volume_interval_s or frame_interval_s
        volumes = add_image(root, VOLUME_NAME, "tzyx", (dt, dz, vpx, vpx), (0, z0, v0, v0))
        volumes.create_array(
            "0",
            shape=(0, k, h, w),
            chunks=(1, 1, h, w),
            shards=(1, k, h, w),
            dtype=np.uint16,
            compressors=compressors(compression),
            fill_value=0,
            dimension_names=("t", "z", "y", "x"),
        )
        root.create_array(
            VOLUME_T_ARRAY,
            shape=(0,),
            chunks=(TABLE_CHUNK,),
            dtype=np.int64,
            compressors=compressors(),
            fill_value=0,
            attributes={"unit": "frame index", "of": VOLUME_ARRAY},
        )
    _table(root.create_group(TRACKS_GROUP), TRACK_FIELDS, TRACK_UNITS)
    write_ome_xml(root)
