"""Adapters from a recording (or a tracks-only store) + time index to the ViewState the live views draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from display.state import ViewState

TRACE_WINDOW = 300  # trace samples shown up to the current time (as the live pipeline's window)
RATE_WINDOW = 100  # frames over which playback estimates the input and volume rates


class RecordingLike(Protocol):
    """What the viewer reads from a recording (storage.RecordingReader provides it)."""

    path: Path
    n_frames: int
    pixel_size_um: float
    volume_pixel_size_um: float
    planes_um: np.ndarray | None
    volume_indices: np.ndarray
    complete: bool
    stopped_reason: str | None

    def frame(self, t: int) -> np.ndarray: ...
    def volume(self, t: int) -> np.ndarray | None: ...
    def tracks(self) -> dict[str, np.ndarray]: ...
    def traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def scan_records(self) -> list[Any]: ...  # storage.calibration.ScanRecord: end_host_s, pause_s ...
    @property
    def metadata(self) -> dict[str, np.ndarray]: ...


class TracksLike(Protocol):
    """What the viewer reads from a tracks store such as `deepz track`'s (storage.RecordingReader has it)."""

    path: Path
    pixel_size_um: float
    volume_pixel_size_um: float

    def tracks(self) -> dict[str, np.ndarray]: ...
    def traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def frame_times_s(self, t: np.ndarray) -> np.ndarray: ...


