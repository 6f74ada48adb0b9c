"""Refuse to run a model on a microscope it was not trained for, unless the user says so explicitly.

A Deep-Z network learns the defocus response of one objective at one sampling: a camera with another pixel
size, numerical aperture or emission wavelength gives volumes that look plausible and are wrong. The model's
manifest states its optics (a super-resolution model: the optics of its inputs); the camera's pixel size is
always known, its NA and wavelength where the simulator's config says (a real rig's .cfg does not).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from deepz.config import ConfigError

if TYPE_CHECKING:
    from infer.manifest import ModelManifest, Optics

log = logging.getLogger(__name__)

TOLERANCE = 0.05  # relative difference beyond which optics count as different


class OpticsMismatchError(ConfigError):
    """The camera's optics differ from those the model was trained for, and no override was given."""


@dataclass(frozen=True)
class CameraOptics:
    """What is known of the microscope that makes the frames (None: not known)."""

    pixel_size_um: float
    numerical_aperture: float | None = None
    wavelength_um: float | None = None


def _describe(optics: Optics | CameraOptics) -> str:
    parts = [f"{optics.pixel_size_um:g} um pixels"]
    if optics.numerical_aperture is not None:
        parts.append(f"NA {optics.numerical_aperture:g}")
    if optics.wavelength_um is not None:
        parts.append(f"{optics.wavelength_um * 1000:g} nm")
    return ", ".join(parts)


def optics_mismatches(
    manifest: ModelManifest, camera: CameraOptics, tolerance: float = TOLERANCE
) -> list[str]:
    """Each known camera figure that differs from the model's by more than ``tolerance`` (relative)."""
    trained = manifest.input_optics or manifest.optics
    pairs = (
        ("pixel size (um)", camera.pixel_size_um, trained.pixel_size_um),
        ("NA", camera.numerical_aperture, trained.numerical_aperture),
        ("wavelength (um)", camera.wavelength_um, trained.wavelength_um),
    )
    return [
        f"{name} {have:g} vs {want:g}"
        for name, have, want in pairs
        if have is not None and abs(have - want) > tolerance * want
    ]


def optics_report(manifest: ModelManifest, camera: CameraOptics, *, allow_mismatch: bool) -> dict[str, Any]:
    """What a recording stores about the check: both optics, the differences and whether they were allowed."""
    differences = optics_mismatches(manifest, camera)
    return {"camera": asdict(camera), "model": (manifest.input_optics or manifest.optics).model_dump(),
            "mismatches": differences, "tolerance": TOLERANCE,
            "allowed_mismatch": bool(differences) and allow_mismatch}  # fmt: skip


def check_optics(manifest: ModelManifest, camera: CameraOptics, *, allow_mismatch: bool) -> None:
    """Raise OpticsMismatchError when the optics differ and ``allow_mismatch`` is off; else log a warning."""
    trained = manifest.input_optics or manifest.optics
    differences = optics_mismatches(manifest, camera)
    if not differences:
        return
    text = (
        f"model {manifest.name} was trained for {_describe(trained)} but the camera gives {_describe(camera)}"
        f" ({'; '.join(differences)}, beyond {TOLERANCE:.0%})"
    )
    if not allow_mismatch:
        raise OpticsMismatchError(
            f"{text}: its volumes would be wrong. Use a model trained for these optics, or pass "
            "--allow-optics-mismatch ([inference] allow_optics_mismatch = true) to run it anyway."
        )
    log.warning("%s; running anyway (--allow-optics-mismatch), recorded in the recording's attributes", text)
