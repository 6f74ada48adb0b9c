"""The simulated microscope as pymmcore-plus UniMMCore Python devices: camera, focus stage, shutter.

Load them from code with :func:`load_simulated_core`, or from a Micro-Manager config file
(deepz/configs/sim.cfg)::

    #py pyDevice,Z,acquire.sim.devices,SimFocusStage
    #py pyDevice,Camera,acquire.sim.devices,SimCamera
    #py Property,Camera,ConfigFile,/path/to/sim.toml

The camera renders each frame from a WormSimulator at the focus stage's position and the simulated time of
the exposure (seconds since the camera was initialised), then bins (sums, saturating at 16 bits) and crops to
its ROI as a sensor would. It learns the focus position from the stage's ``stagePositionChanged`` events
(the stage starts at 0 um), so camera and stage need not know each other. Like a rig's piezo, the stage can
run a hardware sequence of positions (up to SequenceMaxLength, 0 = none): armed with one, it steps on each
exposure the camera announces through its 'TriggerOut' property, the simulated TTL line.
The simulated light source is always on; the shutter exists so that AutoShutter and MDA work as on a rig.

Ground truth of a frame: ``WormSimulator(config).truth(meta.camera_time_s)`` with the camera's config (the
simulator is deterministic, so a second instance gives the same sample; the camera renders exactly
``render(camera_time_s, focus_z_um, exposure_ms=...)``, binned and cropped to the ROI, which the tests check
pixel for pixel; truth positions are in full-sensor coordinates).
"""

from __future__ import annotations

import logging

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pymmcore_plus.experimental.unicore import CameraDevice, ShutterDevice, StageDevice, UniMMCore

from acquire.sim.config import SimConfig
from acquire.sim.simulator import MODALITIES, WormSimulator

PIXEL_CONFIG = "sim-objective"
MAX_LAG_S = 5.0  # on-board camera memory: how far rendering may lag the camera clock before frames drop
BINNINGS = (1, 2, 4)
TRIGGER_OUT = "TriggerOut"  # the camera's exposure counter, announced at the end of every exposure


def _resolve(path: Path) -> Path:
    """A relative ConfigFile is looked up in the working directory, then in the project root."""
    if path.is_absolute() or path.exists():
        return path
    in_project = Path(__file__).resolve().parents[2] / path
    return in_project if in_project.exists() else path


