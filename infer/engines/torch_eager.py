"""The reference engine: the model's own float32 torch modules, eager, one frame's planes per call."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

from infer.engine import Engine

if TYPE_CHECKING:
    from infer.model_io import LoadedModel

CPU_PIXELS_PER_CALL = 1 << 22  # about 4 Mpixel of planes per generator call bounds CPU memory at 1024x1024


def cpu_planes_per_call(frame_shape: tuple[int, int], planes: int) -> int:
    """Planes per generator call on the CPU: bounded activation memory, at least one plane."""
    return max(1, min(planes, CPU_PIXELS_PER_CALL // (frame_shape[0] * frame_shape[1])))


class TorchEngine(Engine):
    """Eager float32 torch on CPU or GPU: the reference every other engine is checked against."""

    name = "torch"

    def __init__(
        self,
        model: LoadedModel,
        frame_shape: tuple[int, int],
        dpm: np.ndarray,
        batch: int = 1,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(model, frame_shape, dpm, batch, device)
        generator = model.generator if self.device.type == "cpu" else copy.deepcopy(model.generator)
        self.generator = generator.to(self.device).eval()
        self.dpm_um = torch.from_numpy(self.dpm).to(self.device)
        self.planes_per_call = (
            cpu_planes_per_call(self.frame_shape, self.planes) if self.device.type == "cpu" else self.planes
        )

    def _run(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            frames_dev = torch.from_numpy(frames).to(self.device)
            volumes = self.refocus(
                self.generator, frames_dev, self.dpm_um, planes_per_call=self.planes_per_call
            )
            return volumes.cpu().numpy()
