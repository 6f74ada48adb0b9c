"""Windowed centroid refinement of known neurons: cheap position updates between full-volume detections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from track.detect import Detections
from track.volume import as_volume_tensor, gather_windows

__all__ = ["refine_positions"]


def refine_positions(
    volume: np.ndarray | torch.Tensor,
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
    voxel_t = torch.as_tensor(voxel, device=vol.device)
    centre = torch.as_tensor((pos - origin) / voxel, device=vol.device)
    contrast = torch.zeros(len(pos), dtype=torch.float64, device=vol.device)
    for _ in range(max(1, iterations)):
        base = centre.round().long()
        windows, offsets, inside = gather_windows(vol, base, radius)
        flat = windows.reshape(len(pos), -1).double()
        median = flat.median(dim=1).values
        rel = offsets[None].double() + base[:, None, None, None, :] - centre[:, None, None, None, :]
        mask = inside & (((rel * voxel_t) ** 2).sum(-1) <= radius_um**2)
        weight = (windows.double() - median[:, None, None, None]).clamp(min=0) * mask
        total = weight.sum(dim=(1, 2, 3))
        shift = (weight[..., None] * rel).sum(dim=(1, 2, 3)) / total.clamp(min=1e-12)[:, None]
        centre = torch.where(total[:, None] > 0, centre + shift, centre)
        contrast = (flat.max(dim=1).values - median).clamp(min=0)
    found = (contrast > min_contrast).cpu().numpy()
    out = centre.cpu().numpy() * voxel + origin
    return Detections(out, contrast.float().cpu().numpy()), found
