"""The simulated microscope as pymmcore-plus UniMMCore Python devices: camera, focus stage, shutter.

Load them from code with :func:`load_simulated_core`, or from a Micro-Manager config file (configs/sim.cfg)::

    #py pyDevice,Z,acquire.sim.devices,SimFocusStage
    #py pyDevice,Camera,acquire.sim.devices,SimCamera
    #py Property,Camera,ConfigFile,configs/sim.toml

The camera renders each frame from a WormSimulator at the focus stage's position and the simulated time of
the exposure (seconds since the camera was initialised). It learns the focus position from the stage's
``stagePositionChanged`` events (the stage starts at 0 um), so camera and stage need not know each other.
The simulated light source is always on; the shutter exists so that AutoShutter and MDA work as on a rig.

Ground truth of a frame: ``WormSimulator(config).truth(meta.camera_time_s)`` with the camera's config (the
simulator is deterministic, so a second instance gives the same sample; the camera renders exactly
``render(camera_time_s, focus_z_um, exposure_ms=...)``, which the tests check pixel for pixel).
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
        self._t0 = time.perf_counter()
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
        """Sample-plane pixel size (also the read-only 'PixelSize-um' property)."""
        return self.simulator.pixel_size_um if self._sim else 0.0

    def get_readout_time(self) -> float:
        """Shortest frame interval in ms (rolling readout of the sensor rows)."""
        return self.simulator.config.camera.readout_interval_ms if self._sim else 0.0

    def shape(self) -> tuple[int, int]:
        """(H, W) of a frame."""
        return self.simulator.frame_shape

    def dtype(self) -> np.dtype:
        """Frames are 16-bit."""
        return np.dtype(np.uint16)

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], np.dtype], np.ndarray]
    ) -> Iterator[Mapping]:
        """Free-running acquisition: exposure k starts at start + k * max(exposure, readout).

        ``RenderAhead`` frames are rendered in parallel ahead of their time (numpy/torch release the GIL, so a
        second core helps); each uses the focus position when its rendering starts, which its metadata
        reports. When rendering falls behind (a busy CPU) the camera catches up at full speed; more than
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

        def frame(k: int) -> tuple[int, float, float, np.ndarray]:
            t_s = round(start + k * interval - self._t0, 6)  # metadata carries t to 1 us: render that t
            z = self._focus_z_um
            image = loop[k % n_loop] if loop else sim.render(t_s, z, modality=modality, exposure_ms=exposure)
            return k, t_s, z, image

        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="sim-camera-render") as pool:
            pending: deque[Future] = deque()
            next_k = done = 0
            while n is None or done < n:
                while len(pending) < ahead and (n is None or done + len(pending) < n):
                    pending.append(pool.submit(frame, next_k))
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
    """Focus (Z) stage; its position is the sample z in focus, within [LowerLimit-um, UpperLimit-um]."""

    def __init__(self, lower_um: float = -100.0, upper_um: float = 100.0) -> None:
        super().__init__()
        self._z_um = 0.0
        self.register_property("LowerLimit-um", default_value=float(lower_um))
        self.register_property("UpperLimit-um", default_value=float(upper_um))

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
