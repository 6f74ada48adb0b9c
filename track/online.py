"""Online frame-to-frame linking: motion prediction, global drift correction, LAP assignment, gap closing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from track.activity import ActivityConfig, RunningDff
from track.detect import Detections

__all__ = ["OnlineTracker", "TrackState", "TrackerConfig", "estimate_drift"]


@dataclass(frozen=True)
class TrackerConfig:
    """Linking parameters: gate (um), frames a track may miss, velocity smoothing, drift, dF/F baseline."""

    max_distance_um: float = 2.0
    max_gap: int = 20  # frames; at 10 Hz this bridges 2 s of missed detections (e.g. two nuclei merging)
    velocity_smoothing: float = 0.3  # weight of the newest step in the velocity estimate; 0 = no prediction
    drift_correction: bool = True
    drift_search_um: float = 6.0
    drift_iterations: int = 3
    gap_cost_um: float = 0.2  # added cost per missed frame, so continuous tracks win ties
    activity: ActivityConfig = field(default_factory=ActivityConfig)


@dataclass(frozen=True)
class TrackState:
    """Tracks observed at frame t: ids, positions (N, 3) um, intensity, dF/F (N,); started/ended ids."""

    t: int
    ids: np.ndarray
    positions_um: np.ndarray
    intensity: np.ndarray
    dff: np.ndarray
    new_ids: np.ndarray
    lost_ids: np.ndarray
    drift_um: np.ndarray


def estimate_drift(
    predicted: np.ndarray, detected: np.ndarray, search_um: float, iterations: int = 3
) -> np.ndarray:
    """Global translation (3,) um from predictions to detections: median nearest-neighbour residual."""
    drift = np.zeros(3)
    if len(predicted) == 0 or len(detected) == 0:
        return drift
    tree = cKDTree(detected)
    for _ in range(max(1, iterations)):
        dist, j = tree.query(predicted + drift, distance_upper_bound=search_um)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            break
        drift = drift + np.median(detected[j[ok]] - (predicted[ok] + drift), axis=0)
    return drift


class OnlineTracker:
    """Links detections volume by volume into tracks with stable integer ids (0, 1, 2 ... by birth)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._ids = np.zeros(0, np.int64)
        self._pos = np.zeros((0, 3))
        self._vel = np.zeros((0, 3))
        self._last_t = np.zeros(0, np.int64)
        self._next_id = 0
        self._t: int | None = None
        self._dff = RunningDff(self.config.activity)

    @property
    def n_active(self) -> int:
        """Tracks alive now (observed within the last max_gap frames)."""
        return len(self._ids)

    @property
    def next_id(self) -> int:
        """The id the next new track gets (= number of tracks started so far)."""
        return self._next_id

    def predict(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Predicted positions (N, 3) um at frame t of the live tracks, with their ids (N,)."""
        return self._ids.copy(), self._pos + self._vel * (t - self._last_t)[:, None]

    def update(self, t: int, detections: Detections, intensity: np.ndarray | None = None) -> TrackState:
        """Link this frame's detections to the live tracks and return the tracks observed at t."""
        if self._t is not None and t <= self._t:
            raise ValueError(
                f"Frame index {t} is not after the previous one ({self._t}); feed volumes in time order."
            )
        det = np.asarray(detections.positions_um, dtype=np.float64).reshape(-1, 3)
        values = detections.intensity if intensity is None else np.asarray(intensity)
        if len(values) != len(det):
            raise ValueError(
                f"{len(values)} intensities for {len(det)} detections; pass one value per detection."
            )
        cfg = self.config
        ids, pred = self.predict(t)
        drift = np.zeros(3)
        if cfg.drift_correction:
            drift = estimate_drift(pred, det, cfg.drift_search_um, cfg.drift_iterations)
            pred = pred + drift
        rows, cols = self._assign(pred, det, t - self._last_t - 1)
        self._advance(t, rows, det[cols])
        unmatched = np.setdiff1d(np.arange(len(det)), cols)
        new_ids = np.arange(self._next_id, self._next_id + len(unmatched), dtype=np.int64)
        self._next_id += len(unmatched)
        lost_ids = self._drop_lost(t)
        self._append(new_ids, det[unmatched], t)
        order = np.concatenate([cols, unmatched]).astype(np.int64)
        out_ids = np.concatenate([ids[rows], new_ids]).astype(np.int64)
        dff = self._dff.update(out_ids, values[order])
        self._dff.forget(lost_ids)
        self._t = t
        sort = np.argsort(out_ids, kind="stable")
        return TrackState(
            t=t,
            ids=out_ids[sort],
            positions_um=det[order][sort],
            intensity=np.asarray(values[order], dtype=np.float32)[sort],
            dff=dff[sort],
            new_ids=new_ids,
            lost_ids=lost_ids,
            drift_um=drift,
        )

    def _assign(self, pred: np.ndarray, det: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Minimum-cost assignment of predictions to detections within the gate (rows, cols)."""
        if len(pred) == 0 or len(det) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        gate = self.config.max_distance_um
        dist = cdist(pred, det)
        cost = dist + self.config.gap_cost_um * np.maximum(gaps, 0)[:, None]
        big = 1e6
        cost[dist > gate] = big
        live_rows = np.flatnonzero((cost < big).any(axis=1))
        live_cols = np.flatnonzero((cost < big).any(axis=0))
        if len(live_rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        sub = cost[np.ix_(live_rows, live_cols)]
        r, c = linear_sum_assignment(sub)
        ok = sub[r, c] < big
        return live_rows[r[ok]], live_cols[c[ok]]

    def _advance(self, t: int, rows: np.ndarray, positions: np.ndarray) -> None:
        """Move matched tracks to their new positions and update their smoothed velocities."""
        a = self.config.velocity_smoothing
        steps = (t - self._last_t[rows])[:, None]
        step_vel = (positions - self._pos[rows]) / steps
        self._vel[rows] = (1 - a) * self._vel[rows] + a * step_vel
        self._pos[rows] = positions
        self._last_t[rows] = t

    def _drop_lost(self, t: int) -> np.ndarray:
        """Remove tracks unseen for more than max_gap frames; return their ids."""
        lost = (t - self._last_t) > self.config.max_gap
        lost_ids = self._ids[lost]
        keep = ~lost
        self._ids, self._pos, self._vel, self._last_t = (
            self._ids[keep],
            self._pos[keep],
            self._vel[keep],
            self._last_t[keep],
        )
        return lost_ids

    def _append(self, ids: np.ndarray, positions: np.ndarray, t: int) -> None:
        """Start new tracks at rest."""
        self._ids = np.concatenate([self._ids, ids])
        self._pos = np.vstack([self._pos, positions])
        self._vel = np.vstack([self._vel, np.zeros_like(positions)])
        self._last_t = np.concatenate([self._last_t, np.full(len(ids), t, np.int64)])
