"""Estimate the defocus response from a calibration focal scan around its detected neurons.

The scan images every neuron at many defocus values. The stamp table, each neuron's brightness and each
plane's background are fitted jointly to the scan (non-negative multiplicative updates of a least-squares
fit, Lee & Seung), starting from the nominal optics; only planes that see every neuron within the table's
defocus range are used, so no light is left unmodelled. Every defocus row of the table carries unit flux:
a wide-field camera collects a nucleus' light whatever the focus, so a brightness means the same at every
depth and in every scan (left free, the rows' flux wandered by 5-10% from scan to scan and scaled the traces).
Nuclei of different sizes blur differently (not just wider), so once the shared table has settled, each
size group gets its own table: grouped first by in-focus peak per unit brightness, then each neuron moves to
the group whose table explains its light in the scan best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from track.readout.patches import cut_patches
from track.readout.stamps import Optics, StampModel, nominal_stamps, ring_areas

__all__ = ["StampFitConfig", "StampFit", "fit_stamps"]


MIN_GROUP_NEURONS = 8
"""Fewest neurons per size group: a scan with fewer neurons per group fits fewer tables."""


@dataclass(frozen=True)
class StampFitConfig:
    """Defocus range and grid of the fitted table and iterations."""

    max_defocus_um: float = 10.0
    defocus_step_um: float = 0.25
    radius_step_px: float = 0.5
    iterations: int = 16
    # one table per nucleus size group (1: one shared table). A defocused nucleus' image depends on its size
    # beyond a blur: 60 s, seeds 11 / 13 / 17 / 23, with the group memory of re-scans, r >= 0.9 for
    # 0.48 / 0.62 / 0.48 / 0.50 -> 0.50 / 0.66 / 0.49 / 0.51 of the neurons (median r +0.007 / +0.021 /
    # -0.001 / +0.002)
    size_groups: int = 3
    # iterations of the per-group tables after the shared one's; the neurons are regrouped every second one
    # from the third on. Once, halfway, before: 60 s, seeds 11 / 13 / 17 / 23, r >= 0.9 for 0.59 / 0.69 / 0.52
    # / 0.60 -> 0.59 / 0.70 / 0.54 / 0.62 of the neurons (median r +0.011 / 0 / -0.001 / +0.007); of seed
    # 11's 72 middle-size nuclei 27 -> 19 in another size's group
    group_iterations: int = 8

    def __post_init__(self) -> None:
        if self.size_groups < 1 or self.iterations < 1 or self.group_iterations < 0:
            raise ValueError("size_groups and iterations must be >= 1 and group_iterations >= 0.")


@dataclass(frozen=True)
class StampFit:
    """The fitted stamps, each neuron's scan brightness, the scan planes used and the fit's relative error."""

    stamps: StampModel
    brightness: np.ndarray  # (N,) in the stamps' units (stamp at 0 um sums to 1)
    planes_used: np.ndarray  # (K,) indices into the scan
    relative_residual: float
    group_evidence: np.ndarray | None = None  # (N, G) share of each neuron's light each table explains


def _planes_covering(z_um: np.ndarray, neuron_z_um: np.ndarray, max_defocus_um: float) -> np.ndarray:
    """Scan planes from which every neuron lies within max_defocus_um."""
    lo, hi = neuron_z_um.max() - max_defocus_um, neuron_z_um.min() + max_defocus_um
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
    planes = _planes_covering(np.asarray(z_um, np.float64), positions_um[:, 0], cfg.max_defocus_um)
    if len(planes) < 3:
        raise ValueError(
            f"The scan has {len(planes)} planes within {cfg.max_defocus_um} um of every neuron (depths "
            f"{positions_um[:, 0].min():.1f}..{positions_um[:, 0].max():.1f} um); scan at least 3 planes "
            "spanning the neurons' depth, e.g. -12..12 um around focus."
        )
    model = nominal_stamps(optics, pixel_size_um, cfg.max_defocus_um, cfg.defocus_step_um, cfg.radius_step_px)
    device = stack.device
    data = stack[torch.as_tensor(planes, device=device)].float()
    shape = (int(data.shape[1]), int(data.shape[2]))
    centres = torch.as_tensor(positions_um[:, 1:] / pixel_size_um, dtype=torch.float32, device=device)
    patches = cut_patches(centres, model.half_for(cfg.max_defocus_um), shape)
    defocus = torch.as_tensor(
        positions_um[None, :, 0] - np.asarray(z_um, np.float64)[planes, None],
        dtype=torch.float32,
        device=device,
    )  # (K, N)
    stride = max(1, data[0].numel() // 100_000)
    background = torch.quantile(data.reshape(len(planes), -1)[:, ::stride], 0.1, dim=1)
    table = torch.as_tensor(model.table, device=device)
    brightness = _initial_brightness(data, background, patches, defocus, model)
    groups, evidence = None, None
    n_groups = min(cfg.size_groups, max(1, len(positions_um) // MIN_GROUP_NEURONS))
    if group_evidence is not None and group_evidence.shape != (len(positions_um), n_groups):
        group_evidence = None  # another number of groups: start afresh

    def scan_model(table, groups, brightness, background):
        """The stamps of ``table`` and ``groups``, their values at every used plane, and the fitted scan."""
        stamps = StampModel(model.defocus_um, model.radius_step_px, table.cpu().numpy(), groups)
        values = [stamps.evaluate(patches, defocus[k]).value for k in range(len(planes))]
        return stamps, values, _render_scan(values, patches, brightness, background)

    # iterations that regroup; a fit with too few per-group iterations for that still regroups once, halfway
    regroup_at = set(range(cfg.iterations + 2, cfg.iterations + cfg.group_iterations - 1, 2)) or {
        cfg.iterations + cfg.group_iterations // 2
    }
    for it in range(cfg.iterations + (cfg.group_iterations if n_groups > 1 else 0)):
        if it == cfg.iterations:  # the shared table has settled: one table per size group from here
            shared = StampModel(model.defocus_um, model.radius_step_px, table.cpu().numpy())
            groups = _initial_groups(data, background, patches, defocus, shared, brightness, n_groups)
            table = table[None].repeat(n_groups, 1, 1)
        current, values, fitted = scan_model(table, groups, brightness, background)
        if groups is not None and it in regroup_at:
            evidence = _group_evidence(data, background, patches, defocus, current, brightness, values)
            if group_evidence is not None:
                evidence = evidence + group_evidence
            groups = evidence.argmax(axis=1)
            current, values, fitted = scan_model(table, groups, brightness, background)
        if it % 2 == 0:
            brightness, background = _update_brightness(data, fitted, patches, values, brightness, background)
        else:
            table = _update_table(data, fitted, patches, defocus, current, brightness, table)
    final, values, fitted = scan_model(table, groups, brightness, background)
    signal = ((data - background[:, None, None]) ** 2).sum().clamp(min=1e-12)
    residual = float(((data - fitted) ** 2).sum() / signal)
    return StampFit(final, brightness.cpu().numpy(), planes, residual, evidence)


def _initial_brightness(data, background, patches, defocus, model: StampModel) -> torch.Tensor:
    """Light within the stamp of each neuron's sharpest plane, divided by that stamp's share of it."""
    nearest = defocus.abs().argmin(dim=0)  # (N,)
    n = torch.arange(defocus.shape[1], device=data.device)
    values = model.evaluate(patches, defocus[nearest, n]).value
    seen = torch.stack([patches.gather(data[k] - background[k])[i] for i, k in enumerate(nearest.tolist())])
    return ((seen * values).sum(dim=(1, 2)) / (values**2).sum(dim=(1, 2)).clamp(min=1e-12)).clamp(min=1.0)


def _render_scan(values, patches, brightness, background) -> torch.Tensor:
    """The fitted scan: each plane's background plus every neuron's stamp scaled by its brightness."""
    return torch.stack(
        [background[k] + patches.render(brightness[:, None, None] * v) for k, v in enumerate(values)]
    )


def _update_brightness(data, fitted, patches, values, brightness, background):
    """One multiplicative step of every neuron's brightness and every plane's background."""
    num = torch.zeros_like(brightness)
    den = torch.zeros_like(brightness)
    for k, value in enumerate(values):
        num += (value * patches.gather(data[k])).sum(dim=(1, 2))
        den += (value * patches.gather(fitted[k])).sum(dim=(1, 2))
    scale = data.sum(dim=(1, 2)) / fitted.sum(dim=(1, 2)).clamp(min=1e-12)
    return brightness * num / den.clamp(min=1e-12), background * scale


def _own_light(plane, background, patches, light) -> torch.Tensor:
    """(N, P, P) each neuron's own light in one scan plane: the plane less its background and the other
    neurons' modelled light (``light``: every neuron's modelled light on its patch)."""
    return patches.gather(plane - background - patches.render(light)) + light


def _initial_groups(data, background, patches, defocus, model: StampModel, brightness, n_groups: int):
    """(N,) size group of each neuron, 0 the smallest: quantiles of its in-focus peak per unit brightness
    (a smaller nucleus packs its light into fewer pixels), read at its sharpest plane with its neighbours'
    modelled light removed."""
    nearest = defocus.abs().argmin(dim=0)  # (N,)
    core = torch.hypot(patches.dy, patches.dx) <= 1.5  # the centre pixels
    peak = torch.zeros(defocus.shape[1], device=data.device)
    for k in torch.unique(nearest).tolist():
        light = brightness[:, None, None] * model.evaluate(patches, defocus[k]).value
        own = _own_light(data[k], background[k], patches, light)
        rows = nearest == k
        peak[rows] = ((own * core).sum(dim=(1, 2)) / core.sum(dim=(1, 2)).clamp(min=1))[rows]
    score = (peak / brightness.clamp(min=1e-12)).cpu().numpy()
    edges = np.quantile(score, np.linspace(0, 1, n_groups + 1)[1:-1])
    return (n_groups - 1 - np.searchsorted(edges, score)).astype(np.int64)


def _group_evidence(data, background, patches, defocus, model: StampModel, brightness, values) -> np.ndarray:
    """(N, G) share of each neuron's own light over the scan (its data less the background and its
    neighbours' modelled light) that each group's table explains, at its best-fitting brightness."""
    tables = [StampModel(model.defocus_um, model.radius_step_px, table) for table in model.table]
    n = len(brightness)
    cross = torch.zeros(len(tables), n, dtype=torch.float64, device=data.device)
    power = torch.zeros_like(cross)
    energy = torch.zeros(n, dtype=torch.float64, device=data.device)
    for k, value in enumerate(values):
        own = _own_light(data[k], background[k], patches, brightness[:, None, None] * value) * patches.inside
        energy += (own * own).sum(dim=(1, 2)).double()
        for g, table in enumerate(tables):
            candidate = table.evaluate(patches, defocus[k]).value * patches.inside
            cross[g] += (own * candidate).sum(dim=(1, 2)).double()
            power[g] += (candidate * candidate).sum(dim=(1, 2)).double()
    explained = cross.clamp(min=0) ** 2 / power.clamp(min=1e-30)  # squared error removed at the best scale
    return (explained / energy.clamp(min=1e-30)).T.cpu().numpy()


def _update_table(data, fitted, patches, defocus, model: StampModel, brightness, table):
    """One multiplicative step of every table cell (of every group's table): observed over fitted light,
    weighted by interpolation."""
    n_d, n_r = table.shape[-2:]
    n_tables = table.shape[0] if table.ndim == 3 else 1
    group = (
        torch.as_tensor(model.groups, device=table.device)[:, None, None]
        if model.groups is not None
        else torch.zeros(1, 1, 1, dtype=torch.long, device=table.device)
    )
    d0, dd = float(model.defocus_um[0]), float(model.defocus_um[1] - model.defocus_um[0])
    v = (torch.hypot(patches.dy, patches.dx) / model.radius_step_px).clamp(max=n_r - 1)
    j0 = v.floor().clamp(max=n_r - 2).long()
    fv = v - j0
    num = torch.zeros(n_tables * n_d * n_r, dtype=torch.float32, device=table.device)
    den = torch.zeros_like(num)
    weight_b = brightness[:, None, None] * patches.inside  # pixels outside the frame weigh nothing
    for k in range(data.shape[0]):
        u = ((defocus[k] - d0) / dd).clamp(0, n_d - 1)
        i0 = u.floor().clamp(max=n_d - 2).long()
        fu = (u - i0)[:, None, None]
        base = (group * n_d + i0[:, None, None]) * n_r + j0
        index = torch.stack([base, base + 1, base + n_r, base + n_r + 1]).reshape(-1)
        weights = torch.stack([(1 - fu) * (1 - fv), (1 - fu) * fv, fu * (1 - fv), fu * fv]) * weight_b
        num.index_add_(0, index, (weights * patches.gather(data[k])).reshape(-1))
        den.index_add_(0, index, (weights * patches.gather(fitted[k])).reshape(-1))
    ratio = torch.where(den > 0, num / den.clamp(min=1e-30), torch.ones_like(num)).reshape(table.shape)
    out = table * ratio
    out[..., -1] = 0.0
    ring = torch.as_tensor(ring_areas(n_r, model.radius_step_px), dtype=out.dtype, device=out.device)
    return out / (out * ring).sum(dim=-1, keepdim=True).clamp(min=1e-30)  # every row carries unit flux