class SimCamera(CameraDevice):
    """A 16-bit camera looking at the simulated worm; frame interval = max(exposure, sensor readout time)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        super().__init__()
        self._config = config
        self._sim: WormSimulator | None = None
        self._exposure_ms = 10.0
        self._focus_z_um = 0.0
        self._binning = 1
        self._roi: tuple[int, int, int, int] | None = None  # x, y, width, height in binned pixels
        self._exposures = 0
        self._t0 = time.perf_counter()
        self.set_property_allowed_values("Binning", [str(b) for b in BINNINGS])  # strings, as from a .cfg
        self.set_property_limits("Exposure", (0.001, 60_000.0))
        self.register_property(TRIGGER_OUT, getter=lambda dev: dev._exposures, property_type=int,
                               is_read_only=True)
        self.register_property("ConfigFile", default_value="", is_pre_init=True)
        self.register_property("FocusDevice", default_value="Z")
        self.register_property("Modality", default_value="widefield", allowed_values=MODALITIES)
        # > 0: render this many frames when a sequence starts and cycle through them (benchmarks the
        # acquisition path without the simulator's render cost; frames then repeat and lag their truth)
        self.register_property("PrerenderedFrames", default_value=0, limits=(0, 1000))
        # frames rendered in parallel ahead of their exposure time (2 = use both cores of a small machine)
        self.register_property("RenderAhead", default_value=2, limits=(1, 8))
        self.register_property(
            "PixelSize-um", getter=SimCamera.pixel_size_um, property_type=float, is_read_only=True
        )

    @property
    def simulator(self) -> WormSimulator:
        """The simulator behind the camera (available once the device is initialised)."""
        if self._sim is None:
            raise RuntimeError(
                f"Simulated camera {self.get_label()!r} is not initialised; call core.initializeAllDevices() "
                "(or use acquire.sim.load_simulated_core) before acquiring."
            )
        return self._sim

    def initialize(self) -> None:
        """Build the simulator (PSF stamps included) and start listening to the focus stage."""
        config = self._config
        if config is None:
            path = str(self.get_property_value("ConfigFile")).strip()
            config = SimConfig.from_toml(_resolve(Path(path))) if path else SimConfig()
        self._sim = WormSimulator(config)
        self._exposure_ms = config.camera.exposure_ms
        self._sim.stamps(str(self.get_property_value("Modality")))
        self.core.events.stagePositionChanged.connect(self._on_stage_moved)
        self._t0 = time.perf_counter()

    def shutdown(self) -> None:
        """Stop listening to the focus stage."""
        self.core.events.stagePositionChanged.disconnect(self._on_stage_moved)

    def _on_stage_moved(self, label: str, position_um: float) -> None:
        if label == self.get_property_value("FocusDevice"):
            self._focus_z_um = float(position_um)

    def get_exposure(self) -> float:
        """Exposure in ms."""
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        """Set the exposure in ms (values from config files arrive as strings)."""
        value = float(exposure)
        if not 0 < value <= 60_000:
            raise ValueError(f"Exposure {value} ms is out of range; use a value in (0, 60000] ms.")
        self._exposure_ms = value

    def pixel_size_um(self) -> float:
        """Sample-plane size of a (binned) pixel (also the read-only 'PixelSize-um' property)."""
        return self.simulator.pixel_size_um * self._binning if self._sim else 0.0

    def get_readout_time(self) -> float:
        """Shortest frame interval in ms: the rolling readout of the sensor rows the ROI spans."""
        if self._sim is None:
            return 0.0
        rows = self.shape()[0] * self._binning
        return self.simulator.config.camera.readout_interval_ms * rows / self.simulator.frame_shape[0]

    def get_binning(self) -> int:
        """Pixels summed along each axis (1, 2 or 4)."""
        return self._binning

    def set_binning(self, value: int) -> None:
        """Bin ``value`` x ``value`` pixels; clears the ROI, which is in binned pixels (as in MMCore)."""
        binning = int(value)
        if binning not in BINNINGS:
            raise ValueError(f"Binning {binning} is not supported; use one of {BINNINGS}.")
        self._binning, self._roi = binning, None

    def _binned_shape(self) -> tuple[int, int]:
        h, w = self.simulator.frame_shape
        return h // self._binning, w // self._binning

    def get_roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the frame in binned sensor pixels."""
        h, w = self._binned_shape()
        return self._roi or (0, 0, w, h)

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        """Read out only this rectangle of the (binned) sensor; ValueError when it does not fit on it."""
        h, w = self._binned_shape()
        if min(x, y) < 0 or min(width, height) <= 0 or x + width > w or y + height > h:
            raise ValueError(f"ROI x={x} y={y} {width}x{height} does not fit the {w}x{h} sensor.")
        self._roi = (int(x), int(y), int(width), int(height))

    def clear_roi(self) -> None:
        """Read out the whole sensor."""
        self._roi = None

    def shape(self) -> tuple[int, int]:
        """(H, W) of a frame: the ROI of the binned sensor."""
        x, y, w, h = self.get_roi()
        return h, w

    def _read_out(self, image: np.ndarray) -> np.ndarray:
        """Bin (sum, saturating at 65535) and crop a rendered full-sensor frame."""
        b = self._binning
        if b > 1:
            h, w = self._binned_shape()
            summed = image[: h * b, : w * b].reshape(h, b, w, b).sum(axis=(1, 3), dtype=np.uint32)
            image = np.minimum(summed, np.iinfo(np.uint16).max).astype(np.uint16)
        x, y, w, h = self.get_roi()
        return image[y : y + h, x : x + w]

    def _trigger_out(self) -> None:
        """End of an exposure: the TTL edge a triggered device (a sequenced stage) steps on."""
        self._exposures += 1
        self.core.events.propertyChanged.emit(self.get_label(), TRIGGER_OUT, str(self._exposures))

    def dtype(self) -> np.dtype:
        """Frames are 16-bit."""
        return np.dtype(np.uint16)

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], np.dtype], np.ndarray]
    ) -> Iterator[Mapping]:
        """Free-running acquisition: exposure k starts at start + k * max(exposure, readout).

        ``RenderAhead`` frames are rendered in parallel ahead of their time (numpy/torch release the GIL, so a
        second core helps); each uses the focus position when it is queued, which its metadata reports, and
        then announces the end of its exposure (``TriggerOut``). When rendering falls behind (a busy CPU) the
        camera catches up at full speed; more than
        ``MAX_LAG_S`` behind, it skips the missed exposures like a camera whose on-board memory overflowed,
        and the gap shows in ``CameraFrameNumber``.
        """
        sim = self.simulator
        shape, dtype = self.shape(), self.dtype()
        modality = str(self.get_property_value("Modality"))
        exposure = self._exposure_ms
        interval = max(exposure, sim.config.camera.readout_interval_ms) / 1000
        n_loop = int(self.get_property_value("PrerenderedFrames"))
        loop = [
            sim.render(i * interval, self._focus_z_um, modality=modality, exposure_ms=exposure)
            for i in range(n_loop)
        ]
        ahead = max(1, min(int(self.get_property_value("RenderAhead")), n or 2**31))
        start = time.perf_counter()

        def frame(k: int, z: float) -> tuple[int, float, float, np.ndarray]:
            t_s = round(start + k * interval - self._t0, 6)  # metadata carries t to 1 us: render that t
            image = loop[k % n_loop] if loop else sim.render(t_s, z, modality=modality, exposure_ms=exposure)
            return k, t_s, z, self._read_out(image)

        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="sim-camera-render") as pool:
            pending: deque[Future] = deque()
            next_k = done = 0
            while n is None or done < n:
                while len(pending) < ahead and (n is None or done + len(pending) < n):
                    # the focus of this exposure; after it, a triggered stage moves on to its next position
                    pending.append(pool.submit(frame, next_k, self._focus_z_um))
                    self._trigger_out()
                    next_k += 1
                k, t_s, z, image = pending.popleft().result()
                lag = time.perf_counter() - (start + k * interval)
                if lag < 0:
                    time.sleep(-lag)
                elif lag > MAX_LAG_S:  # drop what is queued and resume at the present exposure
                    for future in pending:
                        future.cancel()
                    pending.clear()
                    next_k = k + 1 + int(lag / interval)
                buffer = get_buffer(shape, dtype)
                buffer[:] = image
                yield {
                    "CameraFrameNumber": str(k),
                    "CameraTime-s": f"{t_s:.6f}",
                    "FocusZ-um": repr(z),
                    "Exposure-ms": repr(exposure),
                }
                done += 1


