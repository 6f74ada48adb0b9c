"""TensorRT engine: ONNX export -> fp16 engine with a K planes x B frames profile, cached on disk.

The cache key covers the model digest, GPU name, TensorRT version, frame shape, planes, batch and
precision; when any of them differs the key differs and the engine is rebuilt (and a cached engine that
fails to deserialise is rebuilt too). Pre/post-processing runs in torch on the same CUDA stream.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from infer.cache_seal import seal, seal_problem
from infer.engine import Engine, EngineError
from infer.engines.cuda_pipeline import CudaPipeline
from infer.onnx_export import INPUT_NAME, OUTPUT_NAME, cache_dir, cached_onnx

if TYPE_CHECKING:
    import tensorrt

    from infer.model_io import LoadedModel

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 8 << 30


def engine_cache_key(
    model_digest: str,
    gpu_name: str,
    trt_version: str,
    frame_shape: tuple[int, int],
    planes: int,
    batch: int,
    precision: str = "float16",
) -> str:
    """Hex key naming a built engine; it changes when any input that makes the engine invalid changes."""
    fields = {
        "model_digest": model_digest,
        "gpu_name": gpu_name,
        "tensorrt_version": trt_version,
        "frame_shape": [int(frame_shape[0]), int(frame_shape[1])],
        "planes": int(planes),
        "batch": int(batch),
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def build_serialized_engine(
    onnx_path: Path, frame_shape: tuple[int, int], planes: int, batch: int, precision: str = "float16"
) -> bytes:
    """Parse the ONNX export and build a serialized engine for K..K*B planes of frame_shape."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f"TensorRT could not parse {onnx_path} ({errors}); delete that file to re-export the model."
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "float16":
        config.set_flag(trt.BuilderFlag.FP16)
    h, w = frame_shape
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (planes, 2, h, w), (planes * batch, 2, h, w), (planes * batch, 2, h, w))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(
            f"TensorRT failed to build an engine for {batch} frame(s) x {planes} planes of {h}x{w} (see the "
            "TensorRT log above): try a smaller batch or fewer planes, or use engine torch-opt."
        )
    return bytes(serialized)


class TensorRTEngine(Engine):
    """fp16 TensorRT engine for the fixed K x B batch; pinned, double-buffered copies around it."""

    name = "tensorrt"

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        """Needs an NVIDIA GPU and the tensorrt package."""
        if device.type != "cuda":
            return "TensorRT needs an NVIDIA GPU (device 'cuda'); on the CPU use torch-opt or onnxruntime."
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt package is not installed; pip install 'deepz-live[tensorrt]'."
        return None

    def __init__(
        self,
        model: LoadedModel,
        frame_shape: tuple[int, int],
        dpm: np.ndarray,
        batch: int = 1,
        device: str | torch.device | None = "cuda",
        *,
        precision: str = "float16",
    ) -> None:
        import tensorrt as trt

        super().__init__(model, frame_shape, dpm, batch, device)
        self._precision = precision
        torch.cuda.set_device(self.device)
        self.key_fields = {
            "model_digest": model.digest,
            "gpu_name": torch.cuda.get_device_name(self.device),
            "trt_version": trt.__version__,
            "frame_shape": self.frame_shape,
            "planes": self.planes,
            "batch": self.batch,
            "precision": precision,
        }
        key = engine_cache_key(**self.key_fields)
        self.engine_path = cache_dir() / "tensorrt" / f"{model.manifest.name}-{key}.engine"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._load_or_build()
        self.context = self.engine.create_execution_context()
        h, w = self.frame_shape
        self.context.set_input_shape(INPUT_NAME, (self.planes * self.batch, 2, h, w))
        self.dpm_um = torch.from_numpy(self.dpm).to(self.device)
        try:
            self.pipeline = CudaPipeline(
                self.batch, self.frame_shape, self.planes, self.device, self._compute
            )
            self.pipeline.run(np.zeros((self.batch, h, w), np.uint16))  # allocate and warm up once
        except torch.OutOfMemoryError as exc:
            raise self.out_of_memory(exc) from exc

    @property
    def precision(self) -> str:
        """Arithmetic precision the engine was built for."""
        return self._precision

    def _load_or_build(self) -> tensorrt.ICudaEngine:
        """Deserialize the cached engine, or build (and cache) it when missing, unreadable or its seal
        (infer.cache_seal: the model digest and the file's sha256) does not hold."""
        problem = seal_problem(self.engine_path, self.model.digest)
        if problem is None:
            engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is not None:
                log.info("TensorRT engine from cache %s", self.engine_path)
                return engine
            log.warning("cached TensorRT engine %s could not be deserialized; rebuilding", self.engine_path)
        elif self.engine_path.exists():
            log.warning("cached TensorRT engine %s %s; rebuilding", self.engine_path, problem)
        onnx_path = cached_onnx(self.model)
        log.info("building TensorRT %s engine for %s (takes minutes once; cached at %s)",
                 self._precision, self.key_fields, self.engine_path)
        start = time.perf_counter()
        data = build_serialized_engine(onnx_path, self.frame_shape, self.planes, self.batch, self._precision)
        log.info("TensorRT engine built in %.0f s", time.perf_counter() - start)
        self.engine_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.engine_path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.engine_path)
        seal(self.engine_path, self.model.digest, self.key_fields)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineError(f"TensorRT could not load the engine it just built ({self.engine_path}).")
        return engine

    def _generate(self, x: torch.Tensor) -> torch.Tensor:
        """Enqueue the TensorRT engine on the current stream for a (K*B, 2, H, W) float32 input."""
        x = x.contiguous()
        y = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=self.device)
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, y.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log above).")
        return y

    def _compute(self, index: int, dev_in: torch.Tensor, dev_out: torch.Tensor) -> None:
        """One slot: normalise, TensorRT, back to uint16, all on the compute stream."""
        with torch.no_grad():
            dev_out.copy_(self.refocus(self._generate, dev_in, self.dpm_um))

    def _run(self, frames: np.ndarray) -> np.ndarray:
        return self.pipeline.run(frames)
