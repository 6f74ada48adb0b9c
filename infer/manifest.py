"""The JSON manifest that travels with Deep-Z weights: what the model is, how to feed it, how good it is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infer.model import UNetConfig

FORMAT_VERSION = 2  # 2: manifest_sha256 covers every other field, weights_sha256 is required

Task = Literal["refocus", "superres", "isotropic"]


class Normalisation(BaseModel):
    """normalised = (uint16 - offset_adu) / scale_adu, and back."""

    model_config = ConfigDict(extra="forbid")
    offset_adu: float
    scale_adu: float = Field(gt=0)


class Optics(BaseModel):
    """The microscope the model was trained for."""

    model_config = ConfigDict(extra="forbid")
    numerical_aperture: float = 0.75
    magnification: float = 20.0
    wavelength_um: float = 0.52
    pixel_size_um: float = 0.325


class Architecture(BaseModel):
    """UNetConfig fields."""

    model_config = ConfigDict(extra="forbid")
    base_channels: int
    depth: int
    max_channels: int
    in_channels: int = 2
    out_channels: int = 1
    norm: Literal["batch", "instance", "none"] = "batch"
    residual: bool = True

    def unet_config(self) -> UNetConfig:
        """The generator configuration."""
        return UNetConfig(**self.model_dump())

    @classmethod
    def from_config(cls, config: UNetConfig) -> Architecture:
        """From a UNetConfig."""
        return cls(**config.to_dict())


class Training(BaseModel):
    """Provenance: data digest, steps, the recipe used."""

    model_config = ConfigDict(extra="allow")
    data_digest: str = ""
    steps: int = 0
    recipe: dict[str, Any] = Field(default_factory=dict)


class ModelManifest(BaseModel):
    """Everything needed to use and judge a model; stored as manifest.json beside weights.safetensors."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str
    architecture: Architecture
    normalisation: Normalisation
    optics: Optics = Field(default_factory=Optics)
    axial_range_um: float = Field(gt=0)
    axial_step_um: float = Field(gt=0)
    modality: Literal["widefield", "confocal"] = "widefield"
    task: Task = "refocus"  # Deep-Z refocusing, cross-modality super-resolution, or Self-Net isotropic restoration
    input_optics: Optics | None = None  # superres: the lower-resolution microscope the inputs come from
    details: dict[str, Any] = Field(default_factory=dict)  # task-specific parameters (e.g. a degradation model)
    training: Training = Field(default_factory=Training)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = ""  # set by model_io.save_model; a model without it is refused
    manifest_sha256: str = ""  # manifest_digest() of the other fields as written; set by model_io.write_manifest


def manifest_digest(data: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no whitespace) over every field but manifest_sha256.

    Computed on the JSON as written and read back, so any edit of any field, the weights' digest included,
    changes it.
    """
    body = {key: value for key, value in data.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