class SimFocusStage(StageDevice):
    """Focus (Z) stage; its position is the sample z in focus, within [LowerLimit-um, UpperLimit-um].

    Sequenceable like a piezo: loaded with positions and started, it steps on each camera exposure.
    """

    def __init__(
        self, lower_um: float = -100.0, upper_um: float = 100.0, sequence_max_length: int = 1000
    ) -> None:
        super().__init__()
        self._z_um = 0.0
        self._sequence: tuple[float, ...] = ()
        self._step = 0
        self.register_property("LowerLimit-um", default_value=float(lower_um))
        self.register_property("UpperLimit-um", default_value=float(upper_um))
        # the longest hardware sequence of positions the stage takes, like a piezo controller's (0: none)
        self.register_property("SequenceMaxLength", default_value=int(sequence_max_length),
                               limits=(0, 10_000))
        self.register_property("TriggerSource", default_value="Camera")  # the camera whose exposures step it

    def limits_um(self) -> tuple[float, float]:
        """(lower, upper) travel limits in um."""
        return float(self.get_property_value("LowerLimit-um")), float(
            self.get_property_value("UpperLimit-um")
        )

    def set_position_um(self, val: float) -> None:
        """Move to ``val`` um; outside the travel limits raises ValueError and the stage does not move."""
        z = float(val)
        lo, hi = self.limits_um()
        if not lo <= z <= hi:
            raise ValueError(
                f"Focus position {z:g} um is outside the travel range [{lo:g}, {hi:g}] um of stage "
                f"{self.get_label()!r}. Choose positions inside the range, or widen it with the stage's "
                "'LowerLimit-um' / 'UpperLimit-um' properties if the hardware allows."
            )
        self._z_um = z
        self.core.events.stagePositionChanged.emit(self.get_label(), z)

    def get_position_um(self) -> float:
        """Current position in um."""
        return self._z_um

    def get_sequence_max_length(self) -> int:
        """Longest position sequence the stage takes (0: not sequenceable)."""
        return int(self.get_property_value("SequenceMaxLength"))

    def send_sequence(self, sequence: tuple[float, ...]) -> None:
        """Load positions (um), each checked against the travel limits before any is used."""
        lo, hi = self.limits_um()
        outside = [z for z in map(float, sequence) if not lo <= z <= hi]
        if outside:
            raise ValueError(f"Sequence positions {outside[:5]} um lie outside the travel range "
                             f"[{lo:g}, {hi:g}] um of stage {self.get_label()!r}.")
        self._sequence = tuple(map(float, sequence))

    def start_sequence(self) -> None:
        """Go to the first position, then step to the next at each trigger (cycling, as piezos do)."""
        if not self._sequence:
            raise ValueError(f"Stage {self.get_label()!r} has no sequence loaded; load one before starting.")
        self._step = 0
        self.set_position_um(self._sequence[0])
        self.core.events.propertyChanged.connect(self._on_trigger)

    def stop_sequence(self) -> None:
        """Stop stepping on triggers; the stage stays where it is."""
        self.core.events.propertyChanged.disconnect(self._on_trigger)

    def _on_trigger(self, device: str, prop: str, value: str) -> None:
        if prop == TRIGGER_OUT and device == self.get_property_value("TriggerSource"):
            self._step = (self._step + 1) % len(self._sequence)
            self.set_position_um(self._sequence[self._step])

    def home(self) -> None:
        """Move to 0 um, the nominal focal plane of the worm's midline."""
        self.set_position_um(0.0)

    def stop(self) -> None:
        """Moves are instantaneous: there is nothing in flight to stop."""

    def set_origin(self) -> None:
        """Refuse: positions are sample z, which the simulated camera depends on."""
        raise ValueError(
            f"Stage {self.get_label()!r} reports sample z directly and cannot re-zero; "
            "use relative moves (setRelativePosition) instead."
        )


