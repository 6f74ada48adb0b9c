"""Per-neuron stamps: each neuron's own departure from the shared radial stamp near its focus, measured in
the calibration scan.

The radial table holds what all nuclei share (the defocus blur). Near focus a nucleus' image is its own
shape (elongated, sized, oriented its own way); a shared radial stamp leaves that difference in the residual,
where neighbours and defocused neurons absorb it. The scan sees every neuron at every defocus, so each
neuron's correction is read off it: the scan residual around the neuron, shared among overlapping neurons in
proportion to their modelled light (an EM step), with the part a brightness change explains removed and
smoothed over adjacent planes. Corrections live on each neuron's own scan planes and pixel grid and are
read live by trilinear interpolation (shift and defocus).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from track.readout.patches import Patches, cut_patches
from track.readout.stamps import StampModel, StampValues, grid_cells

__all__ = ["NeuronShapes", "ShapeConfig", "ShapeReader", "fit_shapes"]


@dataclass(frozen=True)
class ShapeConfig:
    """Defocus range and half-width of the corrections, their taper, and EM iterations (0 = radial only)."""

    max_defocus_um: float = 4.0  # corrections within this |defocus| (tapered over taper_um); radial beyond
    taper_um: float = 1.0
    half_px: int = 12
    iterations: int = 4

    def __post_init__(self) -> None:
        if self.max_defocus_um <= 0 or self.taper_um <= 0 or self.half_px < 1 or self.iterations < 0:
            raise ValueError("max_defocus_um and taper_um must be > 0, half_px >= 1 and iterations >= 0.")


@dataclass(frozen=True)
class NeuronShapes:
    """Corrections (N, J, P, P) added to the radial stamp; plane j of neuron n is at defocus
    d_start_um[n] + j * d_step_um, pixel (a, b) at offset (a - half + frac_px[n]) from the neuron's centre."""

    values: np.ndarray  # (N, J, P, P) float32, per unit brightness like the stamp table
    d_start_um: np.ndarray  # (N,)
    d_step_um: float
    frac_px: np.ndarray  # (N, 2) scan centre minus its nearest pixel (row, col)
    max_defocus_um: float
    taper_um: float

    @property
    def half_px(self) -> int:
        return self.values.shape[-1] // 2

    def taper(self, defocus_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight of the correction at each (N,) defocus (1 near focus, 0 beyond the range) and its slope."""
        edge = (self.max_defocus_um - defocus_um.abs()) / self.taper_um
        weight = edge.clamp(0, 1)
        inside = (edge > 0) & (edge < 1)
        slope = torch.where(inside, torch.sign(defocus_um) * (-1.0 / self.taper_um), 0.0)
        return weight, slope


class ShapeReader:
    """The corrections on a device with their derivatives, read at current centres and defocus.

    A neuron's patch pixels all sit the same sub-pixel shift away from its correction's grid, so reading is a
    linear blend of its two nearest planes, then of four whole-pixel-shifted copies (bilinear)."""

    def __init__(self, shapes: NeuronShapes, device: torch.device) -> None:
        self.shapes = shapes
        e = torch.as_tensor(shapes.values, device=device)
        d_j, d_row, d_col = torch.gradient(e, dim=(1, 2, 3))  # per plane, per pixel
        stack = torch.stack([e, d_row, d_col, d_j / shapes.d_step_um], 2)  # (N, J, 4, P, P)
        self._stack = F.pad(stack, (1, 1, 1, 1))  # a zero border: shifted reads stay inside
        self._start = torch.as_tensor(shapes.d_start_um, dtype=torch.float32, device=device)
        self._frac = torch.as_tensor(shapes.frac_px, dtype=torch.float32, device=device)
        self._rows = torch.arange(len(shapes.values), device=device)
        self._pair = torch.arange(2, device=device)
        self._offsets = torch.arange(shapes.values.shape[-1] + 1, device=device)  # P + 1 rows or columns read
        self._signs = torch.tensor([1.0, -1.0, -1.0, 1.0], device=device)[None, :, None, None]

    def __getstate__(self) -> dict:
        """Pickled as the corrections and the device: the stack read from them is 5x their size and quick to
        rebuild (a readout sent to a calibration process)."""
        return {"shapes": self.shapes, "device": self._rows.device}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["shapes"], state["device"])  # type: ignore[misc]

    def add_to(self, stamps: StampValues, patches: Patches, defocus_um: torch.Tensor) -> StampValues:
        """Add each neuron's correction to its stamp (values and derivatives, if any; in place) in the middle
        of its patch and return the stamps; the patches' half-width must be at least the corrections'."""
        hc = self.shapes.half_px
        half = patches.dy.shape[1] // 2
        if half < hc:
            raise ValueError(f"Patches of half-width {half} px cannot hold corrections of half-width {hc}.")
        n, n_planes = self._stack.shape[:2]
        p = 2 * hc + 1
        j0, fu = grid_cells(defocus_um.float(), self._start, self.shapes.d_step_um, n_planes)
        pair = self._stack[self._rows[:, None], j0[:, None] + self._pair]  # (N, 2, 4, P + 2, P + 2)
        planes = torch.lerp(pair[:, 0], pair[:, 1], fu[:, None, None, None])
        # the patch's pixel offsets from the centre are whole pixels plus dy[:, half, half]; the grid's are
        # whole pixels minus frac: the correction is read shift = centre offset + frac pixels along
        shift = torch.stack([patches.dy[:, half, half], patches.dx[:, half, half]], 1) + self._frac
        base = shift.floor()
        f = (shift - base)[:, :, None, None, None]
        start = base.long() + 1  # + 1: the zero border
        r_idx = (start[:, 0, None] + self._offsets).clamp(0, p + 1)  # (N, P + 1)
        c_idx = (start[:, 1, None] + self._offsets).clamp(0, p + 1)
        block = planes[self._rows[:, None, None], :, r_idx[:, :, None], c_idx[:, None, :]]  # (N, P+1, P+1, 4)
        top = torch.lerp(block[:, :-1, :-1], block[:, :-1, 1:], f[:, 1])
        bottom = torch.lerp(block[:, 1:, :-1], block[:, 1:, 1:], f[:, 1])
        read = torch.lerp(top, bottom, f[:, 0]).permute(0, 3, 1, 2)  # (N, 4, P, P)
        weight, slope = self.shapes.taper(defocus_um.float())  # 0 before the neuron's planes end
        window = stamps.stacked[:, :, half - hc : half + hc + 1, half - hc : half + hc + 1]
        if window.shape[1] == 1:
            window += weight[:, None, None, None] * read[:, :1]
            return stamps
        # the centre +1 row reads the correction 1 row lower: its derivatives by the centre change sign
        window += weight[:, None, None, None] * self._signs * read
        window[:, 3] += slope[:, None, None] * read[:, 0]
        return stamps


def fit_shapes(
    stack: torch.Tensor,
    z_um: np.ndarray,
    positions_um: np.ndarray,
    pixel_size_um: float,
    stamps: StampModel,
    brightness: np.ndarray,
    config: ShapeConfig | None = None,
) -> NeuronShapes:
    """Each neuron's correction to ``stamps`` from a (Z, H, W) scan at focus offsets z_um (uniform steps)."""
    cfg = config or ShapeConfig()
    device = stack.device
    z = np.asarray(z_um, np.float64)
    dz = float(z[1] - z[0])
    n = len(positions_um)
    m = int(np.ceil((cfg.max_defocus_um + dz) / dz))  # planes each side of the neuron's sharpest
    planes_per = 2 * m + 1
    centres = torch.as_tensor(positions_um[:, 1:] / pixel_size_um, dtype=torch.float32, device=device)
    frac = (centres - torch.round(centres)).cpu().numpy()
    nearest = np.abs(positions_um[:, 0][:, None] - z[None]).argmin(axis=1)  # (N,) sharpest scan plane
    d_start = positions_um[:, 0] - z[nearest] - m * dz  # j = 0 is the plane m steps above the sharpest
    # plane k sees neuron n at defocus z_n - z_k = d_start + j dz with j = m - (k - nearest)
    shape = (int(stack.shape[1]), int(stack.shape[2]))
    b = torch.as_tensor(brightness, dtype=torch.float32, device=device)
    full = cut_patches(centres, stamps.half_for(float(np.abs(positions_um[:, 0] - z[:, None]).max())), shape)
    window = cut_patches(centres, cfg.half_px, shape)
    values = torch.zeros(n, planes_per, 2 * cfg.half_px + 1, 2 * cfg.half_px + 1, device=device)
    depth = torch.as_tensor(positions_um[:, 0], dtype=torch.float32, device=device)
    used = np.flatnonzero((np.abs(positions_um[:, 0][None] - z[:, None]) <= (m + 0.5) * dz).any(axis=1))
    # every (plane, neuron) pair the corrections are fitted on: plane u of ``used`` sees neuron n at its
    # correction's plane j. All pairs are worked on at once: a kernel per step, not one per plane (a GPU's
    # time went on launching those)
    hw = shape[0] * shape[1]
    light = torch.zeros(len(used), hw + 1, device=device)  # each plane's modelled light; a zero slot last
    residual0 = torch.zeros_like(light)
    empty = np.zeros(0, np.int64)
    plane_of, neuron_of, j_of = [empty], [empty], [empty]
    radial = [torch.zeros(0, *values.shape[-2:], device=device)]
    for u, k in enumerate(used.tolist()):
        defocus = depth - float(z[k])
        light[u, :hw] = full.render(b[:, None, None] * stamps.evaluate(full, defocus).value).flatten()
        rest = stack[k].float().flatten() - light[u, :hw]
        residual0[u, :hw] = rest - rest.median()  # the plane's background: most pixels see no neuron's core
        j = m - (k - nearest)
        idx = np.flatnonzero((j >= 0) & (j < planes_per))
        plane_of.append(np.full(len(idx), u))
        neuron_of.append(idx)
        j_of.append(j[idx])
        radial.append(stamps.evaluate(window, defocus).value[torch.as_tensor(idx, device=device)])
    plane = torch.as_tensor(np.concatenate(plane_of), device=device)
    neuron = torch.as_tensor(np.concatenate(neuron_of), device=device)
    j = torch.as_tensor(np.concatenate(j_of), device=device)
    radial_window = torch.cat(radial)  # (pairs, P, P)
    # each pair's window pixels in the planes' flat (U, H * W + 1) frames (outside: that plane's zero slot)
    pixels = (window.slot.reshape(n, -1)[neuron] + plane[:, None] * (hw + 1)).flatten()
    bp = b[neuron, None, None]
    for _ in range(cfg.iterations):
        corr = values[neuron, j]  # (pairs, P, P)
        corrected = torch.zeros_like(light).flatten().index_add_(0, pixels, (bp * corr).flatten())
        corrected = corrected.reshape(light.shape)
        corrected[:, -1] = 0  # the zero slots stay 0
        residual = (residual0 - corrected).flatten()[pixels].reshape(corr.shape)
        total = (light + corrected).flatten()[pixels].reshape(corr.shape)  # all neurons' light
        total = total.clamp(min=1e-6)
        stamp = radial_window + corr
        share = (bp * stamp / total).clamp(0, 1)
        delta = share * residual / bp
        along = (delta * stamp).sum(dim=(1, 2)) / (stamp * stamp).sum(dim=(1, 2)).clamp(min=1e-12)
        update = torch.zeros_like(values)
        update[neuron, j] = delta - along[:, None, None] * stamp  # a brightness change is not a shape
        values = values + _smooth_planes(update)
    return NeuronShapes(
        values=values.cpu().numpy().astype(np.float32), d_start_um=d_start.astype(np.float64), d_step_um=dz,
        frac_px=frac.astype(np.float64), max_defocus_um=cfg.max_defocus_um, taper_um=cfg.taper_um,
    )  # fmt: skip


def _smooth_planes(values: torch.Tensor) -> torch.Tensor:
    """[1, 2, 1] / 4 along the planes (N, J, P, P): adjacent planes differ by a small defocus step."""
    padded = torch.cat([values[:, :1], values, values[:, -1:]], 1)
    return 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
