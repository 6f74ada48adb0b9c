"""Neurons entering the field between scans, found in the readout's residual near the field's edge.

A worm moving at 1 um/s brings 5 um of new tissue into the field between two scans 5 s apart. Its neurons
are in no model until the next scan, and their light is read as their in-field neighbours': those are dragged
towards the edge (followed at a third of the true motion, seeds 17 and 23) and a re-scan then finds them
beyond the match radius (an identity switch). Averaged over a few tenths of a second, the residual (frame -
model) shows such a neuron as a blob where no modelled neuron is; its defocus is the stamp that fits the blob
best, its brightness that stamp's least-squares scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from track.detect import gaussian_blur
from track.readout.patches import cut_patches
from track.readout.stamps import StampModel

__all__ = ["EntryConfig", "Entering", "find_entering", "fit_blob"]
REACH_PX = 4  # how far from a blob's peak its neuron's centre is sought (the field's edge cuts blobs off)
COARSE = 4  # fit_blob first tries every COARSE-th tabled defocus


@dataclass(frozen=True)
class EntryConfig:
    """How often and where the residual is searched, and what a blob must show to count as a neuron."""

    every: int = 50  # frames averaged per search (0: never search)
    band_um: float = 8.0  # how far inside the field's edge a blob may lie
    sigma_um: float = 1.0  # Gaussian smoothing of the averaged residual before the search
    min_snr: float = 8.0  # smoothed peak over the smoothed residual's robust noise
    min_share: float = 0.25  # fitted brightness over the median brightness of the scan's neurons
    clear_um: float = 2.0  # lateral distance from every modelled neuron (closer: that neuron's own misfit)

    def __post_init__(self) -> None:
        if self.every < 0 or self.band_um <= 0 or self.sigma_um <= 0 or self.clear_um <= 0:
            raise ValueError("every must be >= 0; band_um, sigma_um and clear_um > 0.")
        if self.min_snr <= 0 or not 0 < self.min_share < 1:
            raise ValueError("min_snr must be > 0 and min_share in (0, 1).")


@dataclass(frozen=True)
class Entering:
    """Blobs taken for entering neurons: (M, 3) positions um (z relative to focus, y, x) and brightness."""

    positions_um: np.ndarray
    brightness: np.ndarray

    def __len__(self) -> int:
        return len(self.brightness)


def find_entering(
    residual: torch.Tensor,
    modelled_px: torch.Tensor,
    stamps: StampModel,
    pixel_size_um: float,
    typical_brightness: float,
    max_defocus_um: float,
    config: EntryConfig | None = None,
) -> Entering:
    """Entering neurons in an (H, W) residual averaged over frames, given the modelled neurons' (N, 2) px
    centres: blobs within ``band_um`` of the edge, ``clear_um`` from every modelled neuron, bright enough;
    each one's defocus (within +/- max_defocus_um) and brightness are those of the best-fitting stamp of
    ``stamps`` (one table: with size groups, the caller picks the group's)."""
    cfg = config or EntryConfig()
    h, w = residual.shape
    px = pixel_size_um
    sigma_px = cfg.sigma_um / px
    smooth = gaussian_blur(residual.float()[None], (0.0, sigma_px, sigma_px))[0]
    noise = 1.4826 * (smooth - smooth.median()).abs().median()
    rows = torch.arange(h, device=residual.device)[:, None].expand(h, w)
    cols = torch.arange(w, device=residual.device)[None, :].expand(h, w)
    edge_px = torch.minimum(torch.minimum(rows, h - 1 - rows), torch.minimum(cols, w - 1 - cols))
    radius = max(1, round(cfg.clear_um / px))
    peak = F.max_pool2d(smooth[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] == smooth
    candidate = peak & (smooth > cfg.min_snr * noise) & (edge_px <= cfg.band_um / px)
    r, c = torch.nonzero(candidate, as_tuple=True)
    empty = Entering(np.zeros((0, 3)), np.zeros(0))
    if len(r) == 0:
        return empty
    centres = torch.stack([r, c], 1).float()
    if len(modelled_px):
        clear = torch.cdist(centres, modelled_px.float()).min(dim=1).values * px > cfg.clear_um
        centres = centres[clear]
    if len(centres) == 0:
        return empty
    fits = [fit_blob(residual.float(), centre, stamps, max_defocus_um, REACH_PX) for centre in centres]
    centres = torch.stack([f[0] for f in fits])
    defocus, brightness = np.array([f[1] for f in fits]), np.array([f[2] for f in fits])
    keep = brightness >= cfg.min_share * typical_brightness
    if not keep.any():
        return empty
    positions = np.column_stack([defocus[keep], centres[keep].double().cpu().numpy() * px])
    return Entering(positions, brightness[keep])


def fit_blob(
    residual: torch.Tensor,
    centre: torch.Tensor,
    stamps: StampModel,
    max_defocus_um: float,
    reach_px: int,
    side: int = 0,
) -> tuple[torch.Tensor, float, float]:
    """For a blob at ``centre`` (2,) px, the centre within ``reach_px`` of it (also beyond the field's edge:
    an entering neuron shows only part of its light) and the tabled defocus (within +/- max_defocus_um)
    whose stamp, scaled by least squares, explains the most of the residual; and that scale. ``side``: +1 or
    -1 keeps the defocus on that side of focus (a stamp seldom tells the sides apart), 0 tries both. Coarse
    to fine: every COARSE-th defocus at every centre, then every defocus near the best at the centres next
    to the best."""
    grid = stamps.defocus_um[(np.abs(stamps.defocus_um) <= max_defocus_um) & (side * stamps.defocus_um >= 0)]
    if len(grid) == 0:
        grid = stamps.defocus_um[[int(np.abs(stamps.defocus_um).argmin())]]
    half = stamps.half_for(float(np.abs(grid).max()))
    centre, depth, _ = _best_fit(residual, _around(centre, reach_px), stamps, grid[::COARSE], half)
    step_um = float(stamps.defocus_um[1] - stamps.defocus_um[0])  # the table's defocus grid is uniform
    near = grid[np.abs(grid - depth) <= COARSE * step_um]
    return _best_fit(residual, _around(centre, min(1, reach_px)), stamps, near, half)


def _around(centre: torch.Tensor, reach_px: int) -> torch.Tensor:
    """(K, 2) whole-pixel offsets of ``centre`` up to ``reach_px`` along each axis."""
    steps = torch.arange(-reach_px, reach_px + 1, dtype=torch.float32, device=centre.device)
    return centre[None] + torch.cartesian_prod(steps, steps).reshape(-1, 2)


def _best_fit(
    residual: torch.Tensor, centres: torch.Tensor, stamps: StampModel, grid: np.ndarray, half: int
) -> tuple[torch.Tensor, float, float]:
    """Of every (centre, defocus) pair, the one whose least-squares scaled stamp explains the most of the
    residual (the least misfit: |residual|^2 less what it explains): its centre, defocus and scale."""
    n_d = len(grid)
    patches = cut_patches(centres.repeat_interleave(n_d, 0), half, residual.shape)
    d = torch.as_tensor(np.tile(grid, len(centres)), dtype=torch.float32, device=residual.device)
    values = stamps.evaluate(patches, d).value * patches.inside
    dot = (values * patches.gather(residual)).sum(dim=(1, 2))
    scale = (dot / (values * values).sum(dim=(1, 2)).clamp(min=1e-30)).clamp(min=0)
    best = int((scale * dot).argmax())
    return centres[best // n_d], float(grid[best % n_d]), float(scale[best])

