"""RecordingWriter: streams frames, volumes and tracks into one durable OME-Zarr store in the background."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import zarr

from storage import collection, layout
from storage.disk_reserve import DiskReserve, default_reserve_bytes
from storage.jsonable import to_json
from storage.output_path import claim_output
from storage.records import (
    FRAME_FIELDS,
    TRACK_FIELDS,
    WriterBehindError,
    WriterError,
    WriterStats,
)
from storage.shard_buffer import ShardBuffer
from storage.sinks import Backend, default_backend, open_sink
from storage.synced_store import SyncedLocalStore
from storage.tables import traces_from_tracks
from storage.versions import software_versions
from wire.frames import FrameMeta

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Frame:
    image: np.ndarray
    record: FrameMeta


@dataclass(slots=True)
class _Volume:
    t: int
    volume: np.ndarray
    row: int = -1  # its row in the dense volumes array, given by the writer thread


@dataclass(slots=True)
class _Tracks:
    columns: dict[str, np.ndarray]


@dataclass(slots=True)
class _Close:
    summary: dict | None
    stopped_reason: str | None


class RecordingWriter:
    """Writes one recording; calls return at once, raising WriterError if the writer failed or is behind.

    ``inputs`` names the stores the run reads (a replayed recording): the output may never be one of them.
    ``wait_when_behind`` (replay) makes writes wait for the disk instead of refusing what does not fit.
    ``volume_max_hz`` stores at most that many volumes per second (the rate the disk takes, see disk_rate).
    ``volume_reserve_bytes``: volumes stop being stored once the disk has less free (default: the larger of
    2 GiB and two minutes of raw frames), so raw frames keep the rest of the disk.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        frame_shape: tuple[int, int],
        pixel_size_um: float,
        planes_um: np.ndarray | None = None,
        volume_every: int = 1,
        attrs: dict | None = None,
        overwrite: bool = False,
        inputs: Sequence[str | Path] = (),
        queue_frames: int | None = None,
        queue_volumes: int = 8,
        frame_interval_s: float = 0.01,
        backend: Backend | None = None,
        compression: layout.Compression = layout.DEFAULT_COMPRESSION,
        commit_interval_s: float = 1.0,
        fsync: bool = True,
        volume_upsample: int = 1,
        wait_when_behind: bool = False,
        volume_max_hz: float | None = None,
        volume_reserve_bytes: int | None = None,
    ) -> None:
        if volume_every < 0 or (queue_frames or 1) < 1 or queue_volumes < 1 or volume_upsample < 1:
            raise ValueError("volume_every must be >= 0 and queue_frames, queue_volumes, volume_upsample >= 1")
        self.path = Path(path)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.planes_um = None if planes_um is None else np.asarray(planes_um, np.float64)
        self.volume_every = volume_every
        self.volume_upsample = int(volume_upsample)  # volumes on a grid this many times finer than frames
        self._volume_shape = (
            0 if self.planes_um is None else len(self.planes_um),
            *(n * self.volume_upsample for n in self.frame_shape),
        )
        self.backend: Backend = backend or default_backend()
        self._queue_frames = queue_frames or layout.default_queue_frames(self.frame_shape)
        self._queue_volumes = queue_volumes
        self._commit_interval_s = commit_interval_s
        self._shard_frames = layout.raw_shard_frames(self.frame_shape)
        self._header = {
            "format": layout.FORMAT_NAME,
            "format_version": layout.FORMAT_VERSION,
            "frame_shape": list(self.frame_shape),
            "pixel_size_um": float(pixel_size_um),
            "frame_interval_s": float(frame_interval_s),
            "planes_um": None if self.planes_um is None else self.planes_um.tolist(),
            "volume_every": volume_every,
            "volume_upsample": self.volume_upsample,
            "backend": self.backend,
            "compression": compression,
            "attrs": to_json(attrs or {}),
            "versions": software_versions(),
            "summary": None,
            "progress": {"frames": 0, "volumes": 0, "track_rows": 0, "host_time_s": time.time()},
            "complete": False,
            "stopped_reason": None,
        }
        self._frame_interval_s = float(frame_interval_s)
        fastest = 1 / volume_max_hz if volume_max_hz else 0.0
        volume_interval_s = max(frame_interval_s * max(volume_every, 1), fastest)
        self._open_store(
            pixel_size_um, frame_interval_s, volume_interval_s, overwrite, inputs, fsync, compression
        )
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified whenever a queued frame or volume is written
        self._wait_when_behind = wait_when_behind
        self._volume_period_s = 1.0 / volume_max_hz if volume_max_hz else 0.0
        self._last_volume_s = -float("inf")
        reserve = default_reserve_bytes(self.frame_shape, frame_interval_s)
        self._disk = DiskReserve(self.path, reserve if volume_reserve_bytes is None else volume_reserve_bytes)
        log.info("%s: %.1f GB free on its disk (%.0f min of raw frames at this rate); volumes are stored while "
                 "more than %.1f GB are free", self.path.name, self._disk.free_bytes / 1e9,
                 self._disk.free_bytes / (2 * self.frame_shape[0] * self.frame_shape[1]) * frame_interval_s / 60,
                 self._disk.reserve_bytes / 1e9)
        self._queue: queue.Queue = queue.Queue()
        self._counts = {
            name: 0
            for name in (
                "frames_queued",
                "volumes_queued",
                "volumes_skipped_by_policy",
                "frames_pending",
                "volumes_pending",
                "volumes_offered",
                "volumes_skipped_for_space",
            )
        }
        self._stored = {"frames": 0, "volumes": 0, "track_rows": 0}
        self._error: BaseException | None = None
        self._closed = False
        self._records: list[FrameMeta] = []
        self._volume_t: list[int] = []
        self._volume_rows = 0  # volumes handed to the IO thread (each takes the next dense row)
        self._volume_writes: list[Future] = []
        self._tracks: list[dict[str, np.ndarray]] = []
        self._pool = ThreadPoolExecutor(
            max_workers=len(FRAME_FIELDS), thread_name_prefix="RecordingWriterTables"
        )
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="RecordingWriterIO")
        self._frames = ShardBuffer(self._raw, self._shard_frames, self.frame_shape, self._io)
        self._thread = threading.Thread(
            target=self._run, name=f"RecordingWriter({self.path.name})", daemon=True
        )
        self._thread.start()

    # ---------------------------------------------------------------- caller side (any thread)

    @property
    def has_volumes(self) -> bool:
        """Whether this recording stores volumes (planes given and a policy other than none)."""
        return self.planes_um is not None and self.volume_every > 0

    @property
    def stats(self) -> WriterStats:
        """A consistent snapshot; frames_stored counts only frames durably committed to disk."""
        with self._lock:
            c, s = self._counts, self._stored
            return WriterStats(
                frames_queued=c["frames_queued"],
                frames_stored=s["frames"],
                volumes_queued=c["volumes_queued"],
                volumes_stored=s["volumes"],
                volumes_skipped_by_policy=c["volumes_skipped_by_policy"],
                volumes_skipped_for_space=c["volumes_skipped_for_space"],
                track_rows_stored=s["track_rows"],
                queue_depth=c["frames_pending"] + c["volumes_pending"],
                behind=2 * c["frames_pending"] >= self._queue_frames
                or 2 * c["volumes_pending"] >= self._queue_volumes,
                error=self._error,
            )

    def write_frame(self, image: np.ndarray, record: FrameMeta) -> None:
        """Queue one raw frame (copied) with its metadata; raises WriterError if it cannot be stored."""
        if image.shape != self.frame_shape or image.dtype != np.uint16:
            raise ValueError(f"frame must be uint16 {self.frame_shape}, got {image.dtype} {image.shape}")
        item = _Frame(image.copy(), record)
        with self._lock:
            self._wait_for_room("frames_pending", self._queue_frames)
            if self._counts["frames_pending"] >= self._queue_frames:
                raise WriterBehindError(
                    f"recording writer is behind: {self._queue_frames} frames already wait for the disk, so "
                    f"frame with image number {record.image_number} was NOT stored. Write to a faster disk, "
                    "raise queue_frames, or lower the frame rate; count this frame as lost."
                )
            self._counts["frames_pending"] += 1
            self._counts["frames_queued"] += 1
            self._queue.put(item)

    def write_volume(self, t: int, volume: np.ndarray) -> None:
        """Queue the volume of frame ``t`` if the volume policy keeps it; raises WriterError if it cannot."""
        if self.planes_um is None:
            raise ValueError("this recording has no volumes (planes_um=None); do not call write_volume")
        shape = self._volume_shape
        if volume.shape != shape or volume.dtype != np.uint16:
            raise ValueError(f"volume must be uint16 {shape}, got {volume.dtype} {volume.shape}")
        with self._lock:
            self._check_usable()
            offered = self._counts["volumes_offered"]
            self._counts["volumes_offered"] += 1
            now = time.monotonic()
            too_soon = now - self._last_volume_s < self._volume_period_s
            if self.volume_every == 0 or offered % self.volume_every or too_soon:
                self._counts["volumes_skipped_by_policy"] += 1
                return
            if not self._disk.take(volume.nbytes):  # uncompressed: an upper bound
                if not self._counts["volumes_skipped_for_space"]:
                    log.warning("%s: only %.1f GB left on its disk: volumes are no longer stored, so raw frames "
                                "keep the rest (replay can recompute the volumes)", self.path.name,
                                self._disk.free_bytes / 1e9)
                self._counts["volumes_skipped_for_space"] += 1
                return
            self._wait_for_room("volumes_pending", self._queue_volumes)
            if self._counts["volumes_pending"] >= self._queue_volumes:
                raise WriterBehindError(
                    f"recording writer is behind: {self._queue_volumes} volumes already wait for the disk, "
                    f"so the volume of frame {t} was NOT stored (raw frames are kept; replay can recompute "
                    "it). Store fewer volumes (volume_every) or raise queue_volumes."
                )
            self._counts["volumes_pending"] += 1
            self._counts["volumes_queued"] += 1
            self._last_volume_s = now
            self._queue.put(_Volume(int(t), volume.copy()))

    def write_tracks(
        self, t: int, ids: np.ndarray, positions_um: np.ndarray, intensity: np.ndarray, dff: np.ndarray
    ) -> None:
        """Queue the tracked neurons of frame ``t``: ids (N,), positions (N, 3) z,y,x um, intensity, dF/F."""
        positions = np.asarray(positions_um, np.float32).reshape(-1, 3)
        n = len(positions)
        columns = {
            "t": np.full(n, t),
            "id": ids,
            "z": positions[:, 0],
            "y": positions[:, 1],
            "x": positions[:, 2],
            "intensity": intensity,
            "dff": dff,
        }
        table = {k: np.asarray(v, TRACK_FIELDS[k]).reshape(-1) for k, v in columns.items()}
        if any(len(v) != n for v in table.values()):
            raise ValueError(f"tracks of frame {t}: ids, intensity and dff must all have {n} entries")
        with self._lock:
            self._check_usable()
            self._queue.put(_Tracks(table))

    def close(self, summary: dict | None = None, *, stopped_reason: str | None = None) -> None:
        """Flush everything queued, write traces and summary, mark the recording complete; idempotent."""
        self._finish(summary, stopped_reason, raise_error=True)

    def close_failed(self, reason: str) -> bool:
        """Close after a run failed: the store keeps what was stored and ``reason``; one that holds no frame
        (a failed start) is removed, so it blocks no later run. Returns whether it was removed."""
        self._finish(None, reason, raise_error=False)
        if self._stored["frames"]:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        reason = None if exc is None else f"stopped by {type(exc).__name__}: {exc}"
        self._finish(None, reason, raise_error=exc is None)

    def _finish(self, summary: dict | None, stopped_reason: str | None, *, raise_error: bool) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_Close(summary, stopped_reason))
        self._thread.join()
        if self._error is not None and raise_error:
            raise WriterError(
                f"recording {self.path} stopped early: {self._error}. "
                f"The first {self._stored['frames']} frames are stored and readable."
            ) from self._error

    def _wait_for_room(self, pending: str, limit: int) -> None:
        """With the lock held: raise if unusable; when waiting is on, block until the queue has room."""
        self._check_usable()
        while self._wait_when_behind and self._counts[pending] >= limit:
            self._room.wait(timeout=0.5)
            self._check_usable()

    def _check_usable(self) -> None:
        if self._error is not None:
            raise WriterError(
                f"the recording writer for {self.path} failed: {self._error}. Nothing after frame "
                f"{self._stored['frames']} can be stored; the frames before it are safe. "
                "Stop acquisition and fix the cause (disk full? removed?) before recording again."
            ) from self._error
        if self._closed:
            raise WriterError(f"recording {self.path} is closed; open a new RecordingWriter to record more")

    # ---------------------------------------------------------------- store setup (caller thread)

    def _open_store(
        self,
        pixel_size_um: float,
        frame_interval_s: float,
        volume_interval_s: float,
        overwrite: bool,
        inputs: Sequence[str | Path],
        fsync: bool,
        compression: layout.Compression,
    ) -> None:
        claim_output(self.path, overwrite=overwrite, inputs=inputs)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._store = SyncedLocalStore(self.path, fsync=fsync)
            self._root = zarr.create_group(
                self._store, zarr_format=3, attributes={layout.ATTRS_KEY: self._header}
            )
            layout.create_layout(
                self._root,
                frame_shape=self.frame_shape,
                pixel_size_um=pixel_size_um,
                frame_interval_s=frame_interval_s,
                planes_um=self.planes_um if self.has_volumes else None,
                shard_frames=self._shard_frames,
                compression=compression,
                volume_upsample=self.volume_upsample,
                volume_interval_s=volume_interval_s,
            )
            self._store.sync_directories()
            self._raw = open_sink(self.backend, self._root, self.path, layout.RAW_ARRAY, fsync=fsync)
            self._volumes = (
                open_sink(self.backend, self._root, self.path, layout.VOLUME_ARRAY, fsync=fsync)
                if self.has_volumes
                else None
            )
        except OSError as exc:
            raise WriterError(
                f"cannot create recording at {self.path}: {exc}. Choose a directory you can write to "
                "on a disk with free space."
            ) from exc
        self._frame_arrays = {name: self._root[f"{layout.FRAMES_GROUP}/{name}"] for name in FRAME_FIELDS}
        self._track_arrays = {name: self._root[f"{layout.TRACKS_GROUP}/{name}"] for name in TRACK_FIELDS}
        self._volume_t_array = self._root[layout.VOLUME_T_ARRAY] if self.has_volumes else None

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        next_commit = time.monotonic() + self._commit_interval_s
        try:
            while True:
                pending = bool(self._records or self._volume_t or self._tracks)
                timeout = max(0.0, next_commit - time.monotonic()) if pending else None
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, _Close):
                    self._commit()
                    self._close_store(item)
                    return
                if item is not None:
                    self._handle(item)
                if time.monotonic() >= next_commit:
                    self._commit()
                    next_commit = time.monotonic() + self._commit_interval_s
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised to the caller on its next call
            log.error("recording writer for %s failed: %s", self.path, exc)
            self._mark_stopped(f"writer failed: {type(exc).__name__}: {exc}")
            self._error = exc
        finally:
            self._io.shutdown(cancel_futures=True)
            self._pool.shutdown()

    def _handle(self, item: _Frame | _Volume | _Tracks) -> None:
        if isinstance(item, _Frame):
            self._frames.add(item.image)
            self._records.append(item.record)
            with self._lock:
                self._counts["frames_pending"] -= 1
                self._room.notify_all()
        elif isinstance(item, _Volume):
            item.row, self._volume_rows = self._volume_rows, self._volume_rows + 1
            self._volume_writes.append(self._io.submit(self._write_volume, item))
            self._volume_t.append(item.t)
        else:
            self._tracks.append(item.columns)

    def _write_volume(self, item: _Volume) -> None:
        """IO thread: store one volume in its dense row; its queue slot frees only once it is written."""
        self._volumes.grow(item.row + 1)
        self._volumes.write(item.row, item.volume[None])
        with self._lock:
            self._counts["volumes_pending"] -= 1
            self._room.notify_all()

    def _append_columns(
        self, arrays: dict[str, zarr.Array], start: int, columns: dict[str, np.ndarray]
    ) -> None:
        """Write table rows in parallel (each write is an fsync); capacity grows a chunk at a time."""
        end = start + len(next(iter(columns.values())))

        def append(name: str) -> None:
            array = arrays[name]
            if end > array.shape[0]:
                array.resize((-(-end // layout.TABLE_CHUNK) * layout.TABLE_CHUNK,))
            array[start:end] = columns[name]

        list(self._pool.map(append, columns))

    def _commit(self) -> None:
        """Write buffered frames and tables, fsync, then advance the durable progress counters."""
        stored = dict(self._stored)
        self._frames.flush()
        writes, self._volume_writes = self._volume_writes, []
        for write in writes:
            write.result()
        if self._records:
            start = stored["frames"]
            self._append_columns(
                self._frame_arrays,
                start,
                {
                    name: np.array([getattr(r, name) for r in self._records], dtype)
                    for name, dtype in FRAME_FIELDS.items()
                },
            )
            stored["frames"] += len(self._records)
        if self._volume_t:
            self._append_columns(
                {"t": self._volume_t_array}, stored["volumes"], {"t": np.array(self._volume_t)}
            )
            stored["volumes"] += len(self._volume_t)
        if self._tracks:
            rows = {k: np.concatenate([t[k] for t in self._tracks]) for k in TRACK_FIELDS}
            self._append_columns(self._track_arrays, stored["track_rows"], rows)
            stored["track_rows"] += len(rows["t"])
        if stored == self._stored:
            return
        self._store.sync_directories()
        self._header["progress"] = {**stored, "host_time_s": time.time()}
        self._write_header()
        with self._lock:
            self._stored = stored
        self._records, self._volume_t, self._tracks = [], [], []

    def _write_header(self) -> None:
        self._root.update_attributes({layout.ATTRS_KEY: self._header})
        self._store.sync_directories()

    def _close_store(self, item: _Close) -> None:
        """Trim tables and volumes to their rows, fit the volumes' time axis, write traces, mark complete."""
        n = self._stored["frames"]
        self._drop_rows_past_frames(n)
        if self._volumes is not None:
            volumes = self._stored["volumes"]
            self._volumes_array().resize((volumes, *self._volume_shape))
            self._volume_t_array.resize((volumes,))
            step, t0 = layout.volume_time_axis(self._volume_t_array[:], self._frame_interval_s)
            collection.set_time_axis(self._root[layout.VOLUME_IMAGE], step, t0)
        for array in self._frame_arrays.values():
            array.resize((n,))
        for array in self._track_arrays.values():
            array.resize((self._stored["track_rows"],))
        if self._stored["track_rows"]:
            columns = {k: self._track_arrays[k][: self._stored["track_rows"]] for k in ("t", "id", "dff")}
            ids, t, dff = traces_from_tracks(columns["t"], columns["id"], columns["dff"])
            traces = self._root.create_group(
                layout.TRACES_GROUP, attributes={layout.UNITS_KEY: layout.TRACE_UNITS, "dims": ["ids", "t"]}
            )
            for name, values in (("ids", ids), ("t", t), ("dff", dff)):
                traces.create_array(
                    name,
                    data=values,
                    compressors=layout.compressors(),
                    attributes={"unit": layout.TRACE_UNITS[name]},
                )
        collection.write_ome_xml(self._root)
        self._header.update(complete=True, stopped_reason=item.stopped_reason, summary=to_json(item.summary))
        self._write_header()

    def _drop_rows_past_frames(self, n: int) -> None:
        """Forget volumes and track rows of frames that were never stored (a run stopped between the two).

        Every volume and track row then belongs to a stored raw frame, which is what readers rely on. A store
        given no raw frames at all (tracks of another recording, `deepz track`) keeps every row.
        """
        if self._counts["frames_queued"] == 0:
            return
        stored = dict(self._stored)
        tables = [({"t": self._volume_t_array}, "volumes")] if self._volume_t_array is not None else []
        tables.append((self._track_arrays, "track_rows"))
        for arrays, counter in tables:
            rows = stored[counter]
            keep = arrays["t"][:rows] < n
            if keep.all():
                continue
            log.warning("%s: dropping %d %s of frames never stored", self.path, int((~keep).sum()), counter)
            for array in arrays.values():
                array[: int(keep.sum())] = array[:rows][keep]
            if counter == "volumes":  # the dense volume rows move with their frame indices
                volumes = self._volumes_array()
                for new, old in enumerate(np.flatnonzero(keep)):
                    if new != old:
                        volumes[new] = volumes[old]
            stored[counter] = int(keep.sum())
        with self._lock:
            self._stored = stored
        self._header["progress"] = {**stored, "host_time_s": time.time()}

    def _volumes_array(self) -> zarr.Array:
        """The volumes array as now on disk (the sink may be tensorstore's, with its own view)."""
        return zarr.open_array(self._store, path=layout.VOLUME_ARRAY, mode="r+")

    def _mark_stopped(self, reason: str) -> None:
        """Best effort: record why the writer stopped (the disk may refuse even this)."""
        self._header["stopped_reason"] = reason
        try:
            self._write_header()
        except Exception as exc:  # noqa: BLE001 - the original failure is what the caller must see
            log.warning("could not record the stop reason in %s: %s", self.path, exc)
