"""Optimised torch engine: folded batch norm, channels-last, half precision; compiled, with CUDA graphs, on the
GPU.

On the GPU the generator is torch.compile'd by default (its kernels cached on disk: compile_cache), and each
pipeline slot replays a CUDA graph of the whole fixed-shape batch (normalise, U-Net, back to uint16) in
float16 while copies overlap compute (`CudaPipeline`). On the CPU it runs oneDNN kernels in channels-last
layout, float32 by default (bfloat16 on request: faster, less accurate), compiled only on request.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from infer.engine import Engine, EngineInputError
from infer.engines.compile_cache import CompileCache, compile_choice, compile_key, device_name, triton_available
from infer.engines.cuda_pipeline import CudaPipeline
from infer.engines.torch_eager import cpu_planes_per_call

if TYPE_CHECKING:
    from infer.model_io import LoadedModel

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "float16", "bfloat16"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def fold_batch_norm(generator: nn.Module) -> nn.Module:
    """A copy of `generator` with each eval-mode BatchNorm2d folded into the Conv2d before it."""
    fused = copy.deepcopy(generator).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return fused


def default_precision(device: torch.device) -> str:
    """float16 on CUDA; float32 on the CPU (bfloat16 is faster there but misses the 1e-2 error budget)."""
    return "float16" if device.type == "cuda" else "float32"


class TorchOptEngine(Engine):
    """Fast torch: half precision + channels-last; on CUDA, CUDA graphs and overlapped pinned copies."""

    name = "torch-opt"

    def __init__(
        self,
        model: LoadedModel,
        frame_shape: tuple[int, int],
        dpm: np.ndarray,
        batch: int = 1,
        device: str | torch.device | None = None,
        *,
        precision: Precision = "auto",
        compile: bool | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        """``compile``: None = by default on CUDA (compile_cache.compile_choice), True / False to force."""
        super().__init__(model, frame_shape, dpm, batch, device)
        self._precision = default_precision(self.device) if precision == "auto" else precision
        if self._precision not in DTYPES:
            raise EngineInputError(f"precision {precision!r} is not one of auto, {', '.join(DTYPES)}.")
        self.dtype = DTYPES[self._precision]
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.compiled, compile_note = compile_choice(self.device.type, compile, triton_available())
        cache = None
        if self.compiled:
            from infer.onnx_export import cache_dir

            key = compile_key(model_digest=model.digest, frame_shape=self.frame_shape, planes=self.planes,
                              batch=self.batch, precision=self._precision, device=device_name(self.device))
            cache = CompileCache(cache_dir() / "compiled", key, model.digest)
            compile_note += f" ({cache.load()})"
        try:
            generator = fold_batch_norm(model.generator).to(self.device, self.dtype)
            self.generator = generator.to(memory_format=torch.channels_last)
            self.forward = (
                torch.compile(self.generator, dynamic=False, fullgraph=True, options=self._compile_options())
                if self.compiled
                else self.generator
            )
            self.dpm_um = torch.from_numpy(self.dpm).to(self.device)
            if self.device.type == "cuda":
                self._build_gpu(cuda_graphs)
            elif self.compiled:  # compile now, not on the first frame
                with torch.inference_mode():
                    self._volumes(torch.zeros((self.batch, *self.frame_shape), dtype=torch.uint16))
        except torch.OutOfMemoryError as exc:
            raise self.out_of_memory(exc) from exc
        if cache is not None:
            cache.save()
        self.setup = (f"{self._precision}, channels-last{', CUDA graphs' if self.graphs else ''}; "
                      f"{compile_note}")

    def _compile_options(self) -> dict[str, bool]:
        """Inductor options: autotuned Triton kernels on GPU (we capture the graphs); frozen oneDNN on CPU."""
        if self.device.type == "cuda":
            return {"max_autotune": True, "triton.cudagraphs": False}
        return {"freezing": True}

    @property
    def precision(self) -> str:
        """Arithmetic precision of the generator."""
        return self._precision

    def _volumes(self, frames: torch.Tensor) -> torch.Tensor:
        """uint16 frames on the device -> uint16 volumes, whole batch in one generator call on the GPU."""
        on_cpu = self.device.type == "cpu"
        planes_per_call = cpu_planes_per_call(self.frame_shape, self.planes) if on_cpu else None
        return self.refocus(
            self.forward, frames, self.dpm_um,
            dtype=self.dtype, channels_last=True, planes_per_call=planes_per_call,
        )

    def _build_gpu(self, cuda_graphs: bool) -> None:
        """Warm up (cuDNN autotuning, compilation) and capture one CUDA graph per pipeline slot."""
        self.pipeline = CudaPipeline(self.batch, self.frame_shape, self.planes, self.device, self._compute)
        with torch.backends.cudnn.flags(enabled=True, benchmark=True), torch.no_grad():
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for slot in self.pipeline.slots:
                    for _ in range(3):
                        slot.dev_out.copy_(self._volumes(slot.dev_in))
            torch.cuda.current_stream(self.device).wait_stream(side)
            if not cuda_graphs:
                return
            pool = None
            for slot in self.pipeline.slots:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                    slot.dev_out.copy_(self._volumes(slot.dev_in))
                pool = graph.pool()
                self.graphs.append(graph)
        torch.cuda.synchronize(self.device)

    def _compute(self, index: int, dev_in: torch.Tensor, dev_out: torch.Tensor) -> None:
        """Enqueue one slot's batch on the current stream: its CUDA graph, or eager kernels without graphs."""
        if self.graphs:
            self.graphs[index].replay()
            return
        with torch.backends.cudnn.flags(enabled=True, benchmark=True), torch.no_grad():
            dev_out.copy_(self._volumes(dev_in))

    def _run(self, frames: np.ndarray) -> np.ndarray:
        if self.pipeline is not None:
            return self.pipeline.run(frames)
        with torch.inference_mode():
            return self._volumes(torch.from_numpy(frames)).numpy()
