"""Specimen motion from one frame: Gauss-Newton steps of every neuron's lateral position and a global
axial offset against the residual of the forward model, lateral steps pooled over nearby neurons.

At 100 Hz neurons move a few hundredths of a pixel per frame, so one step per frame, started from the last
frame's positions, keeps them locked; pooling the normal equations of neighbours (a locally rigid motion)
lets dim or defocused neurons, whose own position information is weak, move with their neighbourhood.
A worm's body moves as a smooth field, so each neuron's displacement since the scan is also drawn towards what
all the others' displacements predict at its place (a Gaussian-process regression over the lateral
positions), in proportion to how weak its own information is: a neuron with little of it cannot wander off
alone, and one with plenty is barely held."""

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
    # pull of each neuron's displacement since the scan towards what the others' predict at its place
    # (DisplacementField), relative to the median neuron's lateral information; 0 = off. Measured over 60 s
    # (seeds 11 / 13): median r 0.880 / 0.924, r >= 0.9 0.47 / 0.60, switches 0.033 / 0.025 per neuron-minute
    # (the previous, local field at 0.1: 0.874 / 0.914, 0.40 / 0.57, 0.049 / 0.067); with an earlier form of
    # the pull that lagged a shared motion, 1 and 20 read no better than 5
    field_weight: float = 5.0
    # the field's prior: displacements about their mean vary by field_scale_um, correlated over
    # field_length_um laterally, and a median neuron's own displacement is known to field_noise_um. Measured
    # on the simulator's true motion (seeds 11 and 13, neurons 3-6 um from focus predicted from those within
    # 2 um, 0.04 / 0.02 um noise on theirs, over 1-4.5 s): median error 0.029 / 0.019 um at 20 um, against
    # 0.048 / 0.033 for a local affine fit at 4 um (the previous field), 0.040 / 0.029 for a global quartic
    field_length_um: float = 20.0
    field_scale_um: float = 1.0
    field_noise_um: float = 0.1
    damping: float = 1e-3  # Levenberg term relative to the mean lateral information
    max_step_px: float = 0.5
    max_axial_step_um: float = 0.1
    axial: bool = True


@dataclass(frozen=True)
class MotionStep:
    """Lateral steps (N, 2) px (row, col) and the global axial step (um, 0-d float64 on the device) to add to
    the current estimate."""

    lateral_px: torch.Tensor
    axial_um: torch.Tensor


def neighbour_weights(lateral_um: torch.Tensor, config: MotionConfig) -> torch.Tensor:
    """(N, N) weights pooling the motion normal equations: 1 for a neuron's own, a Gaussian of lateral
    distance times ``neighbour_weight`` for the others' (they help where its own information is weak)."""
    yx = lateral_um.double()  # (N, 2) row, column positions
    w = config.neighbour_weight * torch.exp(-0.5 * torch.cdist(yx, yx) ** 2 / config.pool_um**2)
    w.fill_diagonal_(1.0)
    return w


