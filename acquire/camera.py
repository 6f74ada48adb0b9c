"""Camera settings of a rig (binning, ROI, exposure, circular buffer), each checked against what the camera
and the machine allow before it is applied, with one-line errors naming the allowed values."""

from __future__ import annotations

import logging

import psutil
from pymmcore_plus import CMMCorePlus

from acquire.errors import AcquisitionError, one_line

log = logging.getLogger(__name__)

MIN_BUFFER_FRAMES = 2  # one frame being written by the camera while the consumer reads another


def set_binning(core: CMMCorePlus, binning: int) -> None:
    """Bin ``binning`` x ``binning`` pixels, if the camera lists that binning (as "2" or "2x2")."""
    camera = core.getCameraDevice()
    if not core.hasProperty(camera, "Binning"):
        if binning == 1:
            return
        raise AcquisitionError(
            f"Camera {camera!r} has no Binning property, so it cannot bin {binning}x{binning}; leave binning "
            "out (or 1)."
        )
    allowed = list(core.getAllowedPropertyValues(camera, "Binning"))
    value = next((v for v in allowed if v.strip() in (str(binning), f"{binning}x{binning}")), None)
    if allowed and value is None:
        raise AcquisitionError(
            f"Camera {camera!r} cannot bin {binning}x{binning}; its binnings are {', '.join(allowed)}. "
            "Pass one of them (--binning, [source] binning)."
        )
    try:
        core.setProperty(camera, "Binning", value or str(binning))
    except Exception as exc:  # noqa: BLE001 - the adapter's refusal, reported with the value asked
        raise AcquisitionError(f"Camera {camera!r} refused binning {binning}: {one_line(exc)}") from exc


def set_roi(core: CMMCorePlus, roi: tuple[int, int, int, int]) -> None:
    """Read out only ``roi`` = (x, y, width, height) in binned sensor pixels, checked against the sensor.

    Cameras that round an ROI to their granularity keep theirs (logged); frames report the true shape.
    """
    camera = core.getCameraDevice()
    x, y, width, height = (int(v) for v in roi)
    core.clearROI()
    sensor_w, sensor_h = int(core.getImageWidth()), int(core.getImageHeight())
    if min(x, y) < 0 or min(width, height) <= 0 or x + width > sensor_w or y + height > sensor_h:
        raise AcquisitionError(
            f"ROI x={x} y={y} {width}x{height} does not fit camera {camera!r}'s {sensor_w}x{sensor_h} sensor "
            f"(at this binning): need x + width <= {sensor_w} and y + height <= {sensor_h} (--roi X Y W H, "
            "[source] roi)."
        )
    try:
        core.setROI(x, y, width, height)
    except Exception as exc:  # noqa: BLE001 - the adapter's refusal, reported with the ROI asked
        raise AcquisitionError(
            f"Camera {camera!r} refused ROI x={x} y={y} {width}x{height}: {one_line(exc)}"
        ) from exc
    got = tuple(int(v) for v in core.getROI())
    if got != (x, y, width, height):
        log.warning("camera %s set ROI %s for the %s asked (its granularity)", camera, got, roi)


def check_exposure(core: CMMCorePlus, exposure_ms: float) -> None:
    """Refuse an exposure outside the camera's published Exposure limits."""
    camera = core.getCameraDevice()
    if not core.hasPropertyLimits(camera, "Exposure"):
        return
    lo, hi = core.getPropertyLowerLimit(camera, "Exposure"), core.getPropertyUpperLimit(camera, "Exposure")
    if not lo <= exposure_ms <= hi:
        raise AcquisitionError(
            f"Exposure {exposure_ms:g} ms is outside camera {camera!r}'s range [{lo:g}, {hi:g}] ms; "
            "choose one inside it (--exposure, [source] exposure_ms)."
        )


def check_buffer(core: CMMCorePlus, buffer_mb: int) -> None:
    """Refuse a circular buffer that cannot hold two frames or does not fit the machine's free memory."""
    frame_mb = core.getImageBufferSize() / 2**20
    free_mb = psutil.virtual_memory().available / 2**20
    if buffer_mb < MIN_BUFFER_FRAMES * frame_mb:
        raise AcquisitionError(
            f"A {buffer_mb} MB circular buffer holds fewer than {MIN_BUFFER_FRAMES} frames of {frame_mb:.2f} "
            "MB; give it at least a second of frames (--buffer-mb, [source] buffer_mb)."
        )
    if buffer_mb > free_mb:
        raise AcquisitionError(
            f"A {buffer_mb} MB circular buffer is more than the {free_mb:.0f} MB of free memory; choose a "
            "smaller one (--buffer-mb, [source] buffer_mb)."
        )
