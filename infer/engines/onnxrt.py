"""onnxruntime engine (CPU): the ONNX export run by onnxruntime's optimised CPU kernels."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np
import torch

from infer.engine import Engine, EngineError
from infer.engines.torch_eager import cpu_planes_per_call
from infer.onnx_export import INPUT_NAME, OUTPUT_NAME, cached_onnx

if TYPE_CHECKING:
    from infer.model_io import LoadedModel


class OnnxRuntimeEngine(Engine):
    """The generator exported to ONNX, run by onnxruntime on the CPU with all graph optimisations."""

    name = "onnxruntime"

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        """Needs the onnxruntime package, and runs on the CPU only."""
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            return "onnxruntime/onnx are not installed; pip install 'deepz-live[onnx]'."
        if device.type != "cpu":
            return "this engine runs on the CPU only; on a GPU use tensorrt or torch-opt."
        return None

    def __init__(
        self,
        model: LoadedModel,
        frame_shape: tuple[int, int],
        dpm: np.ndarray,
        batch: int = 1,
        device: str | torch.device | None = "cpu",
    ) -> None:
        import onnxruntime as ort

        super().__init__(model, frame_shape, dpm, batch, device)
        self.onnx_path = cached_onnx(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise EngineError(
                f"onnxruntime could not load {self.onnx_path} ({exc}); delete that file to re-export the "
                "model."
            ) from exc
        self.dpm_um = torch.from_numpy(self.dpm)
        self.planes_per_call = cpu_planes_per_call(self.frame_shape, self.planes)

    def _generate(self, x: torch.Tensor) -> torch.Tensor:
        """One onnxruntime call on a (n, 2, H, W) float32 chunk."""
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])

    def _run(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            volumes = self.refocus(
                self._generate, torch.from_numpy(frames), self.dpm_um, planes_per_call=self.planes_per_call
            )
            return volumes.numpy()
