"""Neuron detection in one volume: band-pass smoothing, max-pool peak finding, sub-voxel centroids (torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from track.volume import CheckedVolume, as_volume_tensor

__all__ = [
    "DetectConfig",
    "Detections",
    "detect_neurons",
    "gaussian_blur",
    "max_filter",
    "subvoxel_offsets",
    "suppress_close",
]


@dataclass(frozen=True)
class DetectConfig:
    """Detection parameters in micrometres; defaults suit 2-3 um nuclei."""

    nucleus_um: float = (
        1.5  # band-pass scale (um): 1.5 separates touching 2-3 um nuclei in wide-field volumes
    )
    threshold: float | None = None  # absolute, on the band-passed volume; None = threshold_sigmas * noise
    threshold_sigmas: float = 5.0
    relative_threshold: float = 0.1  # also drop peaks below this fraction of the 95th-percentile peak
    min_distance_um: float | None = None  # closest allowed pair of centres; None = 0.6 * nucleus_um
    # closest allowed pair of centres straight above each other (an ellipsoid with min_distance across);
    # None = min_distance. A wide-field focal scan blurs a nucleus along z, and its image can peak twice
    axial_min_distance_um: float | None = None
    background_factor: float = 0.75  # background Gaussian sigma = background_factor * nucleus_um
    bin_xy: int | None = None  # average y, x pixels in bins of this size first; None = about nucleus_um / 2.5

    def bin_for(self, pixel_um: float) -> int:
        """Lateral binning factor for a pixel size: coarse enough to be fast, fine enough for nuclei."""
        if self.bin_xy is not None:
            return max(1, int(self.bin_xy))
        return max(1, round(self.nucleus_um / 2.5 / pixel_um))

    @property
    def min_distance(self) -> float:
        """Effective closest allowed pair of centres in um."""
        return self.min_distance_um if self.min_distance_um is not None else 0.6 * self.nucleus_um

    @property
    def axial_min_distance(self) -> float:
        """Effective closest allowed pair of centres along z in um."""
        return self.axial_min_distance_um if self.axial_min_distance_um is not None else self.min_distance


@dataclass(frozen=True)
class Detections:
    """Neuron centres (N, 3) in um (z, y, x) and their band-passed peak intensity (N,)."""

    positions_um: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return int(self.positions_um.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 3)), np.zeros(0, np.float32))


def _gaussian_kernel(sigma_vox: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma_vox))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma_vox) ** 2)
    return k / k.sum()


def _padded(x: torch.Tensor, axis: int, r: int) -> torch.Tensor:
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
    return F.pad(x[None, None], pad, mode="replicate")[0, 0]


def gaussian_blur(volume: torch.Tensor, sigma_vox: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of a (Z, Y, X) tensor (shifted sums, replicate borders); sigma < 0.3 skips."""
    x = volume
    for axis, sigma in enumerate(sigma_vox):
        if sigma < 0.3:
            continue
        k = _gaussian_kernel(float(sigma), volume.device).tolist()
        n, padded = x.shape[axis], _padded(x, axis, (len(k) - 1) // 2)
        out = padded.narrow(axis, 0, n) * k[0]
        for i in range(1, len(k)):
            out.add_(padded.narrow(axis, i, n), alpha=k[i])
        x = out
    return x


def max_filter(volume: torch.Tensor, radius_vox: Sequence[int]) -> torch.Tensor:
    """Separable box maximum of a (Z, Y, X) tensor with half-widths radius_vox (max-pool, stride 1)."""
    x = volume
    for axis, r in enumerate(radius_vox):
        if r < 1:
            continue
        n, padded = x.shape[axis], _padded(x, axis, int(r))
        out = padded.narrow(axis, 0, n).clone()
        for i in range(1, 2 * int(r) + 1):
            torch.maximum(out, padded.narrow(axis, i, n), out=out)
        x = out
    return x


def _background(smooth: torch.Tensor, sigma_vox: np.ndarray) -> torch.Tensor:
    """Large-scale background: pool, blur at the coarse scale, upsample (cheap on large volumes)."""
    pool = tuple(int(max(1, min(s // 2, n // 4))) for s, n in zip(sigma_vox, smooth.shape, strict=True))
    coarse = F.avg_pool3d(smooth[None, None], pool, ceil_mode=True)[0, 0]
    coarse = gaussian_blur(coarse, sigma_vox / np.asarray(pool))
    return F.interpolate(coarse[None, None], size=tuple(smooth.shape), mode="trilinear", align_corners=False)[
        0, 0
    ]


def _noise_level(band: torch.Tensor) -> torch.Tensor:
    """Robust (MAD) noise of the band-passed volume from a strided subsample."""
    flat = band.reshape(-1)
    step = max(1, flat.numel() // 200_000)
    sample = flat[::step]
    med = sample.median()
    return 1.4826 * (sample - med).abs().median()


def subvoxel_offsets(band: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-axis 3-point parabola vertex offsets (clipped to +/-0.5 voxel) around integer (M, 3) peaks ``idx``
    of a 3D ``band``; at a border the outer neighbour is the peak itself."""
    offsets = torch.zeros(idx.shape, dtype=torch.float32, device=band.device)
    for axis in range(3):
        n = band.shape[axis]
        if n < 3:
            continue
        lo, hi = idx.clone(), idx.clone()
        lo[:, axis] = (idx[:, axis] - 1).clamp(0, n - 1)
        hi[:, axis] = (idx[:, axis] + 1).clamp(0, n - 1)
        f0 = band[idx[:, 0], idx[:, 1], idx[:, 2]]
        fm = band[lo[:, 0], lo[:, 1], lo[:, 2]]
        fp = band[hi[:, 0], hi[:, 1], hi[:, 2]]
        denom = fm - 2 * f0 + fp
        off = torch.where(denom < 0, 0.5 * (fm - fp) / denom.clamp(max=-1e-12), torch.zeros_like(denom))
        offsets[:, axis] = off.clamp(-0.5, 0.5)
    return offsets


def suppress_close(
    pos_um: np.ndarray,
    strength: np.ndarray,
    min_distance_um: float,
    axial_min_distance_um: float | None = None,
) -> np.ndarray:
    """Greedy suppression of (N, 3) z/y/x points closer than min_distance_um, or axial_min_distance_um
    along z (an ellipsoid; None: a sphere), strongest first; kept indices in order."""
    if len(pos_um) < 2:
        return np.arange(len(pos_um))
    order = np.argsort(-strength, kind="stable")
    if axial_min_distance_um is not None and axial_min_distance_um > 0:
        pos_um = pos_um * np.array([min_distance_um / axial_min_distance_um, 1.0, 1.0])
    tree = cKDTree(pos_um)
    suppressed = np.zeros(len(pos_um), bool)
    for i in order:
        if suppressed[i]:
            continue
        near = tree.query_ball_point(pos_um[i], min_distance_um)
        suppressed[near] = True
        suppressed[i] = False
    return np.flatnonzero(~suppressed)


def detect_neurons(
    volume: np.ndarray | torch.Tensor | CheckedVolume,
    voxel_um: Sequence[float],
    *,
    config: DetectConfig | None = None,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    device: str | torch.device | None = None,
) -> Detections:
    """Find neuron centres in a (Z, Y, X) volume; positions = origin + (index + sub-voxel offset) * voxel."""
    cfg = config or DetectConfig()
    vol = as_volume_tensor(volume, device)
    voxel = np.asarray(voxel_um, dtype=np.float64)
    if voxel.shape != (3,) or not np.all(voxel > 0):
        raise ValueError(f"voxel_um must be three positive sizes (dz, dy, dx) in um, got {voxel_um!r}.")
    b = cfg.bin_for(float(min(voxel[1:])))
    if b > 1:
        vol = F.avg_pool3d(vol[None, None], (1, b, b), ceil_mode=True)[0, 0]
        origin_um = np.asarray(origin_um, dtype=np.float64) + np.array([0.0, 1.0, 1.0]) * (b - 1) / 2 * voxel
        voxel = voxel * np.array([1.0, b, b])
    sigma = (cfg.nucleus_um / 4.0) / voxel
    smooth = gaussian_blur(vol, sigma)
    band = smooth - _background(smooth, cfg.background_factor * cfg.nucleus_um / voxel)
    noise = _noise_level(band)
    threshold = float(cfg.threshold) if cfg.threshold is not None else float(cfg.threshold_sigmas * noise)
    min_dist = cfg.min_distance
    radius = np.maximum(1, np.floor(min_dist / 2.0 / voxel)).astype(int)
    peaks = (band == max_filter(band, radius.tolist())) & (band > threshold)
    idx = peaks.nonzero()
    if idx.shape[0] == 0:
        return Detections.empty()
    strength = band[idx[:, 0], idx[:, 1], idx[:, 2]]
    if cfg.relative_threshold > 0 and idx.shape[0] > 1:
        strong = strength >= cfg.relative_threshold * torch.quantile(strength, 0.95)
        idx, strength = idx[strong], strength[strong]
    offsets = subvoxel_offsets(band, idx)
    pos = (idx.to(torch.float64) + offsets.to(torch.float64)).cpu().numpy() * voxel + np.asarray(origin_um)
    strength_np = strength.float().cpu().numpy()
    keep = suppress_close(pos, strength_np, min_dist, cfg.axial_min_distance)
    return Detections(pos[keep], strength_np[keep])