@dataclass(frozen=True)
class DisplacementField:
    """The prior covariance of the neurons' lateral displacements since the scan: a squared-exponential kernel
    of their lateral distance as the scan found them (depth left out: the neurons that carry information lie
    near focus, and a worm's lateral motion barely changes across its few-um depth), in px^2."""

    kernel: torch.Tensor  # (N, N)
    noise_px2: float  # variance of a median-information neuron's own displacement

    @classmethod
    def from_positions(
        cls, positions_um: torch.Tensor, config: MotionConfig, pixel_size_um: float
    ) -> DisplacementField:
        yx = positions_um[:, 1:].double()
        distance2 = torch.cdist(yx, yx) ** 2
        scale_px2 = (config.field_scale_um / pixel_size_um) ** 2
        kernel = scale_px2 * torch.exp(-0.5 * distance2 / config.field_length_um**2)
        return cls(kernel, (config.field_noise_um / pixel_size_um) ** 2)

    def predict(self, trust: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2) each neuron's displacement as all the others' predict it (the leave-one-out posterior mean),
        each known with variance noise * median(trust) / trust; and (N,) how certain that prediction is
        (1 - its posterior variance over the prior's: 0 for a neuron with no informative neighbour)."""
        t = trust.double().clamp(min=0)
        t = torch.maximum(t, 1e-12 * t.max().clamp(min=1e-30))  # no device sync: runs every frame
        variance = self.noise_px2 * t.median() / t
        d = displacement.double()
        mean = (t[:, None] * d).sum(dim=0) / t.sum()
        # positive definite (a kernel plus a positive diagonal): factors that do not wait to check that
        lower = torch.linalg.cholesky_ex(self.kernel + torch.diag(variance))[0]
        eye = torch.eye(len(t), dtype=t.dtype, device=t.device)
        inverse_lower = torch.linalg.solve_triangular(lower, eye, upper=False)
        precision = inverse_lower.mT @ inverse_lower
        own = torch.diagonal(precision)
        predicted = d - (precision @ (d - mean)) / own[:, None]
        prior = torch.diagonal(self.kernel)
        certainty = (1 - (1 / own - variance) / prior).clamp(0, 1)
        return predicted, certainty


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
    informs: torch.Tensor | None = None,
    anchored: torch.Tensor | None = None,
) -> MotionStep:
    """One pooled Gauss-Newton step from the residual (frame - model), whole and cut at each patch; with
    each neuron's displacement since the scan (N, 2) px and its ``field``, drawn to a smooth field.
    ``informs`` (N,): 0 for neurons whose own motion must not inform the others' (the field and the axial
    offset), e.g. ones placed by prediction rather than found by the scan; they still follow both.
    ``anchored`` (N,): 0 for neurons not drawn to the field (yet), e.g. ones just added whose own light must
    first settle where they are."""
    b = brightness[:, None, None] * patches.inside  # a stamp's pixels outside the frame are not observed
    n = len(b)
    # (N, 2, P * P): each neuron's Jacobian by its centre's row and column; its normal equations are small
    # batched products (few kernels: this runs every frame)
    jacobian = stamps.stacked[:, 1:3].flatten(2) * b.reshape(n, 1, -1)
    g = (jacobian @ residual_patches.reshape(n, -1, 1)).squeeze(2)  # (N, 2)
    h = (jacobian @ jacobian.mT).reshape(n, 4)  # (N, 4): rr, rc, cr, cc
    gp, hp = weights @ g.double(), weights @ h.double()
    lam = config.damping * (hp[:, 0] + hp[:, 3]).mean().clamp(min=1e-30)
    a, c, d = hp[:, 0] + lam, hp[:, 1], hp[:, 3] + lam
    det = (a * d - c * c).clamp(min=1e-30)
    adjugate = torch.stack([d, -c, -c, a], 1).reshape(n, 2, 2)
    step = (adjugate @ gp[:, :, None]).squeeze(2) / det[:, None]
    if config.field_weight > 0 and displacement_px is not None and field is not None:
        # min_s info |s - step|^2 + pull |u + s - predicted|^2, info: each neuron's own lateral information;
        # predicted from the others' displacements after their own steps (from those before, the pull would
        # hold back a motion they all share: a lag of field_weight frames of motion)
        info = 0.5 * (h[:, 0] + h[:, 3]).double()
        displacement = displacement_px.double()
        trust = info if informs is None else info * informs.double()
        predicted, certainty = field.predict(trust, displacement + step)
        pull = config.field_weight * info.median().clamp(min=1e-30) * certainty
        if anchored is not None:
            pull = pull * anchored.double()
        step = (info[:, None] * step + pull[:, None] * (predicted - displacement)) / (info + pull).clamp(
            min=1e-30
        )[:, None]
    norm = step.norm(dim=1, keepdim=True).clamp(min=1e-12)
    step = step * (config.max_step_px / norm).clamp(max=1.0)
    axial = torch.zeros((), dtype=torch.float64, device=step.device)
    if config.axial:
        value = stamps.value
        # the part of each stamp's defocus derivative that a brightness change cannot mimic
        coef = (stamps.d_defocus * value).sum(dim=(1, 2)) / (value * value).sum(dim=(1, 2)).clamp(min=1e-30)
        bz = b if informs is None else b * informs[:, None, None]
        jz = patches.render(bz * (stamps.d_defocus - coef[:, None, None] * value))
        info = (jz * jz).sum().double()
        gain = (jz * residual_frame).sum().double() / info  # kept on the device: no wait for it each frame
        limit = config.max_axial_step_um
        axial = torch.where(info > 0, gain.clamp(-limit, limit), axial)
    return MotionStep(step.float(), axial)
