"""RecordingReader: opens a recording (complete or interrupted): frames, volumes, tracks and traces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from storage import collection, layout
from storage.calibration import ScanRecord, scan_records
from storage.recorded_array import RecordedArray
from storage.records import FRAME_FIELDS, TRACK_FIELDS, CorruptChunkError, RecordingError
from storage.tables import traces_from_tracks


def _foreign(path: Path) -> RecordingError:
    return RecordingError(
        f"{path} is a Zarr store written by another program (it has no '{layout.ATTRS_KEY}' recording "
        "attributes), so deepz refuses to read it as a recording. Open it with zarr or ome-zarr instead."
    )


def _open_root(path: Path) -> zarr.Group:
    if not path.exists():
        raise RecordingError(
            f"no recording at {path}: the path does not exist. Check the path and the mount."
        )
    if not path.is_dir() or not (path / "zarr.json").is_file():
        raise RecordingError(
            f"{path} is not a Zarr v3 store (no zarr.json inside); a deepz recording is one."
        )
    try:
        node = zarr.open(LocalStore(path, read_only=True), mode="r")
    except Exception as exc:  # noqa: BLE001 - permission, JSON and zarr format errors all mean "cannot open"
        raise RecordingError(f"cannot open recording {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(node, zarr.Group):
        raise _foreign(path)
    return node


class RecordingReader:
    """Read access to one recording; shows exactly the data the writer committed, also after a crash."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._root = _open_root(self.path)
        header = self._root.attrs.get(layout.ATTRS_KEY)
        if not isinstance(header, dict) or header.get("format") != layout.FORMAT_NAME:
            raise _foreign(self.path)
        if header["format_version"] != layout.FORMAT_VERSION:
            newer = header["format_version"] > layout.FORMAT_VERSION
            raise RecordingError(
                f"{self.path} uses recording format {header['format_version']}, "
                + (f"newer than this deepz (format {layout.FORMAT_VERSION}); upgrade deepz-live to read it."
                   if newer else f"older than this deepz reads (format {layout.FORMAT_VERSION}); open it "
                   "with the deepz-live release that wrote it, or with zarr directly.")
            )  # fmt: skip
        self._header = header
        self._progress = header["progress"]
        self.n_frames: int = int(self._progress["frames"])
        self.frame_shape: tuple[int, int] = tuple(header["frame_shape"])
        self.pixel_size_um: float = header["pixel_size_um"]
        self.frame_interval_s: float = header["frame_interval_s"]
        self.volume_upsample: int = int(header.get("volume_upsample", 1))  # > 1: super-resolved volumes
        self.volume_pixel_size_um: float = self.pixel_size_um / self.volume_upsample
        self.frames = RecordedArray(self._array(layout.RAW_ARRAY), self.n_frames, layout.RAW_ARRAY)
        self.has_volumes: bool = collection.image_path(self._root, layout.VOLUME_NAME) == layout.VOLUME_IMAGE
        planes = header["planes_um"]
        self.planes_um: np.ndarray | None = None if planes is None else np.asarray(planes, np.float64)
        self._volume_rows: dict[int, int] = {}
        self._volumes: RecordedArray | None
        if self.has_volumes:
            n_volumes = int(self._progress["volumes"])
            indices = self._column(layout.VOLUME_T_ARRAY, n_volumes)
            # a crash can leave a committed volume whose raw frame was not: only stored frames count
            rows = np.flatnonzero(indices < self.n_frames)
            rows = rows[np.argsort(indices[rows], kind="stable")]
            self.volume_indices: np.ndarray = indices[rows]
            self._volume_rows = dict(zip(self.volume_indices.tolist(), rows.tolist(), strict=True))
            self._volumes = RecordedArray(self._array(layout.VOLUME_ARRAY), n_volumes, layout.VOLUME_ARRAY)
        else:
            self.volume_indices = np.zeros(0, np.int64)
            self._volumes = None

    def _array(self, name: str) -> zarr.Array:
        try:
            return self._root[name]
        except KeyError:
            raise RecordingError(
                f"{self.path} is incomplete: its array '{name}' is missing (the writer was stopped while "
                "creating the store, or files were removed). Nothing can be read from it as a recording."
            ) from None

    def _column(self, name: str, length: int) -> np.ndarray:
        return RecordedArray(self._array(name), length, name)[:]

    def frame(self, t: int) -> np.ndarray:
        """Raw frame ``t`` (H, W) uint16."""
        return self.frames[t]

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Per-frame metadata: one 1-D array per stored FrameMeta field (storage.records.FRAME_FIELDS), n_frames long."""
        return {name: self._column(f"{layout.FRAMES_GROUP}/{name}", self.n_frames) for name in FRAME_FIELDS}

    def volume(self, t: int) -> np.ndarray | None:
        """The stored volume (K, H, W) uint16 of frame ``t`` (H, W = volume_upsample x the frame's), or None."""
        row = self._volume_rows.get(int(t))
        if row is None or self._volumes is None:
            return None
        try:
            return self._volumes[row]
        except CorruptChunkError as exc:  # name the frame: volume rows are not frame indices
            raise CorruptChunkError(f"the volume of frame {t} (row {row}): {exc}") from exc

    @property
    def volumes(self) -> RecordedArray | None:
        """Every committed volume, densely (n, K, H, W), or None without volumes: row i is the volume of frame
        ``volume_t[i]`` (stored order; volume_indices is the same set sorted, of stored frames only)."""
        return self._volumes

    @property
    def volume_times_s(self) -> np.ndarray:
        """Time (s from the first frame) of each stored volume's frame, in volume_indices order."""
        return self.frame_times_s(self.volume_indices)

    def frame_times_s(self, t: np.ndarray) -> np.ndarray:
        """Times (s) of frame indices ``t`` from the first frame: camera times where the store holds the
        frames, else ``t`` x the nominal frame interval (a tracks-only store such as `deepz track`'s)."""
        t = np.asarray(t, np.int64)
        if not self.n_frames:
            return t * self.frame_interval_s
        times = self._column(f"{layout.FRAMES_GROUP}/camera_time_s", self.n_frames)
        stored = np.clip(t, 0, self.n_frames - 1)
        beyond = (t - stored) * self.frame_interval_s  # past the last stored frame: at the nominal rate
        return times[stored] + beyond - times[0]

    def tracks(self) -> dict[str, np.ndarray]:
        """The tracks table: 1-D arrays t, id, z, y, x (um), intensity, dff, one row per neuron per frame."""
        rows = int(self._progress["track_rows"])
        return {name: self._column(f"{layout.TRACKS_GROUP}/{name}", rows) for name in TRACK_FIELDS}

    def traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (M,), t (T,), dff (M, T) NaN-filled): stored at close, else rebuilt from tracks."""
        if layout.TRACES_GROUP in self._root:
            group = self._root[layout.TRACES_GROUP]
            return group["ids"][:], group["t"][:], group["dff"][:]
        table = self.tracks()
        return traces_from_tracks(table["t"], table["id"], table["dff"])

    def scan_records(self) -> list[ScanRecord]:
        """The calibration scans stored with the recording: their records, no pixels ([] when none)."""
        return scan_records(self._root)

    @property
    def attrs(self) -> dict[str, Any]:
        """The run's attributes given to the writer (config, model manifest ...) plus versions and summary."""
        return {
            **self._header["attrs"],
            "versions": self._header["versions"],
            "summary": self._header["summary"],
        }

    @property
    def complete(self) -> bool:
        """True when the writer closed the recording after storing everything it was given."""
        return bool(self._header["complete"])

    @property
    def stopped_reason(self) -> str | None:
        """Why the recording ended early or was stopped (None after a normal close)."""
        if self._header["stopped_reason"] or self.complete:
            return self._header["stopped_reason"]
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._progress["host_time_s"]))
        return (
            f"interrupted: the writer never closed the recording (crash, kill or power loss); it holds the "
            f"{self.n_frames} frames committed by {when}"
        )
