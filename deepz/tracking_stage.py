"""The live tracking stage: track.LiveTracker per volume, plus the recent dF/F history viewers are sent."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from deepz.config import TrackingConfig
from deepz.stages import window_traces

if TYPE_CHECKING:
    from track.online import TrackState

MAX_TRACE_COLUMNS = 600
"""Most recent volumes kept per published trace window (bounds message size at high volume rates)."""


class TrackingStage:
    """Detect, link and measure each volume; remembers dF/F over the last `trace_window_s` seconds."""

    def __init__(self, cfg: TrackingConfig, *, voxel_um: tuple[float, float, float], planes_um: np.ndarray,
                 device: str | None = None) -> None:
        from track.detect import DetectConfig
        from track.live import LiveTracker, LiveTrackerConfig

        self.window_s = cfg.trace_window_s
        self.tracker = LiveTracker(
            LiveTrackerConfig(
                voxel_um=voxel_um,
                origin_um=(float(planes_um[0]), 0.0, 0.0),
                detect=DetectConfig(nucleus_um=cfg.nucleus_um),
            ),
            device=device,
        )
        self._history: collections.deque[tuple[float, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=MAX_TRACE_COLUMNS
        )
        self._lock = threading.Lock()
        self._volumes = 0

    def update(self, t: int, time_s: float, volume: Any) -> TrackState:
        """Track one volume (frame index t, camera time in s; an array, or a tensor best already on the
        tracker's device); returns track.online.TrackState.

        The tracker counts in volumes, not frames: live inference skips frames when it falls behind, and
        linking gates, velocity and gap closing are per step between consecutive volumes.
        """
        state = self.tracker.process(self._volumes, volume)
        self._volumes += 1
        with self._lock:
            self._history.append((time_s, np.asarray(state.ids), np.asarray(state.dff, np.float32)))
            while self._history and time_s - self._history[0][0] > self.window_s:
                self._history.popleft()
        return state

    def recent_traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids (M,), times (W,) s and dF/F (M, W) over the window, NaN where a neuron was not tracked."""
        with self._lock:
            history = list(self._history)
        return window_traces(history)
