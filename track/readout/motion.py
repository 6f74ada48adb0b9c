"""Specimen motion from one frame: Gauss-Newton steps of every neuron's lateral position and a global
axial offset against the residual of the forward model, lateral steps pooled over nearby neurons.

At 100 Hz neurons move a few hundredths of a pixel per frame, so one step per frame, started from the last
frame's positions, keeps them locked; pooling the normal equations of neighbours (a locally rigid motion)
lets dim or defocused neurons, whose own position information is weak, move with their neighbourhood.
Neighbours in a worm move together, so each neuron's displacement since the scan is also drawn towards what
its neighbours' displacements predict at its place (a locally affine field of the lateral position: a bending
body shears and turns, so their plain mean is off by the field's gradient times their mean offset), in
proportion to how weak its own information is: a neuron with little of it cannot wander off alone, and one
with plenty is barely held.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from track.readout.patches import Patches
from track.readout.stamps import StampValues

__all__ = ["DisplacementField", "MotionConfig", "MotionStep", "motion_step", "neighbour_weights"]


@dataclass(frozen=True)
class MotionConfig:
    """Pooling scale (um), damping, per-frame step limits and whether the axial offset is estimated."""

    pool_um: float = 4.0  # Gaussian weight of a neighbour's normal equations at this distance: e^-1/2
    # a neighbour's normal equations count this much relative to the own ones. Measured: 1.0 helped on seed 1
    # over 5 s (median error 0.18 um, not 0.30) but hurt on seed 7 over 20 s (traced 0.71, median r 0.44,
    # against 0.76 and 0.70 with 0.1): pooling assumes a locally rigid motion the bending worm breaks
    neighbour_weight: float = 0.1
    # pull of each neuron's displacement since the scan towards what its neighbours' predict at its place
    # (DisplacementField), relative to the median neuron's lateral information; 0 = off
    field_weight: float = 0.1
    # shrinkage of the field's local gradient (um^2, against the neighbours' weighted offset variance): with
    # few or lined-up neighbours the prediction falls back to their weighted mean. Measured on the simulator's
    # true motion (seeds 11 and 13, neurons 3-6 um from focus predicted from those within 2 um, over 4 s):
    # median error 0.065 / 0.054 um at 1, 0.086 / 0.066 at 4
    field_ridge_um2: float = 1.0
    damping: float = 1e-3  # Levenberg term relative to the mean lateral information
    max_step_px: float = 0.5
    max_axial_step_um: float = 0.1
    axial: bool = True


@dataclass(frozen=True)
class MotionStep:
    """Lateral steps (N, 2) px (row, col) and the global axial step (um) to add to the current estimate."""

    lateral_px: torch.Tensor
    axial_um: float


def neighbour_weights(lateral_um: torch.Tensor, config: MotionConfig) -> torch.Tensor:
    """(N, N) weights pooling the motion normal equations: 1 for a neuron's own, a Gaussian of lateral
    distance times ``neighbour_weight`` for the others' (they help where its own information is weak)."""
    yx = lateral_um.double()  # (N, 2) row, column positions
    w = config.neighbour_weight * torch.exp(-0.5 * torch.cdist(yx, yx) ** 2 / config.pool_um**2)
    w.fill_diagonal_(1.0)
    return w


