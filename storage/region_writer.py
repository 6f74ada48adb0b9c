"""Volumes of an existing recording written region by region, by several processes at once (cluster replay).

A region is a range of frames whose volumes (stored densely, one row per computed frame) fill whole chunks: no
two regions share a chunk, so workers never write the same file. Each region's volumes are written (fsynced)
before its completion marker, one chunk of the ``regions/done`` array per region, so a re-run after a killed
worker or client computes only what is missing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage import collection, layout
from storage.jsonable import to_json
from storage.records import RecordingError
from storage.synced_store import SyncedLocalStore

REGIONS_GROUP = "regions"
PENDING_REASON = (
    "volumes not finished: a cluster replay stopped before every region was computed; run the same "
    "`deepz replay ... --cluster` command again to compute only the missing regions"
)


@dataclass(frozen=True, slots=True)
class Region:
    """Frames [start, stop) of a recording, the ``index``-th region of its plan."""

    index: int
    start: int
    stop: int


def _open(path: Path) -> zarr.Group:
    try:
        return zarr.open_group(SyncedLocalStore(path), mode="r+")
    except FileNotFoundError as exc:
        raise RecordingError(f"no recording at {path}: {exc}") from exc


class VolumeRegions:
    """The region plan of one recording's volumes: which regions exist, which are done; writes and finishes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._root = _open(self.path)
        if REGIONS_GROUP not in self._root:
            raise RecordingError(f"{self.path} has no region plan: it was not written region by region")
        group = self._root[REGIONS_GROUP]
        plan = group.attrs.asdict()
        self.n_frames: int = int(plan["n_frames"])
        self.frames_per_region: int = int(plan["frames_per_region"])
        self.volume_every: int = int(plan["volume_every"])
        self._done = group["done"]
        self.regions: list[Region] = [
            Region(i, start, min(start + self.frames_per_region, self.n_frames))
            for i, start in enumerate(range(0, self.n_frames, self.frames_per_region))
        ]

    @staticmethod
    def planned(path: str | Path) -> bool:
        """Whether the store at ``path`` has a region plan (it was started region by region)."""
        return (Path(path) / REGIONS_GROUP / "zarr.json").is_file()

    @classmethod
    def start(cls, path: str | Path, *, frames_per_region: int) -> VolumeRegions:
        """Plan the regions of a recording whose raw frames are stored and whose volumes are to be computed.

        Volumes are stored densely (every volume_every-th frame has one); ``frames_per_region`` is rounded up
        so that each region's volume rows fill whole chunks. The recording is marked unfinished until finish().
        """
        root = _open(Path(path))
        header = dict(root.attrs[layout.ATTRS_KEY])
        n_frames, every = int(header["progress"]["frames"]), int(header["volume_every"])
        volumes = root[layout.VOLUME_ARRAY]
        volumes.resize((math.ceil(n_frames / every), *volumes.shape[1:]))
        step = every * (volumes.shards or volumes.chunks)[0]
        per_region = max(1, math.ceil(max(1, frames_per_region) / step)) * step
        group = root.create_group(
            REGIONS_GROUP,
            attributes={"n_frames": n_frames, "frames_per_region": per_region, "volume_every": every},
        )
        group.create_array("done", shape=(math.ceil(n_frames / per_region),), chunks=(1,), dtype=np.uint8,
                           fill_value=0, compressors=layout.compressors())  # fmt: skip
        header.update(complete=False, stopped_reason=PENDING_REASON)
        root.update_attributes({layout.ATTRS_KEY: header})
        root.store.sync_directories()
        return cls(path)

    @property
    def done(self) -> np.ndarray:
        """(n_regions,) bool: regions whose volumes are durably stored."""
        return self._done[:].astype(bool)

    def pending(self) -> list[Region]:
        """The regions still to compute."""
        done = self.done
        return [r for r in self.regions if not done[r.index]]

    def volume_frames(self, region: Region) -> np.ndarray:
        """Frame indices in ``region`` that get a volume (the recording's volume policy: every N-th frame)."""
        t = np.arange(region.start, region.stop)
        return t[t % self.volume_every == 0]

    def write(self, region: Region, volumes: np.ndarray) -> None:
        """Store the volumes (V, K, H, W) of ``region``'s volume_frames, then mark the region done (durably)."""
        frames = self.volume_frames(region)
        if len(volumes) != len(frames):
            raise ValueError(f"region {region.index} needs {len(frames)} volumes, got {len(volumes)}")
        first = -(-region.start // self.volume_every)  # dense rows: one per volume frame before this region
        if len(frames):
            self._root[layout.VOLUME_ARRAY][first : first + len(frames)] = volumes  # chunks written concurrently
        self._root.store.sync_directories()
        self._done[region.index] = 1
        self._root.store.sync_directories()

    def finish(self, summary: dict[str, Any] | None = None) -> int:
        """Index every region's volumes, fit the volumes' time axis, mark the recording complete; returns the
        number of volumes."""
        missing = len(self.pending())
        if missing:
            raise RecordingError(f"{self.path}: {missing} of {len(self.regions)} regions are not computed yet")
        t = np.concatenate([self.volume_frames(r) for r in self.regions]).astype(np.int64)
        volume_t = self._root[layout.VOLUME_T_ARRAY]
        volume_t.resize((len(t),))
        volume_t[:] = t
        header = dict(self._root.attrs[layout.ATTRS_KEY])
        collection.set_time_axis(self._root[layout.VOLUME_IMAGE],
                                 *layout.volume_time_axis(t, float(header["frame_interval_s"])))  # fmt: skip
        collection.write_ome_xml(self._root)
        self._root.store.sync_directories()
        header["progress"] = {**header["progress"], "volumes": len(t), "host_time_s": time.time()}
        header.update(complete=True, stopped_reason=None, summary=to_json(summary))
        self._root.update_attributes({layout.ATTRS_KEY: header})
        self._root.store.sync_directories()
        return len(t)
