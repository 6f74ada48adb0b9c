"""The defocus tables of uniform balls of several diameters, as one linear map of a radial PSF table.

A nucleus is, to a good approximation, a uniformly stained ball, and its wide-field image at defocus d is
the sum over its slices of the PSF at that slice's defocus blurred by the slice's disc. Every nucleus shares
the PSF, so all of them inform one PSF table, and a nucleus' size becomes one number instead of a free table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from track.readout.stamps import ring_areas

__all__ = ["BallBlur", "ball_blur"]

_SLICE_UM = 0.025  # thickness of the slices a ball is summed over
_SUBSAMPLE = 16  # radial integration points per table radius step
_DISC_RADIUS_STEP_PX = 0.05  # grid of slice radii whose disc matrices are computed; others interpolate


@dataclass(frozen=True)
class BallBlur:
    """PSF table (D + 2m, R) -> ball tables (G, D, R): ``weights[g, j]`` maps PSF row i + j to ball row i."""

    diameters_um: np.ndarray  # (G,) increasing
    weights: torch.Tensor  # (G, 2m + 1, R, R)

    @property
    def margin_rows(self) -> int:
        """PSF rows beyond the ball tables' defocus range on each side (the largest ball's half-depth)."""
        return (self.weights.shape[1] - 1) // 2

    def apply(self, psf: torch.Tensor) -> torch.Tensor:
        """(G, D, R) defocus tables of every ball from the (D + 2m, R) PSF table."""
        return torch.einsum("jdr,gjrs->gds", self._shifted(psf), self.weights)

    def adjoint(self, tables: torch.Tensor) -> torch.Tensor:
        """The transpose of ``apply``: (G, D, R) per-table-cell sums -> (D + 2m, R) per-PSF-cell sums."""
        per_shift = torch.einsum("gds,gjrs->jdr", tables, self.weights)  # (2m + 1, D, R)
        n_shifts, n_d = per_shift.shape[:2]
        device = tables.device
        rows = torch.arange(n_shifts, device=device)[:, None] + torch.arange(n_d, device=device)
        out = tables.new_zeros(n_d + n_shifts - 1, tables.shape[2])
        return out.index_add_(0, rows.flatten(), per_shift.reshape(-1, tables.shape[2]))  # shift j: rows j..

    def _shifted(self, psf: torch.Tensor) -> torch.Tensor:
        """(2m + 1, D, R): the PSF's rows j .. j + D - 1 for every shift j (views, no copies)."""
        n_d = psf.shape[0] - 2 * self.margin_rows
        return psf.unfold(0, n_d, 1).transpose(1, 2)


def ball_blur(
    diameters_um: np.ndarray,
    defocus_step_um: float,
    radius_step_px: float,
    n_radii: int,
    pixel_size_um: float,
    device: torch.device | str = "cpu",
) -> BallBlur:
    """The map for balls of ``diameters_um`` on a table grid (defocus step, radius step in px, radii)."""
    diameters = np.asarray(diameters_um, np.float64)
    if diameters.ndim != 1 or len(diameters) == 0 or diameters.min() <= 0 or np.any(np.diff(diameters) <= 0):
        raise ValueError(f"Ball diameters must be positive and increasing; got {diameters}.")
    grid = (defocus_step_um, radius_step_px, n_radii, pixel_size_um)
    weights = _ball_weights(tuple(diameters.tolist()), *grid)
    return BallBlur(diameters, torch.tensor(weights, device=device))


@lru_cache(maxsize=4)  # every re-scan of a run asks for the same map
def _ball_weights(
    diameters_um: tuple[float, ...], defocus_step_um: float, radius_step_px: float, n_radii: int,
    pixel_size_um: float,
) -> np.ndarray:
    """(G, 2m + 1, R in, R out) float32 weights of ``BallBlur``."""
    margin = int(np.ceil(max(diameters_um) / 2 / defocus_step_um))
    weights = np.zeros((len(diameters_um), 2 * margin + 1, n_radii, n_radii))
    areas = ring_areas(n_radii, radius_step_px)
    s = (np.arange((n_radii - 1) * _SUBSAMPLE) + 0.5) * radius_step_px / _SUBSAMPLE  # integration radii
    basis = np.maximum(0, 1 - np.abs(s[None] / radius_step_px - np.arange(n_radii)[:, None]))  # (R in, S)
    on_grid: dict[int, np.ndarray] = {}

    def discs(radius_px: float) -> np.ndarray:
        """The disc matrix of ``radius_px``, interpolated between those of a fine grid of radii (computed
        once each: every ball's slices share them)."""
        u = radius_px / _DISC_RADIUS_STEP_PX
        q = int(np.floor(u))
        for k in (q, q + 1):
            if k not in on_grid:
                on_grid[k] = _disc_matrix(k * _DISC_RADIUS_STEP_PX, radius_step_px, s, basis, areas)
        return (q + 1 - u) * on_grid[q] + (u - q) * on_grid[q + 1]

    for g, diameter in enumerate(diameters_um):
        half = diameter / 2
        n_slices = max(1, int(np.ceil(diameter / _SLICE_UM)))
        offsets = (np.arange(n_slices) + 0.5) / n_slices * diameter - half  # slice centres (um)
        slice_radius = np.sqrt(np.maximum(half**2 - offsets**2, 0))
        share = slice_radius**2 / (slice_radius**2).sum()  # a slice's share of the ball's light
        for i in range((n_slices + 1) // 2):  # slices i and n - 1 - i mirror each other: one disc for both
            disc = share[i] * discs(slice_radius[i] / pixel_size_um)
            for offset in {offsets[i], offsets[n_slices - 1 - i]}:
                u = offset / defocus_step_um + margin  # PSF rows read with linear interpolation in defocus
                j0 = min(int(np.floor(u)), 2 * margin - 1)
                f = u - j0
                weights[g, j0] += (1 - f) * disc
                weights[g, j0 + 1] += f * disc
    out = weights.transpose(0, 1, 3, 2).astype(np.float32)
    out.flags.writeable = False  # shared by every caller of the cache
    return out


def _disc_matrix(
    radius_px: float, radius_step_px: float, s: np.ndarray, basis: np.ndarray, areas: np.ndarray
) -> np.ndarray:
    """(R out, R in) radial profile of a radial profile blurred by a uniform disc of ``radius_px``: the
    profile is read linearly between table radii (``basis`` at the integration radii ``s``); columns rescaled
    so each keeps its flux (``areas``)."""
    n_radii = len(basis)
    if radius_px < radius_step_px / 8:
        return np.eye(n_radii)
    r = np.arange(n_radii)[:, None] * radius_step_px  # output radii (R out, 1)
    # angle of the circle of radius s (around the origin) inside the disc centred at distance r
    cos = (s[None] ** 2 + r**2 - radius_px**2) / np.maximum(2 * s[None] * r, 1e-12)
    angle = np.where(r == 0, np.where(s[None] < radius_px, np.pi, 0.0), np.arccos(np.clip(cos, -1, 1)))
    arc = 2 * s[None] * angle / (np.pi * radius_px**2) * (s[1] - s[0])  # (R out, S)
    matrix = arc @ basis.T  # (R out, R in)
    matrix[-1] = 0.0  # the table's edge
    kept = areas @ matrix
    return matrix * np.where(kept > 0, areas / np.maximum(kept, 1e-30), 0.0)[None]
