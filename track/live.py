"""Per-volume tracking for the live pipeline: detect (or refine known neurons), link, sample activity."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from track.activity import sample_intensity
from track.detect import DetectConfig, Detections, detect_neurons, suppress_close
from track.online import OnlineTracker, TrackerConfig, TrackState
from track.refine import refine_positions
from track.volume import CheckedVolume, checked_volume

__all__ = ["LiveTracker", "LiveTrackerConfig"]


@dataclass(frozen=True)
class LiveTrackerConfig:
    """Voxel geometry of the volumes and the detection, linking and refinement settings.

    detect_every = 1 runs full detection on every volume; N > 1 runs it every N-th volume and moves the known
    neurons by windowed centroid refinement in between (much cheaper on a CPU; new neurons wait for the next
    full detection).
    """

    voxel_um: tuple[float, float, float]
    origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    detect: DetectConfig = field(default_factory=DetectConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    detect_every: int = 1
    refine_radius_um: float = 1.5


class LiveTracker:
    """Turns each (Z, Y, X) volume into a TrackState; call process() once per volume, in time order."""

    def __init__(self, config: LiveTrackerConfig, device: str | torch.device | None = None) -> None:
        if config.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {config.detect_every}.")
        self.config = config
        self.device = torch.device(device) if device is not None else None
        self.tracker = OnlineTracker(config.tracker)
        self._count = 0

    def detections(self, t: int, volume: CheckedVolume) -> Detections:
        """Full detection on schedule, else refined predictions of live tracks (duplicates: older wins)."""
        cfg = self.config
        full = self._count % cfg.detect_every == 0 or self.tracker.n_active == 0
        self._count += 1
        if full:
            return detect_neurons(volume, cfg.voxel_um, config=cfg.detect, origin_um=cfg.origin_um)
        ids, predicted = self.tracker.predict(t)
        det, found = refine_positions(
            volume, predicted, cfg.voxel_um, radius_um=cfg.refine_radius_um, origin_um=cfg.origin_um
        )
        found = np.flatnonzero(found)
        keep = found[
            suppress_close(det.positions_um[found], -ids[found].astype(np.float64), cfg.detect.min_distance)
        ]
        return Detections(det.positions_um[keep], det.intensity[keep])

    def process(self, t: int, volume: np.ndarray | torch.Tensor) -> TrackState:
        """Detect or refine, link to tracks, and measure sphere intensity and dF/F for frame t (the volume is
        validated and moved to the tracker's device once, here)."""
        vol = checked_volume(volume, self.device)
        det = self.detections(t, vol)
        intensity = sample_intensity(
            vol,
            det.positions_um,
            self.config.voxel_um,
            radius_um=self.config.tracker.activity.radius_um,
            origin_um=self.config.origin_um,
        )
        return self.tracker.update(t, det, intensity)
