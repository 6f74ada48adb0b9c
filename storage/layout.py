"""The on-disk layout of a recording: array names, codecs, chunking and OME-NGFF 0.5 metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from storage.records import FRAME_FIELDS, TRACK_FIELDS

FORMAT_NAME = "deepz-recording"
FORMAT_VERSION = 1
ATTRS_KEY = "deepz"
RAW_ARRAY = "raw/0"
VOLUME_ARRAY = "volumes/0"
FRAMES_GROUP = "frames"
VOLUME_T_ARRAY = "volume_t"
TRACKS_GROUP = "tracks"
TRACES_GROUP = "traces"
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


def _axis(name: str) -> dict:
    if name == "t":
        return {"name": "t", "type": "time", "unit": "second"}
    return {"name": name, "type": "space", "unit": "micrometer"}


def ngff_image_attrs(name: str, axes: str, scale: Sequence[float], translation: Sequence[float]) -> dict:
    """OME-NGFF 0.5 ``ome`` attributes of a single-resolution image group whose array is ``0``."""
    transforms = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(translation):
        transforms.append({"type": "translation", "translation": [float(v) for v in translation]})
    multiscale = {
        "name": name,
        "axes": [_axis(a) for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def plane_geometry(planes_um: np.ndarray) -> tuple[float, float]:
    """(step, first plane) in um of the volume z axis; NGFF needs a grid, exact planes are in attrs."""
    if len(planes_um) < 2:
        return 1.0, float(planes_um[0]) if len(planes_um) else 0.0
    return float(np.mean(np.diff(planes_um))), float(planes_um[0])


def _table(group: zarr.Group, columns: dict[str, np.dtype]) -> None:
    for name, dtype in columns.items():
        group.create_array(
            name, shape=(0,), chunks=(TABLE_CHUNK,), dtype=dtype, compressors=compressors(), fill_value=0
        )


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
) -> None:
    """Create every group and (empty) array of a new recording under ``root`` (tables always use zstd).

    Volumes may lie on a grid ``volume_upsample`` times finer than the frames (super-resolution models);
    their pixel centres follow the half-pixel convention, hence the NGFF translation of the first pixel.
    """
    h, w = frame_shape
    raw = root.create_group(
        "raw",
        attributes=ngff_image_attrs(
            "raw", "tyx", (frame_interval_s, pixel_size_um, pixel_size_um), (0, 0, 0)
        ),
    )
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
    _table(root.create_group(FRAMES_GROUP), FRAME_FIELDS)
    if planes_um is not None:
        dz, z0 = plane_geometry(planes_um)
        k, u = len(planes_um), volume_upsample
        h, w, vpx, v0 = h * u, w * u, pixel_size_um / u, -pixel_size_um * (u - 1) / (2 * u)
        volumes = root.create_group(
            "volumes",
            attributes=ngff_image_attrs(
                "volumes", "tzyx", (frame_interval_s, dz, vpx, vpx), (0, z0, v0, v0)
            ),
        )
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
        )
    _table(root.create_group(TRACKS_GROUP), TRACK_FIELDS)