@dataclass(frozen=True)
class DisplacementField:
    """Whose displacements predict each neuron's: Gaussian weights of 3D distance at ``pool_um`` (zero on the
    diagonal) and the neighbours' lateral offsets, both as the scan found them.

    The field is affine in the lateral position only: the neighbours that carry information lie near focus,
    and a depth gradient fitted across that thin slab and extrapolated to a defocused neuron doubled its
    error (the simulator's true motion, seeds 11 and 13, neurons 3-6 um from focus from those within 2 um,
    over 4 s: median 0.115 / 0.086 um with a depth gradient, 0.065 / 0.054 without).
    """

    weights: torch.Tensor  # (N, N)
    design: torch.Tensor  # (N, N, 3): 1 and the neighbour's lateral offset from the neuron (y, x) um

    @classmethod
    def from_positions(cls, positions_um: torch.Tensor, config: MotionConfig) -> DisplacementField:
        p = positions_um.double()
        w = torch.exp(-0.5 * torch.cdist(p, p) ** 2 / config.pool_um**2)
        w.fill_diagonal_(0.0)
        offsets = p[None, :, 1:] - p[:, None, 1:]
        return cls(w, torch.cat([torch.ones_like(offsets[..., :1]), offsets], 2))

    def predict(self, trust: torch.Tensor, displacement: torch.Tensor, ridge_um2: float) -> torch.Tensor:
        """(N, 2) each neuron's displacement as a local affine fit of its neighbours' (N, 2) predicts it, the
        neighbours weighted by ``weights`` times their (N,) ``trust``; the gradient shrunk by ridge_um2."""
        w = self.weights * trust[None].double()
        weighted = (self.design * w[..., None]).transpose(1, 2)  # (N, 3, N)
        total = w.sum(dim=1) + 1e-30
        ridge = torch.tensor([0.0, ridge_um2, ridge_um2], dtype=w.dtype, device=w.device)
        normal = weighted @ self.design + total[:, None, None] * torch.diag(ridge)
        rhs = weighted @ displacement.double()
        # the intercept is also drawn, very weakly, to the neuron's own displacement: a neuron without
        # neighbours predicts itself (is not pulled)
        own = 1e-9 * total
        normal[:, 0, 0] += own
        rhs[:, 0] += own[:, None] * displacement.double()
        return torch.linalg.solve(normal, rhs)[:, 0]


def motion_step(
    patches: Patches,
    residual_frame: torch.Tensor,
    residual_patches: torch.Tensor,
    stamps: StampValues,
    brightness: torch.Tensor,
    weights: torch.Tensor,
    config: MotionConfig,
    displacement_px: torch.Tensor | None = None,
    field: DisplacementField | None = None,
) -> MotionStep:
    """One pooled Gauss-Newton step from the residual (frame - model), whole and cut at each patch; with
    each neuron's displacement since the scan (N, 2) px and its ``field``, drawn to a smooth field."""
    b = brightness[:, None, None]
    jr, jc = b * stamps.d_row, b * stamps.d_col
    g = torch.stack([(jr * residual_patches).sum(dim=(1, 2)), (jc * residual_patches).sum(dim=(1, 2))], 1)
    h = torch.stack(
        [(jr * jr).sum(dim=(1, 2)), (jr * jc).sum(dim=(1, 2)), (jc * jc).sum(dim=(1, 2))], 1
    )
    gp, hp = weights @ g.double(), weights @ h.double()
    lam = config.damping * (hp[:, 0] + hp[:, 2]).mean().clamp(min=1e-30)
    a, c, d = hp[:, 0] + lam, hp[:, 1], hp[:, 2] + lam
    det = (a * d - c * c).clamp(min=1e-30)
    step = torch.stack([(d * gp[:, 0] - c * gp[:, 1]) / det, (a * gp[:, 1] - c * gp[:, 0]) / det], 1)
    if config.field_weight > 0 and displacement_px is not None and field is not None:
        # min_s info |s - step|^2 + pull |u + s - predicted|^2, info: each neuron's own lateral information
        info = 0.5 * (h[:, 0] + h[:, 2]).double()
        predicted = field.predict(info, displacement_px, config.field_ridge_um2)
        pull = config.field_weight * info.median().clamp(min=1e-30)
        step = (info[:, None] * step + pull * (predicted - displacement_px.double())) / (info + pull)[:, None]
    norm = step.norm(dim=1, keepdim=True).clamp(min=1e-12)
    step = step * (config.max_step_px / norm).clamp(max=1.0)
    axial = 0.0
    if config.axial:
        value = stamps.value
        # the part of each stamp's defocus derivative that a brightness change cannot mimic
        coef = (stamps.d_defocus * value).sum(dim=(1, 2)) / (value * value).sum(dim=(1, 2)).clamp(min=1e-30)
        jz = patches.render(b * (stamps.d_defocus - coef[:, None, None] * value))
        info = float((jz * jz).sum())
        if info > 0:
            axial = float((jz * residual_frame).sum()) / info
            axial = max(-config.max_axial_step_um, min(config.max_axial_step_um, axial))
    return MotionStep(step.float(), axial)
