"""Defocus response: a radial stamp table S(defocus, radius) per unit brightness, evaluated in torch.

A wide-field image of a nucleus at defocus d is, to a good approximation, radially symmetric; the table
holds its value per pixel (fraction of the nucleus' light) on a grid of defocus (um) and radius (px), and
is read with bilinear interpolation, which also gives the derivatives the motion estimate needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from track.readout.patches import Patches

__all__ = ["Optics", "RadialGrid", "StampModel", "StampValues", "grid_cells", "nominal_stamps", "ring_areas"]


def ring_areas(n_radii: int, radius_step_px: float) -> np.ndarray:
    """(R,) plane area (px^2) each radius column of a stamp table stands for (a row's flux: table @ areas)."""
    r = np.arange(n_radii) * radius_step_px
    return 2 * np.pi * np.maximum(r, radius_step_px / 2) * radius_step_px


def grid_cells(
    x: torch.Tensor, first: float | torch.Tensor, step: float, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation on a uniform grid of n points: each value's lower point (long, at most n - 2)
    and its fraction of the way to the next, the values clamped to the grid."""
    u = ((x - first) / step).clamp(0, n - 1)
    lower = u.clamp(max=n - 2).long()  # truncation is the floor here: u >= 0
    return lower, u - lower


@dataclass(frozen=True)
class RadialGrid:
    """Where each patch pixel falls on a stamp table's radius grid: the lower column and the fraction of the
    way to the next. Worked out once for patches that stay put while many profiles are read from them or much
    light is summed onto radii (a calibration fit), instead of at every plane and iteration."""

    radius: torch.Tensor  # (N, P * P) px from the patch's centre
    lower: torch.Tensor  # (N, P * P) long, at most R - 2
    upper: torch.Tensor  # lower + 1 (kept: index arithmetic on a whole scan's planes would copy it each time)
    fraction: torch.Tensor  # (N, P * P)
    shape: tuple[int, ...]  # (N, P, P)
    n_radii: int

    @classmethod
    def of(cls, patches: Patches, radius_step_px: float, n_radii: int) -> RadialGrid:
        """The grid of ``n_radii`` columns ``radius_step_px`` apart, at ``patches``' pixels."""
        r = torch.hypot(patches.dy, patches.dx).flatten(1)
        lower, fraction = grid_cells(r, 0.0, radius_step_px, n_radii)
        return cls(r, lower, lower + 1, fraction, tuple(patches.dy.shape), n_radii)

    def read(self, profiles: torch.Tensor) -> torch.Tensor:
        """(..., N, R) radial profiles read at every patch pixel: (..., N, P, P)."""
        lead = profiles.shape[:-2]
        lower, upper = (index.expand(*lead, *index.shape) for index in (self.lower, self.upper))
        below, above = profiles.gather(-1, lower), profiles.gather(-1, upper)
        return torch.lerp(below, above, self.fraction.to(profiles.dtype)).reshape(*lead, *self.shape)

    def project(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., N, R) (..., N, P, P) pixels summed onto the radius columns, each shared between its two
        columns by its interpolation weights (the transpose of ``read``), in ``pixels``' dtype. Pixels
        outside the frame must be 0 (as ``Patches.gather`` leaves them)."""
        lead = pixels.shape[:-3]
        flat = pixels.reshape(*lead, *self.lower.shape)
        lower, upper = (index.expand(*lead, *index.shape) for index in (self.lower, self.upper))
        above = flat * self.fraction.to(pixels.dtype)
        out = torch.zeros(*lead, len(self.lower), self.n_radii, dtype=pixels.dtype, device=pixels.device)
        return out.scatter_add_(-1, lower, flat - above).scatter_add_(-1, upper, above)


@dataclass(frozen=True)
class Optics:
    """Nominal optics a rig knows: numerical aperture, emission wavelength, sample refractive index."""

    na: float = 0.75
    wavelength_um: float = 0.52
    sample_index: float = 1.33
    nucleus_diameter_um: float = 2.5  # typical nucleus size, only the starting guess of the in-focus stamp

    def __post_init__(self) -> None:
        if not (0 < self.na < self.sample_index + 0.2) or self.wavelength_um <= 0 or self.sample_index < 1:
            raise ValueError(
                f"Optics need 0 < NA, a positive wavelength and a sample index >= 1; got {self}."
            )

    @property
    def blur_slope(self) -> float:
        """Radius of the geometric defocus blur per um of defocus: tan of the half-angle in the sample."""
        return float(np.tan(np.arcsin(min(self.na / self.sample_index, 0.95))))


@dataclass(frozen=True)
class StampValues:
    """Stamp values at patch pixels and their derivatives by the centre (row, col) and by the defocus, as one
    (N, C, P, P) tensor: C = 1 (values) or 4 (values, d/d row, d/d col, d/d defocus); the fields are views."""

    stacked: torch.Tensor

    @property
    def value(self) -> torch.Tensor:
        """(N, P, P) value per unit brightness."""
        return self.stacked[:, 0]

    @property
    def d_row(self) -> torch.Tensor | None:
        """d value / d centre row (px); None unless derivatives were asked for."""
        return self.stacked[:, 1] if self.stacked.shape[1] > 1 else None

    @property
    def d_col(self) -> torch.Tensor | None:
        """d value / d centre column (px)."""
        return self.stacked[:, 2] if self.stacked.shape[1] > 1 else None

    @property
    def d_defocus(self) -> torch.Tensor | None:
        """d value / d defocus (um)."""
        return self.stacked[:, 3] if self.stacked.shape[1] > 1 else None


@dataclass(frozen=True)
class StampModel:
    """S(defocus_um, radius_px) on a uniform grid; the last radius column is 0 (the stamp's edge).

    With ``groups``, the table holds one such table per group (G, D, R), and neuron n's stamp is read from
    table ``groups[n]`` (nuclei of different sizes blur differently)."""

    defocus_um: np.ndarray  # (D,) uniform, increasing
    radius_step_px: float
    table: np.ndarray  # (D, R) or (G, D, R) float32, value per pixel per unit brightness
    groups: np.ndarray | None = None  # (N,) table of each neuron, with a (G, D, R) table
    # the table and groups as tensors on each device they were read on: evaluate runs every frame, and a copy
    # to a GPU each time would also wait for it
    _on_device: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        grouped = self.groups is not None
        if self.table.ndim != 2 + grouped or self.table.shape[-2] != len(self.defocus_um) or (
            self.table.shape[-1] < 2
        ):
            raise ValueError(
                f"table {self.table.shape} must be ({'groups, ' * grouped}len(defocus_um), >= 2 radii)."
            )
        if grouped and (self.groups.min(initial=0) < 0 or self.groups.max(initial=0) >= len(self.table)):
            raise ValueError(f"groups must index the table's {len(self.table)} groups.")

    @property
    def half_px(self) -> int:
        """Patch half-width that holds the whole stamp (radius grid's extent)."""
        return int(np.ceil((self.table.shape[-1] - 1) * self.radius_step_px / np.sqrt(2)))

    def half_for(self, max_abs_defocus_um: float, energy: float = 0.97) -> int:
        """Smallest patch half-width holding ``energy`` of the light of every stamp up to that |defocus|."""
        rows = np.abs(self.defocus_um) <= max(max_abs_defocus_um, float(np.abs(self.defocus_um).min()))
        table = self.table.reshape(-1, *self.table.shape[-2:])[:, rows].reshape(-1, self.table.shape[-1])
        ring = table * ring_areas(table.shape[1], self.radius_step_px)[None]
        cum = np.cumsum(ring, axis=1) / np.maximum(ring.sum(axis=1, keepdims=True), 1e-30)
        reach = (cum < energy).sum(axis=1).max() + 1
        return int(min(np.ceil(reach * self.radius_step_px) + 1, self.half_px))

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The table and groups on ``device`` (copied there once)."""
        key = str(device)
        if key not in self._on_device:
            groups = None if self.groups is None else torch.as_tensor(self.groups, device=device)
            self._on_device[key] = (torch.as_tensor(self.table, device=device), groups)
        return self._on_device[key]

    def evaluate(
        self,
        patches: Patches,
        defocus_um: torch.Tensor,
        derivatives: bool = False,
        grid: RadialGrid | None = None,
    ) -> StampValues:
        """Values (and, if asked, derivatives) of each neuron's stamp at (N,) defocus at its patch pixels.

        Each neuron's radial profile is first interpolated in defocus (N, R), then read at every pixel's
        radius: two small gathers per output instead of four from the whole table. ``grid``: the patches'
        pixels on this table's radius grid, when the caller reads the same patches many times.
        """
        rows, fu = self._rows_either_side(defocus_um)  # (N, 2, R)
        profile = torch.lerp(rows[:, 0], rows[:, 1], fu[:, None])  # (N, R)
        grid = grid or RadialGrid.of(patches, self.radius_step_px, self.table.shape[-1])
        shape = patches.dy.shape
        n = shape[0]
        if not derivatives:
            return StampValues(grid.read(profile)[:, None])
        # the profile and its slope in defocus read at once: (N, 2, R) at each pixel's two radius columns
        dd = float(self.defocus_um[1] - self.defocus_um[0])
        both = torch.stack([profile, (rows[:, 1] - rows[:, 0]) / dd], 1)
        # (N, 2, P * P) at each pixel's lower and upper radius column
        at = [column[:, None].expand(-1, 2, -1) for column in (grid.lower, grid.upper)]
        lower, upper = both.gather(2, at[0]), both.gather(2, at[1])
        read = torch.lerp(lower, upper, grid.fraction[:, None])  # value, d/d defocus
        # dy = pixel - centre, so moving the centre by +1 row changes r by -dy / r
        slope = (upper[:, :1] - lower[:, :1]) * (-1.0 / self.radius_step_px)
        d_r = slope / grid.radius.clamp(min=1e-3)[:, None]
        offsets = torch.stack([patches.dy, patches.dx], 1).reshape(n, 2, -1)
        stacked = torch.cat([read[:, :1], d_r * offsets, read[:, 1:]], 1)
        return StampValues(stacked.reshape(n, 4, *shape[1:]))

    def profiles(self, defocus_um: torch.Tensor) -> torch.Tensor:
        """(..., N, R) each neuron's radial profile at its (..., N) defocus (e.g. at each plane of a scan)."""
        rows, fu = self._rows_either_side(defocus_um)
        return torch.lerp(rows[..., 0, :], rows[..., 1, :], fu[..., None])

    def _rows_either_side(self, defocus_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The table rows either side of each (..., N) defocus, (..., N, 2, R), and the fraction of the way
        to the second."""
        table, group = self._tensors(defocus_um.device)
        n_d = table.shape[-2]
        d0, dd = float(self.defocus_um[0]), float(self.defocus_um[1] - self.defocus_um[0])
        i0, fu = grid_cells(defocus_um.float(), d0, dd, n_d)
        pair = i0[..., None] + torch.arange(2, device=i0.device)  # the defocus rows either side
        return (table[group[:, None], pair] if group is not None else table[pair]), fu


def nominal_stamps(
    optics: Optics, pixel_size_um: float, max_defocus_um: float, defocus_step_um: float = 0.25,
    radius_step_px: float = 0.5, blur_scale: float = 1.0,
) -> StampModel:
    """Starting guess from the nominal optics: a soft disc of the nucleus widened by the geometric blur
    (times ``blur_scale``).

    Deliberately compact (measured: a vectorial PSF's faint wide tails as the start made neighbouring
    neurons leak into each other and halved the trace correlation); the fit to the scan shapes it.
    """
    if pixel_size_um <= 0 or max_defocus_um <= 0 or defocus_step_um <= 0:
        raise ValueError("pixel size, defocus range and step must be positive.")
    n_half = int(np.ceil(max_defocus_um / defocus_step_um))
    defocus = np.arange(-n_half, n_half + 1) * defocus_step_um
    blur_um = blur_scale * optics.blur_slope * defocus
    radius_um = np.sqrt((optics.nucleus_diameter_um / 2) ** 2 + blur_um**2)
    soft = max(optics.wavelength_um / (2 * optics.na), pixel_size_um)  # edge width: the diffraction limit
    extent_px = (radius_um.max() + 4 * soft) / pixel_size_um
    r_px = np.arange(int(np.ceil(extent_px * np.sqrt(2) / radius_step_px)) + 2) * radius_step_px
    edge = (r_px[None] * pixel_size_um - radius_um[:, None]) / soft
    table = 1.0 / (1.0 + np.exp(np.clip(edge, -50, 50)))
    table += 0.01 * (r_px[None] * pixel_size_um <= 1.5 * radius_um[:, None] + 2 * soft)  # room for tails
    table[:, -1] = 0.0
    table /= table @ ring_areas(len(r_px), radius_step_px)[:, None]
    return StampModel(np.round(defocus, 6), radius_step_px, table.astype(np.float32))
