"""Estimate the defocus response from a calibration focal scan around its detected neurons.

The scan images every neuron at many defocus values. The stamp table, each neuron's brightness and each
plane's background are fitted jointly to the scan (non-negative multiplicative updates of a least-squares
fit, Lee & Seung), starting from the nominal optics, on the planes that see all but the deepest and
shallowest few neurons within the table's defocus range (those few are modelled with its last row). Every
defocus row of the table carries unit flux:
a wide-field camera collects a nucleus' light whatever the focus, so a brightness means the same at every
depth and in every scan (left free, the rows' flux wandered by 5-10% from scan to scan and scaled the traces).
Nuclei of different sizes blur differently (not just wider). A nucleus is modelled as a uniform ball: the
tables of balls of several diameters are one linear map of a single radial PSF table, which all nuclei
inform and which is what the fit shapes; each neuron takes the diameter whose table explains its light in
the scan best, chosen anew as the PSF sharpens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from track.readout.balls import BallBlur, ball_blur
from track.readout.patches import cut_patches
from track.readout.stamps import Optics, RadialGrid, StampModel, grid_cells, nominal_stamps, ring_areas

__all__ = ["StampFitConfig", "StampFit", "fit_stamps"]

PLANES_PER_STEP_CPU = 1
"""Scan planes the fit works on at once on a CPU by default: one, whose temporaries stay in the caches. One
thread, run alternately on this (noisy) 2-core machine: seed 11's first scan (256x256, 135 neurons, 45 planes)
1 plane a step 9.7 / 9.5 s, 4 planes 8.8 / 11.1 s, 8 planes 9.8 / 12.7 s, all at once 14.0 / 15.3 s; the
bench's worm (512x512, 200 neurons) 1 plane 15.1 / 16.2 s, 2 planes 19.9 / 18.7 s, 4 planes 16.6 / 26.4 s."""


@dataclass(frozen=True)
class StampFitConfig:
    """Defocus range and grid of the fitted table and iterations."""

    max_defocus_um: float = 10.0
    # the deepest and the shallowest neurons the fitted scan planes may see beyond max_defocus_um. With none,
    # the fit saw seed 11's neurons on 13 planes, targettrack ex6's on 4 (and a specimen deeper than 20 um
    # on too few to fit); with 10%, on 22 and 15 planes. 60 s, seeds 11 / 13 / 17 / 23: median r 0.934 /
    # 0.959 / 0.917 / 0.944 -> 0.939 / 0.960 / 0.921 / 0.950, 25% quantile +0.01-0.04; targettrack 0.676 ->
    # 0.707; calibration 1.55x the CPU time
    out_of_range_share: float = 0.1
    defocus_step_um: float = 0.25
    radius_step_px: float = 0.5
    iterations: int = 32
    # nucleus diameters (balls sharing one PSF), size_groups of them evenly over size_range x the nominal
    # diameter (1: the nominal one only); a size group is a diameter. Against 3 free tables, 60 s, seeds
    # 11 / 13 / 17 / 23: median r 0.936 / 0.952 / 0.909 / 0.933 -> 0.931 / 0.956 / 0.913 / 0.939, r >= 0.9 for
    # 0.59 / 0.70 / 0.54 / 0.62 -> 0.59 / 0.72 / 0.57 / 0.63, 10% quantile 0.59 / 0.63 / 0.42 / 0.40 -> 0.56 /
    # 0.67 / 0.54 / 0.50 (with iterations 32 and group_iterations 12, the PSF's deconvolution being slower)
    size_groups: int = 12
    size_range: tuple[float, float] = (0.5, 1.6)
    # iterations after the nominal-size ones; every second one, from the first, gives each neuron the diameter
    # whose table explains its light best
    group_iterations: int = 12
    # the starting PSF's blur over the nominal optics' geometric one: the fit narrows a table readily but
    # widens it little. Seed 11: from the nominal blur the tables 6-9 um from focus stay 46% off the
    # simulator's radial profile (from 1.3x: 12%, 1.6x: 22%), yet 1.3x read no better over 60 s (seeds
    # 11 / 13: median r 0.931 / 0.956 -> 0.935 / 0.956, 10% quantile 0.56 / 0.67 -> 0.54 / 0.64), 1.5x slower
    start_blur_scale: float = 1.0
    # exponent of the PSF's multiplicative update (over-relaxed, as Richardson-Lucy is accelerated): the
    # deconvolution converges slowly. Seed 11, first scan, relative residual 0.0130 with 1 (0.0120 after twice
    # the iterations), 0.0120 / 0.0114 / 0.0112 / 0.0110 with 2 / 3 / 4 / 6, the tables 4-6 um from focus 22%
    # -> 10% off the simulator's; 60 s, seeds 11 / 13 / 17 / 23: median r 0.931 / 0.956 / 0.913 / 0.939 ->
    # 0.934 / 0.959 / 0.917 / 0.944, r >= 0.9 for 0.59 / 0.72 / 0.57 / 0.63 -> 0.62 / 0.72 / 0.59 / 0.66
    psf_step: float = 4.0
    # scan planes each step of the fit works on at once; 0: all on a GPU (one kernel launch per step, not one
    # per plane: a GPU's fit went on launching them), PLANES_PER_STEP_CPU on a CPU (its caches favour one)
    planes_per_step: int = 0

    def __post_init__(self) -> None:
        if min(self.size_groups, self.iterations) < 1 or min(self.group_iterations, self.planes_per_step) < 0:
            raise ValueError(
                "size_groups and iterations must be >= 1, group_iterations and planes_per_step >= 0."
            )
        if not 0 <= self.out_of_range_share < 0.5:
            raise ValueError(f"out_of_range_share must be in [0, 0.5), got {self.out_of_range_share}.")
        if self.start_blur_scale <= 0 or self.psf_step <= 0:
            raise ValueError(f"start_blur_scale and psf_step must be positive, got {self}.")
        if not 0 < self.size_range[0] <= 1 <= self.size_range[1]:
            raise ValueError(f"size_range {self.size_range} must hold 1 (the nominal diameter) and be > 0.")

    def planes_at_once(self, n_planes: int, device: torch.device) -> int:
        """Scan planes each step of the fit works on at once on ``device``."""
        if self.planes_per_step > 0:
            return min(self.planes_per_step, n_planes)
        return n_planes if device.type != "cpu" else PLANES_PER_STEP_CPU

    def diameters_um(self, nominal_um: float) -> np.ndarray:
        """The nucleus diameters the fit chooses from."""
        if self.size_groups == 1:
            return np.array([nominal_um])
        return nominal_um * np.linspace(*self.size_range, self.size_groups)


