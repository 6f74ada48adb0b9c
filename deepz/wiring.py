"""Build each stage from the run configuration; deepz.runner composes them into a run."""

from __future__ import annotations

import dataclasses
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepz.config import (
    InferenceConfig,
    PublishConfig,
    RecordingConfig,
    RunConfig,
    SourceConfig,
    TrackingConfig,
)
from deepz.optics_check import CameraOptics, check_optics, optics_report
from deepz.protocols import FrameSource, VolumeEngine, VolumeTracker

if TYPE_CHECKING:
    from acquire.mm import MicroManagerSource
    from acquire.sim import SimConfig
    from infer.model_io import LoadedModel
    from storage import RecordingWriter
    from wire.messages import Publisher

log = logging.getLogger(__name__)


def software_versions() -> dict[str, str]:
    """Versions of this program and the libraries that shape its results."""
    names = ("deepz-live", "numpy", "torch", "pymmcore-plus", "zarr", "pyzmq", "pyqtgraph", "scipy")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_source(cfg: SourceConfig) -> MicroManagerSource:
    """The camera source: the simulated microscope in UniMMCore, or a real rig from its .cfg (concrete: the
    calibrating camera wraps it)."""
    from acquire.mm import MicroManagerSource, open_core

    core = open_core(cfg.mm_config, sim_config=_sim_config(cfg) if cfg.mm_config is None else None)
    try:
        return MicroManagerSource(core, rate_hz=cfg.rate_hz, exposure_ms=cfg.exposure_ms, binning=cfg.binning,
                                  roi=cfg.roi, buffer_mb=cfg.buffer_mb)
    except Exception:
        core.unloadAllDevices()
        raise


def build_replay_source(path: Path, *, realtime: bool) -> tuple[FrameSource, float]:
    """(source, frame interval s): a recording's frames with their recorded metadata, paced when `realtime`."""
    from acquire.array_source import ArraySource
    from storage import RecordingReader
    from wire.frames import FrameMeta

    reader = RecordingReader(path)
    if reader.n_frames == 0:
        raise FileNotFoundError(f"recording {path} holds no frames: nothing to replay")
    md = reader.metadata
    metas = [
        FrameMeta(
            index=t,
            image_number=int(md["image_number"][t]),
            camera_time_s=float(md["camera_time_s"][t]),
            host_time_s=float(md["host_time_s"][t]),
            focus_z_um=float(md["focus_z_um"][t]),
            exposure_ms=float(md["exposure_ms"][t]),
            lost_before=int(md["lost_before"][t]),
        )
        for t in range(reader.n_frames)
    ]
    rate = 1.0 / reader.frame_interval_s if realtime else None
    return ArraySource(reader.frames, metas, rate, pixel_size_um=reader.pixel_size_um), reader.frame_interval_s


def _sim_config(cfg: SourceConfig) -> SimConfig:
    from acquire.sim import SimConfig

    base = SimConfig.from_toml(cfg.sim_config) if cfg.sim_config is not None else SimConfig()
    return base.model_copy(
        update={
            "seed": cfg.seed,
            "camera": base.camera.model_copy(update={"shape": (cfg.size, cfg.size)}),
            "worm": base.worm.model_copy(update={"n_neurons": cfg.neurons}),
        }
    )