class TrackTable:
    """A tracks table and its traces, loaded once: the neurons and the trace window at any frame index."""

    def __init__(self, source: RecordingLike | TracksLike) -> None:
        tracks = source.tracks()
        order = np.argsort(tracks["t"], kind="stable")
        self.tracks = {name: np.asarray(col)[order] for name, col in tracks.items()}
        self.trace_ids, trace_frames, self.traces = source.traces()
        self.trace_frames = np.asarray(trace_frames, np.int64)

    @property
    def times(self) -> np.ndarray:
        """The tracked frame indices, sorted and unique."""
        return np.unique(self.tracks["t"]).astype(np.int64)

    def at(self, t: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Neurons (ids, positions, dF/F) of the newest tracked time point at or before ``t``."""
        times = self.tracks["t"]
        end = np.searchsorted(times, t, side="right")
        if end == 0:
            return None, None, None
        start = np.searchsorted(times, times[end - 1], side="left")
        rows = slice(start, end)
        positions = np.column_stack([self.tracks[c][rows] for c in ("z", "y", "x")]).astype(np.float32)
        return self.tracks["id"][rows], positions, self.tracks["dff"][rows]

    def window(self, t: int, length: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(ids, dF/F, frame indices) of the last ``length`` trace samples at or before ``t``."""
        end = np.searchsorted(self.trace_frames, t, side="right")
        if end == 0 or len(self.trace_ids) == 0:
            return None, None, None
        cols = slice(max(end - length, 0), end)
        return self.trace_ids, self.traces[:, cols], self.trace_frames[cols]


class RecordingAdapter:
    """Serves ViewStates of a recording at any frame index: frame t, the newest volume and tracks at or
    before t, and the trace window ending there; small tables are loaded once, images read on demand.
    With ``tracks`` (a `deepz track` store of this recording) its tracks and traces replace the recording's
    own."""

    def __init__(
        self, reader: RecordingLike, *, tracks: TracksLike | None = None, trace_window: int = TRACE_WINDOW
    ) -> None:
        if reader.n_frames == 0:
            raise ValueError(
                f"recording {reader.path} holds no frames yet: nothing to show. Wait for the run "
                "to store frames, or open another recording."
            )
        self.reader = reader
        self.trace_window = trace_window
        meta = reader.metadata
        self._time_s = np.asarray(meta["camera_time_s"], np.float64)
        self._host_s = np.asarray(meta["host_time_s"], np.float64)
        self._scans = reader.scan_records()  # calibration scans: tracks are then the readout's
        self._lost = np.cumsum(meta["lost_before"])
        self._skipped = np.cumsum(meta["volume_skipped"])
        self._volume_t = np.sort(np.asarray(reader.volume_indices, np.int64))
        self.tracks_path = None if tracks is None else tracks.path
        self.path = reader.path if tracks is None else tracks.path  # the store the user opened
        self._table = TrackTable(reader if tracks is None else tracks)
        self._volume_cache: tuple[int | None, np.ndarray | None] = (None, None)
        self.meta = {
            "planes_um": None if reader.planes_um is None else np.asarray(reader.planes_um).tolist(),
            "pixel_size_um": reader.pixel_size_um,
            "volume_pixel_size_um": reader.volume_pixel_size_um,
        }

    @property
    def n_frames(self) -> int:
        """Number of frames in the recording."""
        return self.reader.n_frames

    @property
    def default_t(self) -> int:
        """A representative time: the last frame with a volume (fullest trace window), else the last frame."""
        return int(self._volume_t[-1]) if len(self._volume_t) else self.n_frames - 1

    def describe(self) -> str:
        """The source label for the status bar: path, and whether the run ended by itself or was stopped."""
        reason = self.reader.stopped_reason
        if self.reader.complete:
            state = f"stopped early: {reason}" if reason else "complete"
        else:
            state = f"incomplete: {reason}"
        label = f"recording {self.reader.path} ({self.n_frames} frames, {state})"
        return label if self.tracks_path is None else f"tracks {self.tracks_path} over {label}"

    def time_s(self, t: int) -> float:
        """Camera time of frame ``t`` relative to the first frame, in seconds."""
        return float(self._time_s[t] - self._time_s[0])

    def state(self, t: int) -> ViewState:
        """Everything the views show at frame ``t``."""
        t = int(np.clip(t, 0, self.n_frames - 1))
        k = np.searchsorted(self._volume_t, t, side="right")
        volume_t = int(self._volume_t[k - 1]) if k else None
        if volume_t != self._volume_cache[0]:  # frames between volumes reuse the one already read
            self._volume_cache = (volume_t, None if volume_t is None else self.reader.volume(volume_t))
        ids, positions, dff = self._table.at(t)
        trace_ids, traces, trace_frames = self._table.window(t, self.trace_window)
        trace_t = None if trace_frames is None else self._time_s[np.clip(trace_frames, 0, self.n_frames - 1)]
        return ViewState(
            t=t,
            frame=self.reader.frame(t),
            volume=self._volume_cache[1],
            track_ids=ids,
            track_positions_um=positions,
            track_dff=dff if self._scans else None,
            trace_ids=trace_ids,
            traces_dff=traces,
            trace_t=trace_t,
            stats=self._stats(t),
            meta={**self.meta, "volume_t": volume_t},
        )

    def _stats(self, t: int) -> dict[str, float | int | None]:
        """Rates, losses and skips of the recorded run up to frame ``t`` (as the live status bar shows)."""
        first = max(t - RATE_WINDOW, 0)
        span = self._time_s[t] - self._time_s[first]
        volumes = self._volume_t[(self._volume_t >= first) & (self._volume_t <= t)]
        volume_span = self._time_s[volumes[-1]] - self._time_s[volumes[0]] if len(volumes) > 1 else 0.0
        return {
            "input_hz": float((t - first) / span) if span > 0 else None,
            "volume_hz": float((len(volumes) - 1) / volume_span) if volume_span > 0 else None,
            "lost": int(self._lost[t]),
            "skipped": int(self._skipped[t]),
            "recording": None,
            "host_time_s": float(self._host_s[t]),
            **self._calibration_stats(t),
        }

    def _calibration_stats(self, t: int) -> dict[str, float | int]:
        """The calibration scans taken by frame ``t``, as the live status line shows them."""
        done = [r for r in self._scans if r.frame_index <= t]
        used = [r for r in done if "reference" not in r.extra]  # not those stored without a reference
        if not used:
            return {}
        return {
            "last_calibration_host_s": used[-1].end_host_s,
            "calibrations": len(done),
            "reference_neurons": used[-1].n_reference,
            "calibration_pause_s": round(sum(r.pause_s for r in done), 3),
            "calibration_frames_cost": sum(r.frames_cost for r in done),
        }


class TracksAdapter:
    """Serves ViewStates of a tracks-only store (no frames, no volumes): at frame index t, the neurons of the
    newest tracked time point at or before t and the trace window ending there; times at the nominal rate."""

    def __init__(self, store: TracksLike, *, trace_window: int = TRACE_WINDOW) -> None:
        self.store = store
        self.path = store.path
        self.trace_window = trace_window
        self._table = TrackTable(store)
        times = self._table.times
        if len(times) == 0:
            raise ValueError(f"tracks store {store.path} holds no tracks: nothing to show.")
        self._times = times
        self._time_s = np.asarray(store.frame_times_s(np.arange(int(times[-1]) + 1)), np.float64)
        table = self._table.tracks
        self.meta = {
            "planes_um": None,
            "pixel_size_um": store.pixel_size_um,
            "volume_pixel_size_um": store.volume_pixel_size_um,
            "tracks_only": True,  # the views draw the neurons without images
            "extent_um": {axis: (float(table[axis].min()), float(table[axis].max())) for axis in "zyx"},
        }

    @property
    def n_frames(self) -> int:
        """Frame indices the slider covers: up to the last tracked time point."""
        return len(self._time_s)

    @property
    def default_t(self) -> int:
        """The last tracked time point (fullest trace window)."""
        return int(self._times[-1])

    def describe(self) -> str:
        """The source label for the status bar: the store and what it holds."""
        ids = len(np.unique(self._table.tracks["id"]))
        return f"tracks {self.store.path} ({ids} neurons over {len(self._times)} time points, no images)"

    def time_s(self, t: int) -> float:
        """Time of frame index ``t`` from the first frame, in seconds (at the source's nominal frame rate)."""
        return float(self._time_s[t])

    def state(self, t: int) -> ViewState:
        """The neurons and traces at frame index ``t``."""
        t = int(np.clip(t, 0, self.n_frames - 1))
        ids, positions, dff = self._table.at(t)
        trace_ids, traces, trace_frames = self._table.window(t, self.trace_window)
        k = np.searchsorted(self._times, t, side="right")
        return ViewState(
            t=t,
            track_ids=ids,
            track_positions_um=positions,
            trace_ids=trace_ids,
            traces_dff=traces,
            trace_t=None if trace_frames is None else self._time_s[trace_frames],
            meta={**self.meta, "volume_t": int(self._times[k - 1]) if k else None},
        )


def browse(
    recording: RecordingLike | None, tracks: TracksLike | None = None, *, trace_window: int = TRACE_WINDOW
) -> RecordingAdapter | TracksAdapter:
    """The adapter for a recording (with a tracks store's tracks when given), or a tracks store alone."""
    if recording is not None:
        return RecordingAdapter(recording, tracks=tracks, trace_window=trace_window)
    if tracks is None:
        raise ValueError("nothing to browse: give a recording or a tracks store")
    return TracksAdapter(tracks, trace_window=trace_window)
