"""Typed run configuration: TOML files (shipped ones in deepz/configs/) overridden by command-line flags.

A config is named by its path or, for a shipped one, by its name (``demo`` = deepz/configs/demo.toml). Input
paths inside a config file (models, simulator TOMLs, Micro-Manager .cfg files, keys) resolve relative to that
file; a bare name that is not a file there names a shipped config or model. Outputs (``recording.out``) are
relative to the working directory.
"""

from __future__ import annotations

import tomllib
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file or flag is missing, malformed or inconsistent."""


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def _shipped_models() -> Path:
    """infer/models, located without importing infer's (torch-heavy) modules."""
    spec = find_spec("infer")
    return Path(next(iter(spec.submodule_search_locations))) / "models" if spec else Path("infer/models")


def _is_bare(path: Path) -> bool:
    return not path.is_absolute() and path.parent == Path(".")


def packaged(path: Path, suffix: str) -> Path:
    """``path`` when it exists, else the shipped config of that bare name (with or without ``suffix``)."""
    if path.exists() or not _is_bare(path):
        return path
    for candidate in (PACKAGED_CONFIGS / path.name, PACKAGED_CONFIGS / f"{path.name}{suffix}"):
        if candidate.is_file():
            return candidate
    return path


def config_path(name: str | Path) -> Path:
    """A run config by path or by the name of a shipped one; ConfigError naming the shipped ones otherwise."""
    path = packaged(Path(name).expanduser(), ".toml")
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.toml")))
        raise ConfigError(f"config file {name} does not exist; pass a path or a shipped config: {shipped}")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where frames come from: the simulated microscope or a Micro-Manager hardware config."""

    mm_config: Path | None = Field(None, description="Micro-Manager .cfg of a real rig; None = simulator")
    sim_config: Path | None = Field(
        None, description="Simulator TOML (optics, camera, worm) or a shipped one (sim-10x); size/seed/neurons apply"
    )
    rate_hz: float = Field(100.0, gt=0, le=10_000, description="Frame rate asked of the camera")
    exposure_ms: float | None = Field(None, gt=0, description="Exposure; None = 1000 / rate_hz")
    binning: int | None = Field(None, ge=1, description="Camera binning (one of the camera's); None = as it is")
    roi: tuple[int, int, int, int] | None = Field(
        None, description="Camera ROI X Y WIDTH HEIGHT in (binned) sensor pixels; None = the whole sensor"
    )
    buffer_mb: int | None = Field(None, gt=0, description="Camera circular buffer (MB); None = the core's default")
    size: int = Field(256, ge=32, le=4096, description="Simulated camera frame side in pixels")
    seed: int = Field(0, description="Simulator seed")
    neurons: int = Field(180, ge=1, le=2000, description="Simulated nuclei")

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None and (min(value[:2]) < 0 or min(value[2:]) <= 0):
            raise ValueError(f"roi must be X Y WIDTH HEIGHT with X, Y >= 0 and a positive size, got {value}")
        return value

    @field_validator("mm_config")
    @classmethod
    def _packaged_cfg(cls, value: Path | None) -> Path | None:
        return packaged(value, ".cfg") if value is not None else None

    @field_validator("sim_config")
    @classmethod
    def _packaged_toml(cls, value: Path | None) -> Path | None:
        return packaged(value, ".toml") if value is not None else None


class InferenceConfig(_Strict):
    """Which model turns frames into volumes, on which planes, with which engine."""

    model: Path | None = Field(
        None, description="Model directory or a shipped model's name (superres-na); None = the shipped default"
    )
    engine: str = Field("auto", description="auto | torch | torch-opt | tensorrt | onnxruntime")
    planes: int = Field(16, ge=1, le=256, description="Planes K per virtual volume")
    z_range_um: tuple[float, float] = Field((-10.0, 10.0), description="Refocus range relative to focus")
    dpm: Literal["uniform", "tilt", "curved"] = "uniform"
    tilt_um_per_mm: tuple[float, float] = Field((0.0, 0.0), description="dz/dy, dz/dx for --dpm tilt")
    curvature_um: float = Field(0.0, description="Sag at the field corner for --dpm curved")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    allow_optics_mismatch: bool = Field(
        False, description="Run a model trained for other optics than the camera's (warned, recorded)"
    )

    @field_validator("z_range_um")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] >= value[1]:
            raise ValueError(f"z_range_um must be (low, high) with low < high, got {value}")
        return value

    @field_validator("model")
    @classmethod
    def _shipped(cls, value: Path | None) -> Path | None:
        if value is None or value.exists() or not _is_bare(value):
            return value
        shipped = _shipped_models() / value.name
        return shipped if shipped.is_dir() else value


class RecordingConfig(_Strict):
    """What is written to the Zarr store; raw frames are always recorded when there is a store."""

    out: Path | None = Field(None, description="Recording path (.zarr); None = do not record")
    volumes: str = Field(
        "every", description="every | none | N (every Nth volume) | auto (as many as the disk takes, live)"
    )
    overwrite: bool = False

    @field_validator("volumes")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value in ("every", "none", "auto") or (value.isdigit() and int(value) >= 1):
            return value
        raise ValueError(f"volumes must be 'every', 'none', 'auto' or a positive integer N, got {value!r}")

    @property
    def volume_every(self) -> int:
        """Every Nth computed volume is stored; 0 stores none ("auto" offers every one to a rate limit)."""
        return {"every": 1, "auto": 1, "none": 0}[self.volumes] if not self.volumes.isdigit() else int(self.volumes)


class TrackingConfig(_Strict):
    """Neuron detection and online linking on each virtual volume."""

    enabled: bool = True
    nucleus_um: float = Field(1.5, gt=0, description="Detection scale (tuned on the simulator's 2-3 um nuclei)")
    trace_window_s: float = Field(30.0, gt=0, description="dF/F history sent to viewers")
    device: str = Field("auto", description="auto (the inference engine's device) | cpu | cuda | cuda:N")


class CalibrationConfig(_Strict):
    """The focal scan a live run starts with (the readout's reference neurons), and its re-scans."""

    enabled: bool | None = Field(None, description="None = on for the simulated microscope, off for a rig")
    z_range_um: tuple[float, float] | None = Field(
        None, description="Scan offsets LOW HIGH (um) relative to focus; None = the model's axial range"
    )
    step_um: float | None = Field(None, gt=0, description="Scan step (um); None = the model's axial step")
    # measured (deepz evaluate-activity, 40 s at 100 Hz, seeds 11 / 13 / 17, 29 Nov): r >= 0.9 for
    # 0.82 / 0.86 / 0.74 of the neurons with re-scans every 5 s, 0.76 / 0.87 / 0.74 every 3 s and
    # 0.81 / 0.82 / 0.74 every 10 s; without re-scans the readout loses the worm (it moves about 1 um/s)
    interval_s: float = Field(5.0, ge=0, description="Re-scan every this many seconds; 0 = never")
    drift_um: float | None = Field(None, gt=0, description="Re-scan when the readout's motion exceeds this")
    settle_ms: float = Field(0.0, ge=0, description="Wait after each focus step (ms); > 0 steps the stage in software")
    worker: Literal["auto", "process", "thread"] = Field(
        "auto", description="Where live calibrations run beside the readout: a process of their own, a thread "
        "(they share the readout's interpreter), or auto: a process on a GPU, a thread on a CPU"
    )

    @field_validator("z_range_um")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError(f"z_range_um must be (low, high) with low < high, got {value}")
        return value


class PublishConfig(_Strict):
    """zmq PUB endpoint for viewers; loopback unless asked otherwise."""

    address: str = "tcp://127.0.0.1:5557"
    max_hz: float = Field(20.0, gt=0, description="Upper bound on messages per second")
    curve_secret_key: Path | None = Field(
        None, description="CurveZMQ: the server's .key_secret from `deepz keys` (encrypts, admits known clients)"
    )
    curve_clients: Path | None = Field(
        None, description="CurveZMQ: folder of admitted clients' public .key files; None = curve_secret_key's folder"
    )


class RunConfig(_Strict):
    """Everything one `deepz live` or `deepz replay` run needs."""

    source: SourceConfig = SourceConfig()
    inference: InferenceConfig = InferenceConfig()
    recording: RecordingConfig = RecordingConfig()
    tracking: TrackingConfig = TrackingConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    publish: PublishConfig = PublishConfig()
    duration_s: float | None = Field(None, gt=0, description="Stop after this long; None = until Ctrl-C")
    view: bool = True
    compute: Literal["auto", "process", "thread"] = Field(
        "auto", description="Where inference, tracking and the readout run: process (a separate one fed by a "
        "shared-memory ring, so they never take the camera's time) or thread; auto = process live, thread in replay"
    )

    @model_validator(mode="after")
    def _source_exists(self) -> RunConfig:
        cfg = self.source.mm_config
        if cfg is not None and not cfg.is_file():
            raise ValueError(f"Micro-Manager config {cfg} does not exist; pass the path of your rig's .cfg file")
        sim = self.source.sim_config
        if sim is not None and not sim.is_file():
            raise ValueError(f"simulator config {sim} does not exist; pass a TOML path or a shipped one (sim-10x)")
        return self

    @model_validator(mode="after")
    def _calibration_reads_neurons(self) -> RunConfig:
        if self.calibration.enabled and not self.tracking.enabled:
            raise ValueError(
                "calibration.enabled (--calibrate) starts the readout of every neuron, which "
                "tracking.enabled = false (--no-track) turns off; keep one of them"
            )
        return self


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


_INPUT_PATHS = (
    ("source", "mm_config"), ("source", "sim_config"), ("inference", "model"),
    ("publish", "curve_secret_key"), ("publish", "curve_clients"),
)


def _relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config's input paths resolved against its folder; a bare name not found there is left as a name."""
    for section, key in _INPUT_PATHS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if not isinstance(value, str):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and ((folder / path).exists() or not _is_bare(path)):
            data[section] = {**data[section], key: str(folder / path)}
    return data


def load_config(
    path: Path | None = None, overrides: dict[str, Any] | None = None, *, base: dict[str, Any] | None = None
) -> RunConfig:
    """Read a TOML run config (a path or a shipped config's name) over `base` (or the defaults) and apply flag
    overrides (None values are ignored); paths inside the file are relative to it."""
    data: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            data = _relative_to(tomllib.loads(path.read_text()), path.resolve().parent)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return RunConfig.model_validate(_merge(_merge(base or {}, data), overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        where = f"in {path}" if path else "in the command-line flags"
        raise ConfigError(f"invalid run configuration {where}: {problems}") from None
