"""A super-resolution model as the pipeline's engine stage: one plane at dz = 0, frames upsampled first.

Raw frames stay as acquired (they are what the recording keeps); the bicubic upsampling onto the model's
finer target grid is a frame transform in front of an ordinary engine built for that grid.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from infer.engine import Engine, EngineInputError, make_engine
from infer.manifest import ModelManifest
from infer.model_io import LoadedModel
from infer.superres.upsample import upsample_frames

log = logging.getLogger(__name__)
PIXEL_TOLERANCE = 0.02  # relative mismatch of source and model input pixel sizes still accepted


def volume_upsample(manifest: ModelManifest | None) -> int:
    """How many times finer than the frames the volumes of this model are (1 unless a superres model)."""
    if manifest is None or manifest.task != "superres":
        return 1
    return int(manifest.details.get("upsample", 1))


def check_superres_fits(manifest: ModelManifest, planes_um: np.ndarray, pixel_size_um: float) -> int:
    """The upsampling factor for these frames, after checking the planes and the source's pixel size."""
    planes = np.asarray(planes_um, np.float64)
    if planes.shape != (1,) or planes[0] != 0:
        raise EngineInputError(
            f"model {manifest.name} is a super-resolution model: it makes one plane at the focus, but "
            f"{len(planes)} plane(s) {np.round(planes, 3).tolist()} um were asked for. Run it with one plane "
            "at dz = 0: --planes 1 and a z range symmetric about 0 (e.g. --z-range -1 1), as in the shipped "
            "config superres-live."
        )
    factor = volume_upsample(manifest)
    expected = manifest.input_optics.pixel_size_um if manifest.input_optics else manifest.optics.pixel_size_um
    if pixel_size_um > 0 and abs(pixel_size_um - expected) > PIXEL_TOLERANCE * expected:
        io = manifest.input_optics or manifest.optics
        raise EngineInputError(
            f"model {manifest.name} takes frames of its {io.magnification:g}x/{io.numerical_aperture:g} NA input "
            f"microscope sampled at {expected:g} um per pixel, but the source gives {pixel_size_um:g} um: use "
            "that microscope and camera (simulated: source.sim_config = 'sim-10x', as in the shipped config "
            "superres-live), or a model trained for this sampling."
        )
    if pixel_size_um <= 0:
        log.warning("the source does not say its pixel size; assuming the model's input sampling %g um", expected)
    return factor


class UpsamplingEngine:
    """Raw frames (B, h, w) uint16 -> bicubic x`factor` -> a one-plane engine -> (B, 1, factor*h, factor*w)."""

    def __init__(self, engine: Engine, factor: int) -> None:
        self.engine, self.factor = engine, int(factor)
        self.name = f"{engine.name}+bicubic-x{self.factor}"
        self.device = engine.device
        self.planes = engine.planes
        self.frame_shape = tuple(n // self.factor for n in engine.frame_shape)

    def run(self, frames: np.ndarray) -> np.ndarray:
        """Super-resolve raw frames into one-plane volumes on the finer grid."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint16:
            raise EngineInputError("frames must be raw uint16 camera frames (numpy) for the upsampling stage")
        if frames.shape[-2:] != self.frame_shape:
            h, w = self.frame_shape
            raise EngineInputError(f"frames have shape {frames.shape} but this stage takes (B, {h}, {w}) frames; "
                                   "rebuild it for the camera ROI.")
        return self.engine.run(upsample_frames(frames, self.factor))

    def describe(self) -> dict[str, Any]:
        """The inner engine's summary plus the upsampling in front of it."""
        return self.engine.describe() | {"engine": self.name, "input_frame_shape": list(self.frame_shape),
                                         "upsample": self.factor}


def superres_engine_stage(name: str, model: LoadedModel, frame_shape: tuple[int, int], pixel_size_um: float,
                          planes_um: np.ndarray, device: Any = None) -> Engine | UpsamplingEngine:
    """Engine `name` for a super-resolution model on frames from the source, upsampled first when needed."""
    factor = check_superres_fits(model.manifest, planes_um, pixel_size_um)
    fine = (frame_shape[0] * factor, frame_shape[1] * factor)
    engine = make_engine(name, model, fine, np.zeros((1, *fine), np.float32), batch=1, device=device)
    return UpsamplingEngine(engine, factor) if factor > 1 else engine