class SimShutter(ShutterDevice):
    """A shutter that remembers its state (the simulated light source is always on)."""

    def __init__(self) -> None:
        super().__init__()
        self._open = False

    def get_open(self) -> bool:
        """True when open."""
        return self._open

    def set_open(self, open: bool) -> None:  # noqa: A002 - name fixed by the ShutterDevice API
        """Open or close."""
        self._open = bool(open) and str(open) not in ("0", "False")


def _python_devices_core() -> UniMMCore:
    """A UniMMCore for Python devices only; its search for a Micro-Manager install (not needed) is silenced."""
    logger = logging.getLogger("pymmcore-plus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return UniMMCore()
    finally:
        logger.setLevel(level)


def load_simulated_core(
    config: SimConfig | None = None,
    *,
    camera: str = "Camera",
    focus: str = "Z",
    shutter: str = "Shutter",
    core: UniMMCore | None = None,
) -> UniMMCore:
    """A UniMMCore with the simulated camera, focus stage and shutter loaded, initialised and selected."""
    core = core or _python_devices_core()
    cam = SimCamera(config)
    core.loadPyDevice(shutter, SimShutter())
    core.loadPyDevice(focus, SimFocusStage())
    core.loadPyDevice(camera, cam)
    try:
        cam.set_property_value("FocusDevice", focus)
        core.initializeAllDevices()
        core.setCameraDevice(camera)
        core.setFocusDevice(focus)
        core.setShutterDevice(shutter)
        core.definePixelSizeConfig(PIXEL_CONFIG)
        core.setPixelSizeUm(PIXEL_CONFIG, cam.simulator.pixel_size_um)
        core.setPixelSizeConfig(PIXEL_CONFIG)
    except Exception:
        core.unloadAllDevices()
        raise
    return core
