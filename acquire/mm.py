"""Micro-Manager camera loop: continuous sequence acquisition on pymmcore-plus, as a FrameSource.

The same code drives the simulated microscope (UniMMCore Python devices) and a real rig (a Micro-Manager
hardware .cfg with C++ device adapters). Frames are never lost silently: gaps in the core's image numbers
(the circular buffer overwrote frames nobody had read yet) are counted into ``FrameMeta.lost_before`` and
``SourceStats``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
from pymmcore_plus import CMMCorePlus

from acquire.camera import check_buffer, check_exposure, set_binning, set_roi
from acquire.errors import AcquisitionError, one_line
from acquire.frames import SourceStats
from wire.frames import FrameMeta
from acquire.sim.config import SimConfig

log = logging.getLogger(__name__)

_STOP = object()


def _missing_adapter_help(core: CMMCorePlus) -> str:
    paths = list(core.getDeviceAdapterSearchPaths())
    where = f"searched: {', '.join(paths)}" if paths else "no Micro-Manager installation was found"
    return (
        f"The Micro-Manager device adapters it names are not installed ({where}). Install them with "
        "`mmcore install` (downloads Micro-Manager's device adapters for pymmcore-plus), or set the "
        "MICROMANAGER_PATH environment variable to an existing Micro-Manager installation folder, then retry."
    )


def open_core(
    mm_config: Path | str | None = None, sim_config: SimConfig | Path | str | None = None
) -> CMMCorePlus:
    """A ready core: the simulated microscope when ``mm_config`` is None, else the rig described by the .cfg.

    A rig config may mix C++ device adapters and ``#py pyDevice`` lines (it loads in UniMMCore). Every failure
    raises AcquisitionError naming the problem and the fix, with no device left loaded.
    """
    from pymmcore_plus.experimental.unicore import UniMMCore

    if mm_config is None:
        from acquire.sim.devices import load_simulated_core

        if sim_config is not None and not isinstance(sim_config, SimConfig):
            sim_config = SimConfig.from_toml(Path(sim_config))
        return load_simulated_core(sim_config)
    path = Path(mm_config).expanduser()
    if not path.is_file():
        raise AcquisitionError(
            f"Micro-Manager config file {path} does not exist. Pass the .cfg your rig was set up with "
            "(saved by Micro-Manager's Hardware Configuration Wizard; deepz/configs/rig-template.cfg shows the "
            "format), or leave "
            "--mm-config out to use the simulated microscope."
        )
    core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as exc:  # pymmcore-plus raises RuntimeError/ImportError/ValueError with the line
        _unload(core)
        text = f"{exc} {exc.__cause__ or ''}"
        if "not a known Micro-manager DeviceAdapter" in text or "Failed to load device adapter" in text:
            raise AcquisitionError(
                f"Could not load {path}: a device adapter is missing ({one_line(exc)}). "
                + _missing_adapter_help(core)
            ) from exc
        raise AcquisitionError(
            f"Could not load Micro-Manager config {path}: {one_line(exc)}. Fix that line of the file "
            "(lines look like "
            "'Device,Label,Library,Name' or 'Property,Label,Name,Value'; see deepz/configs/rig-template.cfg)."
        ) from exc
    if not core.getCameraDevice():
        _unload(core)
        raise AcquisitionError(
            f"Micro-Manager config {path} loads no camera (Core Camera is empty). Add "
            "'Property,Core,Camera,<camera label>' to the file, naming a loaded camera device."
        )
    return core


def _unload(core: CMMCorePlus) -> None:
    try:
        core.unloadAllDevices()
    except Exception:  # noqa: BLE001 - best effort cleanup after a failure we are already reporting
        log.debug("unloadAllDevices failed during cleanup", exc_info=True)


def pixel_size_um(core: CMMCorePlus) -> float:
    """Sample-plane pixel size: the core's pixel-size preset, else the camera's 'PixelSize-um' property."""
    size = float(core.getPixelSizeUm())
    camera = core.getCameraDevice()
    if size <= 0 and camera and core.hasProperty(camera, "PixelSize-um"):
        size = float(core.getProperty(camera, "PixelSize-um"))
    if size <= 0:
        raise AcquisitionError(
            f"The pixel size of camera {camera!r} is unknown (no active pixel-size preset). Add "
            "'ConfigPixelSize,Res,<camera>,Binning,1' and "
            "'PixelSize_um,Res,<camera pixel / magnification>' lines "
            "to the .cfg (Micro-Manager's Pixel Size Calibration writes them)."
        )
    return size


def check_camera_format(core: CMMCorePlus) -> None:
    """Refuse cameras that do not deliver 16-bit monochrome frames."""
    bpp, comps = core.getBytesPerPixel(), core.getNumberOfComponents()
    if bpp != 2 or comps != 1:
        raise AcquisitionError(
            f"Camera {core.getCameraDevice()!r} delivers {bpp}-byte pixels with {comps} component(s); "
            "deepz needs "
            "16-bit monochrome frames. Set the camera's pixel type / bit depth to 16-bit mono (e.g. its "
            "'PixelType' property) in the .cfg or with core.setProperty."
        )


class MicroManagerSource:
    """Continuous sequence acquisition on a Micro-Manager core, drained by a dedicated thread.

    ``rate_hz`` sets the frame interval (and, unless ``exposure_ms`` is given, the exposure fills it);
    ``binning`` and ``roi`` (x, y, width, height in binned pixels) are set on the camera at once, so
    ``frame_shape`` and ``pixel_size_um`` follow them; ``buffer_mb`` resizes the core's circular buffer;
    ``queue_frames`` bounds the hand-off queue between the drain thread and the consumer (when both are full,
    the circular buffer overwrites; the loss is counted). Each setting is checked against what the camera
    allows (acquire.camera).
    """

    def __init__(
        self,
        core: CMMCorePlus,
        *,
        rate_hz: float | None = None,
        exposure_ms: float | None = None,
        binning: int | None = None,
        roi: tuple[int, int, int, int] | None = None,
        buffer_mb: int | None = None,
        queue_frames: int = 16,
    ) -> None:
        camera = core.getCameraDevice()
        if not camera:
            raise AcquisitionError(
                "The Micro-Manager core has no camera selected. Load a camera and select it with "
                "core.setCameraDevice(label) (or 'Property,Core,Camera,<label>' in the .cfg)."
            )
        if rate_hz is not None and rate_hz <= 0:
            raise AcquisitionError(f"Frame rate must be positive, got {rate_hz} Hz; pass e.g. --rate 100.")
        if binning is not None:
            set_binning(core, binning)
        if roi is not None:
            set_roi(core, roi)
        if exposure_ms is not None:
            check_exposure(core, exposure_ms)
        if buffer_mb is not None:
            check_buffer(core, buffer_mb)
        self.core = core
        self.camera = camera
        self.rate_hz = rate_hz
        self.exposure_ms = exposure_ms
        self.buffer_mb = buffer_mb
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._exposure_now = 0.0  # fallbacks for cameras whose metadata lacks exposure / focus
        self._focus_now = 0.0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._acquired = 0
        self._lost = 0
        self._overflows = 0
        self._first_host = 0.0
        self._last_host = 0.0
        self._last_number = -1
        self._last_camera_frame = -1
        self._next_index = 0

    # ---------------------------------------------------------------- FrameSource
    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) the camera delivers."""
        return (int(self.core.getImageHeight()), int(self.core.getImageWidth()))

    @property
    def pixel_size_um(self) -> float:
        """Sample-plane pixel size (see :func:`pixel_size_um`)."""
        return pixel_size_um(self.core)

    @property
    def stats(self) -> SourceStats:
        """Frames delivered, frames lost (image-number gaps), overflow events and the delivered rate."""
        with self._lock:
            span = self._last_host - self._first_host
            rate = (self._acquired - 1) / span if self._acquired > 1 and span > 0 else 0.0
            return SourceStats(self._acquired, self._lost, self._overflows, rate)

    def start(self) -> None:
        """Configure exposure and buffer, check the camera format, start the sequence and the drain thread."""
        if self._thread is not None:
            raise AcquisitionError("This MicroManagerSource is already running; call stop() before start().")
        core = self.core
        if core.isSequenceRunning():
            raise AcquisitionError(
                f"Camera {self.camera!r} is already running a sequence acquisition started elsewhere. "
                "Stop it (core.stopSequenceAcquisition()) before starting this source."
            )
        check_camera_format(self.core)
        exposure = self._configure_timing()
        if self.buffer_mb:
            core.setCircularBufferMemoryFootprint(int(self.buffer_mb))
        self._reset_counters()
        self._empty_queue()
        self._error = None
        self._stopping.clear()
        self._exposure_now = exposure
        self._focus_now = float(core.getPosition()) if core.getFocusDevice() else 0.0
        core.events.stagePositionChanged.connect(self._on_stage_moved)
        try:
            core.initializeCircularBuffer()
            core.startContinuousSequenceAcquisition(1000.0 / self.rate_hz if self.rate_hz else 0.0)
            self._thread = threading.Thread(target=self._drain, name="deepz-mm-drain", daemon=True)
            self._thread.start()
        except Exception:
            self._halt()
            raise

    def frames(self) -> Iterator[tuple[np.ndarray, FrameMeta]]:
        """Yield (uint16 (H, W) frame, FrameMeta) until stop(); re-raises a failure of the drain thread."""
        if self._thread is None:
            self.start()
        while True:
            item = self._queue.get()
            if item is _STOP:
                if self._error is not None:
                    raise self._error
                return
            image, meta, overflowed = item
            with self._lock:
                self._acquired += 1
                self._lost += meta.lost_before
                self._overflows += overflowed
                if self._acquired == 1:
                    self._first_host = meta.host_time_s
                self._last_host = meta.host_time_s
            yield image, meta

    def stop(self) -> None:
        """Stop the sequence and the drain thread; frames already queued are discarded."""
        self._halt()

    def __enter__(self) -> MicroManagerSource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- internals
    def _configure_timing(self) -> float:
        core = self.core
        interval = 1000.0 / self.rate_hz if self.rate_hz else None
        exposure = self.exposure_ms or interval or core.getExposure()
        if interval is not None and exposure > interval * (1 + 1e-9):
            raise AcquisitionError(
                f"Exposure {exposure:g} ms is longer than the frame interval {interval:g} ms of "
                f"{self.rate_hz:g} Hz. Shorten the exposure to at most {interval:g} ms or lower the rate to "
                f"{1000 / exposure:g} Hz."
            )
        if interval is not None and core.hasProperty(self.camera, "ReadoutTime"):
            readout = float(core.getProperty(self.camera, "ReadoutTime") or 0)
            if readout > interval * (1 + 1e-9):
                raise AcquisitionError(
                    f"Camera {self.camera!r} cannot reach {self.rate_hz:g} Hz: reading out a "
                    f"{self.frame_shape[1]}x{self.frame_shape[0]} frame takes {readout:g} ms, so it tops out "
                    f"at {1000 / readout:g} Hz. Lower the rate, or shrink the frame (ROI / binning) to go "
                    "faster."
                )
        check_exposure(core, float(exposure))
        core.setExposure(float(exposure))
        return float(core.getExposure())

    def _on_stage_moved(self, label: str, position: float) -> None:
        if label == self.core.getFocusDevice():
            self._focus_now = float(position)

    def _halt(self) -> None:
        self._stopping.set()
        try:
            if self.core.isSequenceRunning():
                self.core.stopSequenceAcquisition()
        finally:
            self.core.events.stagePositionChanged.disconnect(self._on_stage_moved)
            thread, self._thread = self._thread, None
            if thread is not None:
                thread.join(timeout=5)
            self._flush_queue()

    def _empty_queue(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _flush_queue(self) -> None:
        """Discard queued frames and leave the end marker for the consumer."""
        self._empty_queue()
        self._queue.put(_STOP)

    def _put(self, item: object) -> bool:
        """Hand a frame to the consumer, waiting while the queue is full; False once stopping."""
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        core, shape = self.core, self.frame_shape
        # poll a quarter frame interval (0.5..2 ms): low latency without waking the GIL needlessly
        poll_s = min(0.002, max(0.0005, 0.25 / self.rate_hz)) if self.rate_hz else 0.001
        try:
            while not self._stopping.is_set():
                if core.getRemainingImageCount() == 0:
                    if not core.isSequenceRunning():
                        self._sequence_ended()
                        return
                    time.sleep(poll_s)
                    continue
                image, md = core.popNextImageAndMD()
                host = time.time()
                if image.shape != shape or image.dtype != np.uint16:
                    raise AcquisitionError(
                        f"Camera {self.camera!r} returned a {image.dtype} frame of shape {image.shape}, "
                        "but the "
                        f"core announced uint16 {shape}. The camera adapter misreports its format: check its "
                        "ROI/binning/pixel-type settings (or fix the device adapter) and restart acquisition."
                    )
                meta, overflowed = self._meta(md, host)
                if not self._put((image, meta, overflowed)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._error = (
                exc
                if isinstance(exc, AcquisitionError)
                else AcquisitionError(
                    f"Acquisition from camera {self.camera!r} failed: {exc}. Check the camera and restart."
                )
            )
            self._error.__cause__ = None if exc is self._error else exc
            try:
                if core.isSequenceRunning():
                    core.stopSequenceAcquisition()
            finally:
                self._stopping.set()
                self._flush_queue()

    def _sequence_ended(self) -> None:
        """The camera stopped by itself: an overflow (C++ cores stop on it) or a device failure."""
        if self.core.isBufferOverflowed():
            with self._lock:
                self._overflows += 1
            raise AcquisitionError(
                f"Camera {self.camera!r} stopped because the circular buffer overflowed (frames were not "
                "read fast enough). Enlarge the buffer (buffer_mb / UNICORE_SEQUENCE_BUFFER_MB), lower the "
                "frame rate, "
                "or make the consumer faster."
            )
        raise AcquisitionError(
            f"Camera {self.camera!r} stopped acquiring unexpectedly (its sequence ended). Check the camera "
            "connection and its log, then restart acquisition."
        )

    def _meta(self, md: object, host: float) -> tuple[FrameMeta, bool]:
        """FrameMeta from the core's metadata, and whether a buffer overflow preceded the frame."""
        get = md.get  # type: ignore[attr-defined]
        number = int(get("ImageNumber", self._last_number + 1))
        overflowed = max(0, number - self._last_number - 1) if self._last_number >= 0 else 0
        camera_frame = get("CameraFrameNumber", None)  # the camera's own counter shows frames it dropped
        skipped = 0
        if camera_frame is not None:
            camera_frame = int(camera_frame)
            if self._last_camera_frame >= 0:
                skipped = max(0, camera_frame - self._last_camera_frame - 1 - overflowed)
            self._last_camera_frame = camera_frame
        lost = overflowed + skipped
        cam_time = get("CameraTime-s", None)
        camera_time_s = float(cam_time) if cam_time is not None else float(get("ElapsedTime-ms", 0)) / 1000
        focus = get("FocusZ-um", None)
        exposure = get("Exposure-ms", None)
        if lost:
            log.warning(
                "camera %s: %d frame(s) lost before image %d (%d buffer overflow, %d skipped by the camera)",
                self.camera, lost, number, overflowed, skipped,
            )  # fmt: skip
        index = self._next_index
        self._next_index += 1
        self._last_number = number
        meta = FrameMeta(
            index=index,
            image_number=number,
            camera_time_s=camera_time_s,
            host_time_s=host,
            focus_z_um=float(focus) if focus is not None else self._focus_now,
            exposure_ms=float(exposure) if exposure is not None else self._exposure_now,
            lost_before=lost,
        )
        return meta, overflowed > 0
