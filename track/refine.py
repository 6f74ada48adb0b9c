"""Windowed centroid refinement of known neurons: cheap position updates between full-volume detections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from track.detect import Detections
from track.volume import CheckedVolume, as_volume_tensor, gather_windows

__all__ = ["refine_positions"]


def refine_positions(
    volume: np.ndarray | torch.Tensor | CheckedVolume,
    positions_um: np.ndarray,
    voxel_um: Sequence[float],
    *,
    radius_um: float = 1.5,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    iterations: int = 2,
    min_contrast: float = 0.0,
    device: str | torch.device | None = None,
) -> tuple[Detections, np.ndarray]:
    """Move each position (N, 3) um to the weighted centroid of its window; (detections, found (N,) bool).

    Weights are the window intensity above the window median inside an ellipsoid of radius_um; a neuron is
    `found` when its window peak exceeds the median by more than min_contrast.
    """
    vol = as_volume_tensor(volume, device)
    pos = np.asarray(positions_um, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        return Detections.empty(), np.zeros(0, bool)
    voxel = np.asarray(voxel_um, dtype=np.float64)
    origin = np.asarray(origin_um, dtype=np.float64)
    radius = tuple(int(r) for r in np.maximum(1, np.ceil(radius_um / voxel)))
    voxel_t = torch.as_tensor(voxel, dtype=torch.float32, device=vol.device)
    centre = torch.as_tensor((pos - origin) / voxel, dtype=torch.float32, device=vol.device)
    contrast = torch.zeros(len(pos), dtype=torch.float32, device=vol.device)
    offsets = None
    for _ in range(max(1, iterations)):
        base = centre.round()
        windows, offsets_grid, inside = gather_windows(vol, base.long(), radius)
        flat, inside = windows.reshape(len(pos), -1), inside.reshape(len(pos), -1)
        offsets = offsets_grid.reshape(-1, 3).float() if offsets is None else offsets
        median = flat.median(dim=1).values
        d2 = (((offsets[None] + (base - centre)[:, None]) * voxel_t) ** 2).sum(-1)
        weight = (flat - median[:, None]).clamp(min=0) * (inside & (d2 <= radius_um**2))
        total = weight.sum(dim=1)
        mean_offset = (weight @ offsets) / total.clamp(min=1e-12)[:, None]
        centre = torch.where(total[:, None] > 0, base + mean_offset, centre)
        contrast = (flat.max(dim=1).values - median).clamp(min=0)
    found = (contrast > min_contrast).cpu().numpy()
    out = centre.double().cpu().numpy() * voxel + origin
    return Detections(out, contrast.float().cpu().numpy()), found