def planes_and_dpm(cfg: InferenceConfig, frame_shape: tuple[int, int], pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """The K plane offsets (um) and the (K, H, W) DPM stack asked for by the config."""
    from infer.dpm import curved_dpm, tilted_dpm, uniform_dpm, uniform_planes

    planes = uniform_planes(*cfg.z_range_um, cfg.planes)
    if cfg.dpm == "uniform":
        return planes, uniform_dpm(planes, frame_shape)
    if cfg.dpm == "tilt":
        slope_y, slope_x = (s / 1000.0 for s in cfg.tilt_um_per_mm)
        surface = tilted_dpm(frame_shape, pixel_size_um, slope_y=slope_y, slope_x=slope_x)
    else:
        corner_r2 = ((frame_shape[0] / 2) ** 2 + (frame_shape[1] / 2) ** 2) * pixel_size_um**2
        c = cfg.curvature_um / corner_r2
        surface = curved_dpm(frame_shape, pixel_size_um, coefficients={(2, 0): c, (0, 2): c})
    return planes, planes[:, None, None] + surface[None]


def camera_optics(source: SourceConfig | None, pixel_size_um: float) -> CameraOptics:
    """What is known of the camera's optics: its pixel size, plus NA and wavelength when ``source`` is the
    simulated microscope (a rig's .cfg and a replayed recording do not state them)."""
    if source is None or source.mm_config is not None:
        return CameraOptics(pixel_size_um)
    optics = _sim_config(source).optics
    return CameraOptics(pixel_size_um, optics.na, optics.emission_um)


def load_checked_model(
    cfg: InferenceConfig, frame_shape: tuple[int, int], pixel_size_um: float, camera: CameraOptics | None = None
) -> tuple[LoadedModel, np.ndarray, np.ndarray]:
    """(model, planes um, DPM stack) of a run: its model, refused when trained for other optics than the
    camera's unless ``cfg.allow_optics_mismatch`` (deepz.optics_check)."""
    from infer.model_io import load_model

    model = load_model(cfg.model)
    check_optics(model.manifest, camera or CameraOptics(pixel_size_um), allow_mismatch=cfg.allow_optics_mismatch)
    planes, dpm = planes_and_dpm(cfg, frame_shape, pixel_size_um)
    return model, planes, dpm


def build_engine(
    cfg: InferenceConfig, frame_shape: tuple[int, int], pixel_size_um: float, camera: CameraOptics | None = None
) -> tuple[VolumeEngine, LoadedModel, np.ndarray]:
    """Load the model and build the engine for this frame shape and DPM set; returns (engine, model, planes).

    A model trained for other optics than the camera's (``camera``, else its pixel size) is refused unless
    ``cfg.allow_optics_mismatch`` (deepz.optics_check). A super-resolution model (task "superres") runs as one
    plane at dz = 0 behind a bicubic upsampling of the raw frames onto its finer grid.
    """
    from infer.engine import make_engine

    model, planes, dpm = load_checked_model(cfg, frame_shape, pixel_size_um, camera)
    device = None if cfg.device == "auto" else cfg.device
    engine: VolumeEngine
    if model.manifest.task == "superres":
        from infer.superres.live import superres_engine_stage

        engine = superres_engine_stage(cfg.engine, model, frame_shape, pixel_size_um, planes, device)
    else:
        engine = make_engine(cfg.engine, model, frame_shape, dpm, batch=1, device=device)
    log.info("engine %s, %d planes %.2f..%.2f um, model %s", engine.name, len(planes), planes[0], planes[-1],
             model.manifest.name)
    return engine, model, planes


def build_recorder(
    cfg: RecordingConfig,
    *,
    frame_shape: tuple[int, int],
    pixel_size_um: float,
    planes_um: np.ndarray | None,
    frame_interval_s: float,
    run_config: RunConfig,
    model: LoadedModel | None,
    extra_attrs: dict[str, Any] | None = None,
    volume_upsample: int = 1,
    inputs: tuple[Path, ...] = (),
    wait_when_behind: bool = False,
    camera: CameraOptics | None = None,
) -> RecordingWriter | None:
    """Open the recording writer, or None when the run is not recorded (never over one of ``inputs``).

    Its attributes say how the camera's optics (``camera``, else its pixel size) compared with the model's, and
    whether a mismatch was allowed (deepz.optics_check).

    ``wait_when_behind`` (replay) makes every write wait for the disk rather than skip what does not fit.

    Volumes of a super-resolution model lie on a grid volume_upsample times finer than the frames.
    """
    if cfg.out is None:
        return None
    from storage import RecordingWriter

    attrs = {
        "config": run_config.model_dump(mode="json"),
        "model_manifest": model.manifest.model_dump(mode="json") if model is not None else None,
        "model_digest": getattr(model, "digest", None),
        "optics_check": optics_report(model.manifest, camera or CameraOptics(pixel_size_um),
                                      allow_mismatch=run_config.inference.allow_optics_mismatch)
        if model is not None else None,  # fmt: skip
        "versions": software_versions(),
        **(extra_attrs or {}),
    }
    volume_every = cfg.volume_every if planes_um is not None else 0
    volume_max_hz = None
    if cfg.volumes == "auto" and volume_every and planes_um is not None and not wait_when_behind:
        # (replay stores every volume)
        from storage.disk_rate import volume_budget

        budget = volume_budget(Path(cfg.out).parent, frame_shape=frame_shape, planes=len(planes_um),
                               frame_rate_hz=1.0 / frame_interval_s, upsample=volume_upsample)  # fmt: skip
        log.info("%s", budget.describe())
        attrs["volume_budget"] = dataclasses.asdict(budget)
        volume_max_hz = budget.max_volumes_hz
        volume_every = volume_every if volume_max_hz > 0 else 0
    return RecordingWriter(
        Path(cfg.out),
        frame_shape=frame_shape,
        pixel_size_um=pixel_size_um,
        planes_um=planes_um,
        volume_every=volume_every,
        volume_max_hz=volume_max_hz,
        frame_interval_s=frame_interval_s,
        attrs=attrs,
        overwrite=cfg.overwrite,
        inputs=inputs,
        wait_when_behind=wait_when_behind,
        volume_upsample=volume_upsample,
    )


def build_publisher(cfg: PublishConfig) -> Publisher:
    """The zmq publisher for viewers, CurveZMQ-secured when ``cfg.curve_secret_key`` is set (wire.curve)."""
    from wire.curve import ServerKeys
    from wire.messages import Publisher

    keys = ServerKeys.load(cfg.curve_secret_key, cfg.curve_clients) if cfg.curve_secret_key is not None else None
    return Publisher(cfg.address, curve=keys)


def build_tracker(cfg: TrackingConfig, voxel_um: tuple[float, float, float], planes_um: np.ndarray,
                  engine_device: str = "cpu") -> VolumeTracker | None:
    """The live tracking stage (detection + online linking + dF/F) on ``cfg.device`` (auto: the engine's),
    or None when disabled."""
    if not cfg.enabled:
        return None
    from deepz.tracking_stage import TrackingStage
    from infer.engine import resolve_device

    device = str(resolve_device(engine_device if cfg.device == "auto" else cfg.device))
    log.info("tracking on %s%s", device, " (the engine's device)" if cfg.device == "auto" else "")
    return TrackingStage(cfg, voxel_um=voxel_um, planes_um=planes_um, device=device)