@dataclass(frozen=True)
class StampFit:
    """The fitted stamps, each neuron's scan brightness, the scan planes used and the fit's relative error."""

    stamps: StampModel
    brightness: np.ndarray  # (N,) in the stamps' units (stamp at 0 um sums to 1)
    planes_used: np.ndarray  # (K,) indices into the scan
    relative_residual: float
    group_evidence: np.ndarray | None = None  # (N, G) share of each neuron's light each table explains
    residual: torch.Tensor | None = None  # (K, H, W) the used planes less the fitted scan


def _planes_covering(z_um: np.ndarray, neuron_z_um: np.ndarray, max_defocus_um: float, share: float):
    """Scan planes from which every neuron but the deepest and the shallowest ``share`` lies within
    max_defocus_um (those are modelled there with the table's last row, as the live readout models them)."""
    lo = np.quantile(neuron_z_um, 1 - share) - max_defocus_um
    hi = np.quantile(neuron_z_um, share) + max_defocus_um
    return np.flatnonzero((z_um >= lo) & (z_um <= hi))


def fit_stamps(
    stack: torch.Tensor,
    z_um: np.ndarray,
    positions_um: np.ndarray,
    pixel_size_um: float,
    optics: Optics,
    config: StampFitConfig | None = None,
    group_evidence: np.ndarray | None = None,
) -> StampFit:
    """Fit S(defocus, radius), brightness (N,) and plane backgrounds to a (Z, H, W) scan with focus z_um.

    ``group_evidence`` (N, G): earlier scans' evidence for each neuron's size group (rows of 0 for neurons
    seen first), added to this scan's, so that a neuron keeps its table unless the evidence turns."""
    cfg = config or StampFitConfig()
    if len(positions_um) == 0:
        raise ValueError("No neurons to fit the defocus response to; the calibration scan found none.")
    z = np.asarray(z_um, np.float64)
    planes = _planes_covering(z, positions_um[:, 0], cfg.max_defocus_um, cfg.out_of_range_share)
    if len(planes) < 3:
        raise ValueError(
            f"The scan has {len(planes)} planes within {cfg.max_defocus_um} um of the neurons (depths "
            f"{positions_um[:, 0].min():.1f}..{positions_um[:, 0].max():.1f} um); scan at least 3 planes "
            "spanning the neurons' depth, e.g. -12..12 um around focus."
        )
    model = nominal_stamps(optics, pixel_size_um, cfg.max_defocus_um, cfg.defocus_step_um, cfg.radius_step_px,
                           cfg.start_blur_scale)  # fmt: skip
    device = stack.device
    diameters = cfg.diameters_um(optics.nucleus_diameter_um)
    blur = ball_blur(diameters, cfg.defocus_step_um, cfg.radius_step_px, model.table.shape[-1], pixel_size_um,
                     device)  # fmt: skip
    psf = _nominal_psf(optics, pixel_size_um, cfg, blur, model.table.shape[-1]).to(device)
    data = stack[torch.as_tensor(planes, device=device)].float()
    shape = (int(data.shape[1]), int(data.shape[2]))
    centres = torch.as_tensor(positions_um[:, 1:] / pixel_size_um, dtype=torch.float32, device=device)
    patches = cut_patches(centres, model.half_for(cfg.max_defocus_um), shape)
    grid = RadialGrid.of(patches, model.radius_step_px, model.table.shape[-1])
    seen = patches.gather(data)  # (K, N, P, P): the patches never move
    seen_on_radii = grid.project(seen)  # (K, N, R)
    per_step = cfg.planes_at_once(len(planes), device)
    steps = [slice(k, k + per_step) for k in range(0, len(planes), per_step)]
    defocus = torch.as_tensor(
        positions_um[None, :, 0] - z[planes, None],
        dtype=torch.float32,
        device=device,
    )  # (K, N)
    stride = max(1, data[0].numel() // 100_000)
    background = torch.quantile(data.reshape(len(planes), -1)[:, ::stride], 0.1, dim=1)
    n_groups = len(diameters)
    groups = np.full(len(positions_um), int(np.argmin(np.abs(diameters - optics.nucleus_diameter_um))))
    tables = blur.apply(psf)
    nominal = StampModel(model.defocus_um, model.radius_step_px, tables[groups[0]].cpu().numpy())
    brightness = _initial_brightness(seen, background, patches, defocus, nominal)
    evidence = None
    if group_evidence is not None and group_evidence.shape != (len(positions_um), n_groups):
        group_evidence = None  # another number of sizes: start afresh

    def stamps_at_planes(tables, groups):
        """The stamps of ``tables`` and ``groups`` and their values (K, N, P, P) at every used plane (they
        change only with the tables or the groups, not with a brightness step)."""
        stamps = StampModel(model.defocus_um, model.radius_step_px, tables.cpu().numpy(), groups)
        return stamps, torch.cat([grid.read(stamps.profiles(defocus[step])) for step in steps])

    regroup_at = set(range(cfg.iterations, cfg.iterations + cfg.group_iterations, 2) if n_groups > 1 else ())
    current, values = stamps_at_planes(tables, groups)
    for it in range(cfg.iterations + (cfg.group_iterations if n_groups > 1 else 0)):
        if it in regroup_at:
            evidence = _group_evidence(
                seen, background, patches, grid, defocus, current, brightness, values, steps
            )
            if group_evidence is not None:
                evidence = evidence + group_evidence
            groups = evidence.argmax(axis=1)
            current, values = stamps_at_planes(tables, groups)
        fitted = _render_scan(values, patches, brightness, background, steps)
        if it % 2 == 0:
            brightness, background = _update_brightness(
                data, seen, fitted, patches, values, brightness, background, steps
            )
        else:
            psf = _update_psf(
                seen_on_radii, fitted, patches, grid, defocus, current, brightness, psf, blur, cfg.psf_step,
                steps,
            )  # fmt: skip
            tables = blur.apply(psf)
            current, values = stamps_at_planes(tables, groups)
    fitted = _render_scan(values, patches, brightness, background, steps)
    final = current if n_groups > 1 else StampModel(model.defocus_um, model.radius_step_px, current.table[0])
    signal = ((data - background[:, None, None]) ** 2).sum().clamp(min=1e-12)
    left = data - fitted
    return StampFit(final, brightness.cpu().numpy(), planes, float((left**2).sum() / signal), evidence, left)


def _initial_brightness(seen, background, patches, defocus, model: StampModel) -> torch.Tensor:
    """Light within the stamp of each neuron's sharpest plane, divided by that stamp's share of it.

    ``seen`` (K, N, P, P): every used plane gathered on the patches."""
    nearest = defocus.abs().argmin(dim=0)  # (N,)
    n = torch.arange(defocus.shape[1], device=seen.device)
    values = model.evaluate(patches, defocus[nearest, n]).value
    light = (seen[nearest, n] - background[nearest, None, None]) * patches.inside
    return ((light * values).sum(dim=(1, 2)) / (values**2).sum(dim=(1, 2)).clamp(min=1e-12)).clamp(min=1.0)


def _render_scan(values, patches, brightness, background, steps) -> torch.Tensor:
    """The fitted scan (K, H, W): each plane's background plus every neuron's stamp (``values`` (K, N, P, P))
    scaled by its brightness; ``steps``: the plane slices worked on at once."""
    b = brightness[:, None, None]
    return torch.cat([background[s, None, None] + patches.render(b * values[s]) for s in steps])


def _update_brightness(data, seen, fitted, patches, values, brightness, background, steps):
    """One multiplicative step of every neuron's brightness and every plane's background."""
    num = sum((values[s] * seen[s]).sum(dim=(0, 2, 3)) for s in steps)
    den = sum((values[s] * patches.gather(fitted[s])).sum(dim=(0, 2, 3)) for s in steps)
    scale = data.sum(dim=(1, 2)) / fitted.sum(dim=(1, 2)).clamp(min=1e-12)
    return brightness * num / den.clamp(min=1e-12), background * scale


def _own_light(seen, background, patches, light) -> torch.Tensor:
    """(K, N, P, P) each neuron's own light in every scan plane (``seen``: gathered on the patches), in the
    frame: the planes less their (K,) backgrounds and the other neurons' modelled light (``light``: every
    neuron's modelled light on its patch)."""
    others = patches.gather(patches.render(light)) - light
    return (seen - background[:, None, None, None] - others) * patches.inside


def _group_evidence(
    seen, background, patches, grid: RadialGrid, defocus, model: StampModel, brightness, values, steps
) -> np.ndarray:
    """(N, G) share of each neuron's own light over the scan (its data less the background and its
    neighbours' modelled light) that each group's table explains, at its best-fitting brightness.

    A stamp is linear in its radial profile, so each plane's own light is first summed onto the profile's
    radii (N, R): every table is then scored with a product of profiles instead of a pass over the pixels."""
    device = seen.device
    table = torch.as_tensor(model.table, device=device)  # (G, D, R)
    n_d, n_r = table.shape[-2:]
    n = len(brightness)
    j0, fv = grid.lower, grid.fraction
    inside = patches.inside.reshape(n, -1).float()
    w0, w1 = (1 - fv) * inside, fv * inside  # each pixel's weights on radii j0 and j0 + 1
    # a profile's power on the patch: profile' Q profile, Q tridiagonal from the pixels' weights
    diagonal = torch.zeros(n, n_r, dtype=torch.float64, device=device)
    diagonal.scatter_add_(1, j0, (w0 * w0).double()).scatter_add_(1, grid.upper, (w1 * w1).double())
    off = torch.zeros_like(diagonal).scatter_add_(1, j0, (w0 * w1).double())
    d0, dd = float(model.defocus_um[0]), float(model.defocus_um[1] - model.defocus_um[0])
    cross = torch.zeros(len(table), n, dtype=torch.float64, device=device)
    power = torch.zeros_like(cross)
    energy = torch.zeros(n, dtype=torch.float64, device=device)
    for s in steps:
        own = _own_light(seen[s], background[s], patches, brightness[:, None, None] * values[s])
        energy += (own * own).sum(dim=(0, 2, 3)).double()
        i0, fu = grid_cells(defocus[s], d0, dd, n_d)  # (k, N)
        profile = torch.lerp(table[:, i0], table[:, i0 + 1], fu[..., None]).double()  # (G, k, N, R)
        cross += (profile * grid.project(own.double())).sum(dim=(1, 3))
        neighbours = (profile[..., :-1] * profile[..., 1:] * off[:, :-1]).sum(dim=(1, 3))
        power += (profile**2 * diagonal).sum(dim=(1, 3)) + 2 * neighbours
    explained = cross.clamp(min=0) ** 2 / power.clamp(min=1e-30)  # squared error removed at the best scale
    return (explained / energy.clamp(min=1e-30)).T.cpu().numpy()


def _nominal_psf(optics: Optics, pixel_size_um: float, cfg: StampFitConfig, blur: BallBlur, n_radii: int):
    """(D + 2m, R) starting PSF table: the nominal stamps of a point (see ``nominal_stamps``) over the ball
    tables' defocus range widened by the largest ball's half-depth, cut to their radii."""
    reach = cfg.max_defocus_um + blur.margin_rows * cfg.defocus_step_um
    point = replace(optics, nucleus_diameter_um=optics.wavelength_um / (2 * optics.na))
    table = nominal_stamps(
        point, pixel_size_um, reach, cfg.defocus_step_um, cfg.radius_step_px, cfg.start_blur_scale
    ).table
    psf = np.zeros((len(table), n_radii), np.float32)
    psf[:, : min(n_radii, table.shape[1]) - 1] = table[:, : n_radii - 1]
    return _unit_flux(torch.as_tensor(psf), cfg.radius_step_px)


def _unit_flux(table: torch.Tensor, radius_step_px: float) -> torch.Tensor:
    """The table with its edge column 0 and every defocus row carrying unit flux."""
    table = table.clone()
    table[..., -1] = 0.0
    ring = torch.as_tensor(ring_areas(table.shape[-1], radius_step_px), dtype=table.dtype).to(table.device)
    return table / (table * ring).sum(dim=-1, keepdim=True).clamp(min=1e-30)


def _update_psf(
    seen_on_radii, fitted, patches, grid, defocus, model: StampModel, brightness, psf, blur: BallBlur, step,
    steps,
):  # fmt: skip
    """One multiplicative step of every PSF table cell: the observed over the fitted light of every ball table
    cell, weighted by interpolation and carried back to the PSF cells through the balls' map, raised to the
    power ``step``."""
    observed, modelled = _table_sums(seen_on_radii, fitted, patches, grid, defocus, model, brightness, steps)
    num, den = blur.adjoint(observed), blur.adjoint(modelled)
    ratio = torch.where(den > 0, num / den.clamp(min=1e-30), torch.ones_like(num))
    return _unit_flux(psf * ratio**step, model.radius_step_px)


def _table_sums(
    seen_on_radii, fitted, patches, grid: RadialGrid, defocus, model: StampModel, brightness, steps
):
    """(G, D, R) observed and fitted light at every table cell, each pixel weighted by its interpolation
    weights on the cells its neuron's stamp reads and by the neuron's brightness.

    The weights are a product of a pixel's radius weights and its neuron's defocus weights, so each plane's
    light is first summed onto each neuron's radii (N, R; ``seen_on_radii`` (K, N, R) for the scan's), then
    onto the two defocus rows it reads."""
    table = model.table.reshape(-1, *model.table.shape[-2:])
    n_tables, n_d, n_r = table.shape
    device = seen_on_radii.device
    group = (
        torch.as_tensor(model.groups, device=device)
        if model.groups is not None
        else torch.zeros(len(brightness), dtype=torch.long, device=device)
    )
    d0, dd = float(model.defocus_um[0]), float(model.defocus_um[1] - model.defocus_um[0])
    i0, fu = grid_cells(defocus, d0, dd, n_d)  # (K, N)
    rows = torch.cat([group * n_d + i0, group * n_d + i0 + 1], 1).flatten()  # every plane's (2N,) rows
    weights = torch.cat([(1 - fu) * brightness, fu * brightness], 1)[..., None]  # (K, 2N, 1)
    modelled = torch.cat([grid.project(patches.gather(fitted[s])) for s in steps])  # (K, N, R)
    num = torch.zeros(n_tables * n_d, n_r, dtype=torch.float32, device=device)
    den = torch.zeros_like(num)
    num.index_add_(0, rows, (weights * seen_on_radii.repeat(1, 2, 1)).reshape(-1, n_r))
    den.index_add_(0, rows, (weights * modelled.repeat(1, 2, 1)).reshape(-1, n_r))
    return num.reshape(table.shape), den.reshape(table.shape)
