"""Configuration of the simulated microscope: optics, camera, worm sample, seed."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from acquire.errors import SimConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpticsConfig(_Model):
    """Wide-field objective and sample optics (defaults: 20x/0.75 NA air, water-like sample)."""

    na: float = Field(0.75, gt=0, lt=1.5, description="Numerical aperture of the objective.")
    magnification: float = Field(20.0, gt=0)
    emission_um: float = Field(0.52, gt=0.2, lt=2.0, description="Emission wavelength.")
    excitation_um: float = Field(0.488, gt=0.2, lt=2.0, description="Excitation wavelength (confocal).")
    pixel_size_um: float = Field(0.325, gt=0, description="Camera pixel size in the sample plane.")
    immersion_index: float = Field(1.0, ge=1.0, description="Immersion medium refractive index (air).")
    sample_index: float = Field(1.33, ge=1.0, description="Sample refractive index (mismatch -> asymmetry).")
    coverslip_index: float = Field(1.515, ge=1.0)
    coverslip_um: float = Field(170.0, gt=0)
    working_distance_um: float = Field(1000.0, gt=0)
    depth_um: float = Field(10.0, ge=0, description="Depth of the worm midline below the coverslip.")
    psf_model: str = Field("vectorial", pattern="^(vectorial|scalar|gaussian)$")
    stamp_range_um: float = Field(30.0, gt=0, description="Largest |defocus| with its own PSF plane.")
    stamp_step_um: float = Field(0.1, gt=0, description="Axial step of the precomputed defocus stamps.")

    @model_validator(mode="after")
    def _check_na(self) -> OpticsConfig:
        if self.na >= self.immersion_index:
            raise ValueError(
                f"NA {self.na} must be below the immersion index {self.immersion_index}; "
                "use an immersion objective (immersion_index 1.33 or 1.515) for higher NA."
            )
        return self


class CameraConfig(_Model):
    """sCMOS-like camera: electrons -> ADU with offset, gain, read noise, 16-bit clip."""

    shape: tuple[int, int] = (512, 512)
    exposure_ms: float = Field(10.0, gt=0, description="Reference exposure for brightness/background.")
    gain_adu_per_e: float = Field(2.0, gt=0)
    offset_adu: float = Field(100.0, ge=0)
    read_noise_e: float = Field(1.6, ge=0)
    background_e: float = Field(20.0, ge=0, description="Background photo-electrons per pixel per exposure.")
    exact_poisson_below_e: float = Field(
        10.0,
        ge=0,
        description="Pixels expecting fewer electrons get exact Poisson noise, others its normal limit.",
    )
    min_frame_interval_ms: float = Field(
        0.0, ge=0, description="Readout-limited shortest frame interval; 0 = scaled from 2048x2048 at 100 Hz."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> CameraConfig:
        if min(self.shape) < 16:
            raise ValueError(f"camera shape {self.shape} is too small; use at least 16x16 pixels.")
        return self

    @property
    def readout_interval_ms(self) -> float:
        """Shortest frame interval the sensor allows (rolling readout of all rows)."""
        return self.min_frame_interval_ms or 10.0 * self.shape[0] / 2048


class ActivityConfig(_Model):
    """Calcium-like activity: Poisson events with fast rise and slow exponential decay."""

    event_rate_hz: float = Field(0.15, ge=0)
    rise_s: float = Field(0.08, gt=0)
    decay_s: float = Field(1.5, gt=0)
    amplitude: float = Field(1.0, ge=0, description="Mean peak dF/F of one event.")


class MotionConfig(_Model):
    """Slow whole-body motion: translation, bending and axial drift."""

    translation_um: float = Field(5.0, ge=0)
    bend_um: float = Field(4.0, ge=0)
    z_drift_um: float = Field(1.0, ge=0)
    period_s: float = Field(30.0, gt=0)


class WormConfig(_Model):
    """A C. elegans head: nuclei in a curved, tapering body."""

    n_neurons: int = Field(180, ge=1, le=2000)
    nucleus_diameter_um: tuple[float, float] = (2.0, 3.0)
    size_classes: int = Field(3, ge=1, le=8)
    body_length_um: float = Field(120.0, gt=0)
    body_half_width_um: float = Field(14.0, gt=0)
    body_half_depth_um: float = Field(8.0, gt=0)
    curvature_um: float = Field(10.0, ge=0, description="Sideways sag of the centreline.")
    brightness_e: float = Field(20000.0, gt=0, description="Mean photo-electrons of a baseline nucleus.")
    brightness_spread: float = Field(0.3, ge=0, description="Log-normal sigma of nucleus brightness.")
    bleach_half_life_s: float = Field(
        0.0, ge=0, description="Photobleaching half-life of every nucleus' brightness (s, under continuous "
        "illumination from t = 0); 0 = none. The activity (dF/F) is not bleached."
    )
    activity: ActivityConfig = ActivityConfig()
    motion: MotionConfig = MotionConfig()


class SimConfig(_Model):
    """Everything the simulated microscope needs; deterministic for a given seed."""

    optics: OpticsConfig = OpticsConfig()
    camera: CameraConfig = CameraConfig()
    worm: WormConfig = WormConfig()
    seed: int = 0

    @classmethod
    def from_toml(cls, path: str | Path) -> SimConfig:
        """Read a simulator config from a TOML file (the [sim] table or the whole file)."""
        path = Path(path)
        if not path.is_file():
            raise SimConfigError(
                f"Simulator config {path} does not exist. Pass an existing TOML file "
                "(see deepz/configs/sim.toml for the defaults) or leave the option out to use the defaults."
            )
        try:
            data = tomllib.loads(path.read_text())
            return cls.model_validate(data.get("sim", data))
        except tomllib.TOMLDecodeError as exc:
            raise SimConfigError(
                f"Simulator config {path} is not valid TOML: {exc}. Fix the syntax."
            ) from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
            )
            raise SimConfigError(
                f"Simulator config {path} is malformed ({problems}). Fix those fields; deepz/configs/sim.toml "
                "lists "
                "every field with its default."
            ) from exc
