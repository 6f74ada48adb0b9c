"""Estimate the defocus response from a calibration focal scan around its detected neurons.

The scan images every neuron at many defocus values. The stamp table, each neuron's brightness and each
plane's background are fitted jointly to the scan (non-negative multiplicative updates of a least-squares
fit, Lee & Seung), starting from the nominal optics; only planes that see every neuron within the table's
defocus range are used, so no light is left unmodelled. Every defocus row of the table carries unit flux:
a wide-field camera collects a nucleus' light whatever the focus, so a brightness means the same at every
depth and in every scan (left free, the rows' flux wandered by 5-10% from scan to scan and scaled the traces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from track.readout.patches import cut_patches
from track.readout.stamps import Optics, StampModel, nominal_stamps, ring_areas

__all__ = ["StampFitConfig", "StampFit", "fit_stamps"]


@dataclass(frozen=True)
class StampFitConfig:
    """Defocus range and grid of the fitted table and iterations."""

    max_defocus_um: float = 10.0
    defocus_step_um: float = 0.25
    radius_step_px: float = 0.5
    iterations: int = 16


@dataclass(frozen=True)
class StampFit:
    """The fitted stamps, each neuron's scan brightness, the scan planes used and the fit's relative error."""

    stamps: StampModel
    brightness: np.ndarray  # (N,) in the stamps' units (stamp at 0 um sums to 1)
    planes_used: np.ndarray  # (K,) indices into the scan
    relative_residual: float


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
) -> StampFit:
    """Fit S(defocus, radius), brightness (N,) and plane backgrounds to a (Z, H, W) scan with focus z_um."""
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
    for it in range(cfg.iterations):
        current = StampModel(model.defocus_um, model.radius_step_px, table.cpu().numpy())
        values = [current.evaluate(patches, defocus[k]).value for k in range(len(planes))]
        fitted = _render_scan(values, patches, brightness, background)
        if it % 2 == 0:
            brightness, background = _update_brightness(data, fitted, patches, values, brightness, background)
        else:
            table = _update_table(data, fitted, patches, defocus, current, brightness, table)
    final = StampModel(model.defocus_um, model.radius_step_px, table.cpu().numpy())
    values = [final.evaluate(patches, defocus[k]).value for k in range(len(planes))]
    fitted = _render_scan(values, patches, brightness, background)
    signal = ((data - background[:, None, None]) ** 2).sum().clamp(min=1e-12)
    residual = float(((data - fitted) ** 2).sum() / signal)
    return StampFit(final, brightness.cpu().numpy(), planes, residual)


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


def _update_table(data, fitted, patches, defocus, model: StampModel, brightness, table):
    """One multiplicative step of every table cell: observed over fitted light, weighted by interpolation."""
    n_d, n_r = table.shape
    d0, dd = float(model.defocus_um[0]), float(model.defocus_um[1] - model.defocus_um[0])
    v = (torch.hypot(patches.dy, patches.dx) / model.radius_step_px).clamp(max=n_r - 1)
    j0 = v.floor().clamp(max=n_r - 2).long()
    fv = v - j0
    num = torch.zeros(n_d * n_r, dtype=torch.float32, device=table.device)
    den = torch.zeros_like(num)
    weight_b = brightness[:, None, None] * patches.inside  # pixels outside the frame weigh nothing
    for k in range(data.shape[0]):
        u = ((defocus[k] - d0) / dd).clamp(0, n_d - 1)
        i0 = u.floor().clamp(max=n_d - 2).long()
        fu = (u - i0)[:, None, None]
        base = i0[:, None, None] * n_r + j0
        index = torch.stack([base, base + 1, base + n_r, base + n_r + 1]).reshape(-1)
        weights = torch.stack([(1 - fu) * (1 - fv), (1 - fu) * fv, fu * (1 - fv), fu * fv]) * weight_b
        num.index_add_(0, index, (weights * patches.gather(data[k])).reshape(-1))
        den.index_add_(0, index, (weights * patches.gather(fitted[k])).reshape(-1))
    ratio = torch.where(den > 0, num / den.clamp(min=1e-30), torch.ones_like(num)).reshape(n_d, n_r)
    out = table * ratio
    out[:, -1] = 0.0
    ring = torch.as_tensor(ring_areas(n_r, model.radius_step_px), dtype=out.dtype, device=out.device)
    return out / (out * ring).sum(dim=1, keepdim=True).clamp(min=1e-30)  # every row carries unit flux
