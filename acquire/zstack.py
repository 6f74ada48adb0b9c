"""Focal-stack (z-scan) acquisition through the focus stage, around the current focus.

A stack is (Z, H, W) uint16 frames plus each plane's focus offset from the focus the scan started at,
``z_um`` (Z,) float64, in sample z (um; larger = deeper into the sample, as everywhere in deepz), and the
absolute stage positions read back (``stage_um``). storage.stack_file writes and reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymmcore_plus import CMMCorePlus

from acquire.errors import AcquisitionError
from acquire.mm import check_camera_format

MAX_EXCURSION_UM = 200.0  # a focal scan never moves the objective further than this from focus


@dataclass(frozen=True)
class FocalScan:
    """A focal stack taken around the current focus: planes at ``focus_um + z_um``, focus restored after."""

    stack: np.ndarray  # (Z, H, W) uint16
    z_um: np.ndarray  # (Z,) float64, each plane's offset from focus as asked (sample z, larger = deeper)
    stage_um: np.ndarray  # (Z,) float64, the stage position read back at each plane
    focus_um: float  # the stage position before the scan, where the stage is again afterwards


def _stage_limits(core: CMMCorePlus, focus: str) -> tuple[float, float] | None:
    """The stage's travel range where it publishes one (LowerLimit-um / UpperLimit-um properties)."""
    names = set(core.getDevicePropertyNames(focus))
    if not {"LowerLimit-um", "UpperLimit-um"} <= names:
        return None
    return float(core.getProperty(focus, "LowerLimit-um")), float(core.getProperty(focus, "UpperLimit-um"))


def _check_range(
    core: CMMCorePlus, focus: str, start_um: float, z_um: np.ndarray, max_excursion_um: float
) -> None:
    """Refuse the scan before moving when a plane is too far from focus or outside the stage's travel."""
    far = z_um[np.abs(z_um) > max_excursion_um]
    if far.size:
        raise AcquisitionError(
            f"Focal-scan offsets {far.tolist()[:5]} um lie more than {max_excursion_um:g} um from the current "
            "focus. Offsets are relative to focus (e.g. --z-range -10 10 scans 10 um either side of it); "
            "refusing to drive the objective that far."
        )
    limits = _stage_limits(core, focus)
    if limits is None:
        return
    lo, hi = limits
    absolute = start_um + z_um
    bad = absolute[(absolute < lo) | (absolute > hi)]
    if bad.size:
        raise AcquisitionError(
            f"Focus positions {bad.tolist()[:5]} um (focus {start_um:g} um plus the scan's offsets) lie outside "
            f"the travel range [{lo:g}, {hi:g}] um of stage {focus!r}. Choose offsets within "
            f"[{lo - start_um:g}, {hi - start_um:g}] um of the current focus."
        )


def acquire_focal_stack(
    core: CMMCorePlus,
    z_um: Sequence[float],
    *,
    settle_ms: float = 0.0,
    max_excursion_um: float = MAX_EXCURSION_UM,
) -> FocalScan:
    """Snap one frame at each focus offset ``z_um`` from the current focus (stepping the focus stage).

    Offsets, never absolute positions: a rig focused at 2000 um scans 1990..2010 um for -10..10. They are
    checked against ``max_excursion_um`` and the stage's limits before anything moves, and the focus returns
    to where it was afterwards, also on failure or Ctrl-C.
    """
    z = np.asarray(z_um, dtype=np.float64)
    if z.ndim != 1 or z.size == 0:
        raise AcquisitionError(
            "A focal stack needs at least one z position; pass e.g. --z-range -10 10 --step 0.5."
        )
    focus = core.getFocusDevice()
    if not focus:
        raise AcquisitionError(
            "The core has no focus device, so it cannot step through z. Load a Z stage and select it with "
            "core.setFocusDevice(label) (or 'Property,Core,Focus,<label>' in the .cfg)."
        )
    if core.isSequenceRunning():
        raise AcquisitionError("A sequence acquisition is running; stop live acquisition before a z-scan.")
    check_camera_format(core)
    start = float(core.getPosition(focus))
    _check_range(core, focus, start, z, max_excursion_um)
    shape = (int(core.getImageHeight()), int(core.getImageWidth()))
    stack = np.empty((z.size, *shape), np.uint16)
    stage = np.empty(z.size, np.float64)
    try:
        for i, zi in enumerate(z):
            core.setPosition(focus, start + float(zi))
            core.waitForDevice(focus)
            if settle_ms:
                core.sleep(settle_ms)
            stage[i] = core.getPosition(focus)
            core.snapImage()
            image = core.getImage()
            if image.shape != shape or image.dtype != np.uint16:
                raise AcquisitionError(
                    f"Camera {core.getCameraDevice()!r} returned a {image.dtype} frame of shape "
                    f"{image.shape} at "
                    f"z = {zi:g} um, expected uint16 {shape}. Check the camera's ROI/binning/pixel type."
                )
            stack[i] = image
    finally:
        core.setPosition(focus, start)
        core.waitForDevice(focus)
    return FocalScan(stack=stack, z_um=z, stage_um=stage, focus_um=start)


def z_positions(z_min: float, z_max: float, step: float) -> np.ndarray:
    """Inclusive, evenly spaced positions from z_min to z_max (step > 0)."""
    if step <= 0 or z_max < z_min:
        raise AcquisitionError(
            f"Bad z range {z_min:g}..{z_max:g} step {step:g}: need z_min <= z_max and a positive step."
        )
    n = int(np.floor((z_max - z_min) / step + 1e-9)) + 1
    return np.round(z_min + step * np.arange(n), 6)
