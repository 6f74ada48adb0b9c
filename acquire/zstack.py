"""Focal-stack (z-scan) acquisition through the focus stage, around the current focus.

A scan is a useq-schema ``MDASequence`` (one stage position at the focus, a relative z plan of the offsets).
It runs hardware-sequenced when the focus stage takes position sequences (the camera's exposures step the
stage, as a piezo triggered by the camera's TTL output), else the stage is stepped and a frame snapped per
plane. Either way the positions are checked against the stage's limits before anything moves and the focus
is restored afterwards, also on failure or Ctrl-C.

A stack is (Z, H, W) uint16 frames plus each plane's focus offset from the focus the scan started at,
``z_um`` (Z,) float64, in sample z (um; larger = deeper into the sample, as everywhere in deepz), and the
stage positions (``stage_um``: read back after each software step; the loaded sequence when sequenced).
storage.stack_file writes and reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import useq
from pymmcore_plus import CMMCorePlus

from acquire.errors import AcquisitionError
from acquire.mm import check_camera_format

log = logging.getLogger(__name__)

MAX_EXCURSION_UM = 200.0  # a focal scan never moves the objective further than this from focus


@dataclass(frozen=True)
class FocalScan:
    """A focal stack taken around the current focus: planes at ``focus_um + z_um``, focus restored after."""

    stack: np.ndarray  # (Z, H, W) uint16
    z_um: np.ndarray  # (Z,) float64, each plane's offset from focus as asked (sample z, larger = deeper)
    stage_um: np.ndarray  # (Z,) float64, the stage position read back at each plane (sequenced: as loaded)
    focus_um: float  # the stage position before the scan, where the stage is again afterwards
    sequenced: bool = False  # True: hardware-sequenced (the camera's exposures stepped the stage)


def scan_sequence(focus_um: float, z_um: Sequence[float]) -> useq.MDASequence:
    """The focal scan as a useq MDASequence: the stage at ``focus_um``, ``z_um`` as a relative z plan."""
    return useq.MDASequence(
        stage_positions=[useq.Position(z=float(focus_um))],
        z_plan=useq.ZRelativePositions(relative=[float(z) for z in z_um]),
    )


def can_sequence(core: CMMCorePlus, stage: str, n: int) -> bool:
    """Whether ``stage`` takes a hardware sequence of ``n`` positions."""
    return bool(core.isStageSequenceable(stage)) and core.getStageSequenceMaxLength(stage) >= n


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
    sequenced: bool | None = None,
) -> FocalScan:
    """One frame at each focus offset ``z_um`` from the current focus, hardware-sequenced or stepped.

    Offsets, never absolute positions: a rig focused at 2000 um scans 1990..2010 um for -10..10. They are
    checked against ``max_excursion_um`` and the stage's limits before anything moves, and the focus returns
    to where it was afterwards, also on failure or Ctrl-C. ``sequenced`` None runs the scan as a hardware
    sequence when the stage can take it and no ``settle_ms`` is asked (a wait between steps needs software
    steps); True requires it, False steps in software.
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
    positions = np.array([event.z_pos for event in scan_sequence(start, z).iter_events()], np.float64)
    able = can_sequence(core, focus, positions.size)
    if sequenced and not able:
        raise AcquisitionError(
            f"Stage {focus!r} cannot run a hardware sequence of {positions.size} positions (sequenceable: "
            f"{core.isStageSequenceable(focus)}, longest sequence {core.getStageSequenceMaxLength(focus)}); "
            "step it in software instead."
        )
    if sequenced is None:
        sequenced = able and not settle_ms
    shape = (int(core.getImageHeight()), int(core.getImageWidth()))
    try:
        if sequenced:
            stack, stage = _run_sequenced(core, focus, positions, shape), positions.copy()
        else:
            stack, stage = _run_stepped(core, focus, positions, shape, settle_ms)
    finally:
        core.setPosition(focus, start)
        core.waitForDevice(focus)
    return FocalScan(stack=stack, z_um=z, stage_um=stage, focus_um=start, sequenced=sequenced)


def _checked(core: CMMCorePlus, image: np.ndarray, shape: tuple[int, int], position: float) -> np.ndarray:
    if image.shape != shape or image.dtype != np.uint16:
        raise AcquisitionError(
            f"Camera {core.getCameraDevice()!r} returned a {image.dtype} frame of shape {image.shape} at "
            f"focus {position:g} um, expected uint16 {shape}. Check the camera's ROI/binning/pixel type."
        )
    return image


def _run_stepped(
    core: CMMCorePlus,
    focus: str,
    positions: np.ndarray,
    shape: tuple[int, int],
    settle_ms: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Move, wait for the stage (and ``settle_ms``), read the position back, snap; plane by plane."""
    stack = np.empty((positions.size, *shape), np.uint16)
    stage = np.empty(positions.size, np.float64)
    for i, position in enumerate(positions):
        core.setPosition(focus, float(position))
        core.waitForDevice(focus)
        if settle_ms:
            core.sleep(settle_ms)
        stage[i] = core.getPosition(focus)
        core.snapImage()
        stack[i] = _checked(core, core.getImage(), shape, position)
    return stack, stage


def _run_sequenced(
    core: CMMCorePlus, focus: str, positions: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Load the positions into the stage, start it, and take one camera sequence frame per position."""
    n = positions.size
    stack = np.empty((n, *shape), np.uint16)
    interval_s = max(float(core.getExposure()), _readout_ms(core)) / 1000
    patience_s = 10.0 + 10 * interval_s
    core.loadStageSequence(focus, positions.tolist())
    core.startStageSequence(focus)
    try:
        core.startSequenceAcquisition(n, 0.0, True)
        i, last = 0, time.monotonic()
        while i < n:
            if core.getRemainingImageCount():
                stack[i] = _checked(core, core.popNextImage(), shape, positions[i])
                i, last = i + 1, time.monotonic()
            elif not core.isSequenceRunning() or time.monotonic() - last > patience_s:
                raise AcquisitionError(
                    f"Camera {core.getCameraDevice()!r} delivered {i} of the {n} frames of a "
                    f"hardware-sequenced focal scan. Check that its trigger output drives stage {focus!r}, "
                    "or step the stage in software (a settle time does)."
                )
            else:
                time.sleep(0.001)
    finally:
        if core.isSequenceRunning():
            core.stopSequenceAcquisition()
        core.stopStageSequence(focus)
    log.debug("hardware-sequenced focal scan of %d planes on stage %s", n, focus)
    return stack


def _readout_ms(core: CMMCorePlus) -> float:
    camera = core.getCameraDevice()
    if not core.hasProperty(camera, "ReadoutTime"):
        return 0.0
    return float(core.getProperty(camera, "ReadoutTime") or 0)


def z_positions(z_min: float, z_max: float, step: float) -> np.ndarray:
    """Inclusive, evenly spaced positions from z_min to z_max (step > 0)."""
    if step <= 0 or z_max < z_min:
        raise AcquisitionError(
            f"Bad z range {z_min:g}..{z_max:g} step {step:g}: need z_min <= z_max and a positive step."
        )
    n = int(np.floor((z_max - z_min) / step + 1e-9)) + 1
    return np.round(z_min + step * np.arange(n), 6)
