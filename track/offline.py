"""Offline tracking of a recording: detect in every volume, link globally with gap closing (laptrack)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch

from track.activity import ActivityConfig, dff_traces, sample_intensity
from track.detect import DetectConfig, Detections, detect_neurons
from track.volume import as_volume_tensor

__all__ = ["OfflineConfig", "TrackTable", "link_global", "link_measurements", "measure_volume", "track_volumes"]


@dataclass(frozen=True)
class OfflineConfig:
    """Global linking gate (um), longest gap closed (frames) and the dF/F baseline."""

    max_distance_um: float = 2.0
    max_gap: int = 20
    activity: ActivityConfig = field(default_factory=ActivityConfig)


@dataclass(frozen=True)
class TrackTable:
    """Tracks in long form, one row per (frame, neuron): t, id, positions (N, 3) um, intensity, dF/F."""

    t: np.ndarray
    ids: np.ndarray
    positions_um: np.ndarray
    intensity: np.ndarray
    dff: np.ndarray

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, positions_um, intensity, dff) of frame t."""
        sel = self.t == t
        return self.ids[sel], self.positions_um[sel], self.intensity[sel], self.dff[sel]


def link_global(detections: Sequence[Detections], config: OfflineConfig | None = None) -> list[np.ndarray]:
    """Track id of every detection of every frame from one global LAP with gap closing (laptrack).

    Ids count from 0 in order of each track's first detection (frame, then row), so they are deterministic.
    """
    from laptrack import LapTrack

    cfg = config or OfflineConfig()
    frames = [np.asarray(d.positions_um, dtype=np.float64).reshape(-1, 3) for d in detections]
    lt = LapTrack(
        metric="sqeuclidean",
        cutoff=cfg.max_distance_um**2,
        gap_closing_metric="sqeuclidean",
        gap_closing_cutoff=cfg.max_distance_um**2 if cfg.max_gap > 0 else False,
        gap_closing_max_frame_count=max(1, cfg.max_gap),
        splitting_cutoff=False,
        merging_cutoff=False,
    )
    ids = [np.full(len(f), -1, np.int64) for f in frames]
    if sum(len(f) for f in frames) == 0:
        return ids
    graph = lt.predict([f if len(f) else np.zeros((0, 3)) for f in frames])
    graph.add_nodes_from((t, j) for t, f in enumerate(frames) for j in range(len(f)))
    components = sorted(min(c) for c in nx.weakly_connected_components(graph))
    first_to_id = {node: k for k, node in enumerate(components)}
    for component in nx.weakly_connected_components(graph):
        tid = first_to_id[min(component)]
        for t, j in component:
            ids[t][j] = tid
    return ids


def measure_volume(
    volume: np.ndarray | torch.Tensor,
    voxel_um: Sequence[float],
    *,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    detect: DetectConfig | None = None,
    config: OfflineConfig | None = None,
    device: str | torch.device | None = None,
) -> tuple[Detections, np.ndarray]:
    """Neurons detected in one volume and their sphere intensities: the per-volume half of offline tracking."""
    cfg = config or OfflineConfig()
    vol = as_volume_tensor(volume, device)
    det = detect_neurons(vol, voxel_um, config=detect, origin_um=origin_um)
    return det, sample_intensity(vol, det.positions_um, voxel_um, radius_um=cfg.activity.radius_um,
                                 origin_um=origin_um)  # fmt: skip


def link_measurements(
    detections: Sequence[Detections], intensities: Sequence[np.ndarray], config: OfflineConfig | None = None
) -> TrackTable:
    """Every volume's detections (in order) linked globally, with intensity and dF/F per track."""
    cfg = config or OfflineConfig()
    ids = link_global(detections, cfg)
    t = np.repeat(np.arange(len(detections)), [len(d) for d in detections])
    ids_flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    positions = np.concatenate([d.positions_um for d in detections]) if detections else np.zeros((0, 3))
    intensity = np.concatenate(intensities).astype(np.float32) if len(intensities) else np.zeros(0, np.float32)
    return TrackTable(
        t, ids_flat, positions, intensity, _dff_per_track(t, ids_flat, intensity, len(detections), cfg)
    )


def track_volumes(
    volumes: Iterable[np.ndarray | torch.Tensor],
    voxel_um: Sequence[float],
    *,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    detect: DetectConfig | None = None,
    config: OfflineConfig | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrackTable:
    """Detect neurons in every volume (in order), link globally, measure intensity and dF/F per track."""
    detections: list[Detections] = []
    intensities: list[np.ndarray] = []
    for i, volume in enumerate(volumes):
        det, intensity = measure_volume(volume, voxel_um, origin_um=origin_um, detect=detect, config=config,
                                        device=device)  # fmt: skip
        detections.append(det)
        intensities.append(intensity)
        if progress is not None:
            progress(i + 1)
    return link_measurements(detections, intensities, config)


def _dff_per_track(
    t: np.ndarray, ids: np.ndarray, intensity: np.ndarray, n_frames: int, cfg: OfflineConfig
) -> np.ndarray:
    """dF/F of every row: each track's intensity trace over frames with the running-percentile baseline."""
    if len(ids) == 0:
        return np.zeros(0, np.float32)
    uniq, row = np.unique(ids, return_inverse=True)
    traces = np.full((len(uniq), n_frames), np.nan)
    traces[row, t] = intensity
    return dff_traces(traces, cfg.activity)[row, t]
