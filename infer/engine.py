"""Inference engine interface: one uint16 frame batch + K DPMs -> one uint16 volume per frame.

Every backend (torch eager reference, optimised torch, onnxruntime, TensorRT) implements `Engine`;
`make_engine` builds one by name, or picks the fastest available for ``"auto"`` and logs why.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from infer.normalise import from_normalised, network_input, to_normalised

if TYPE_CHECKING:
    from infer.engines.cuda_pipeline import CudaPipeline
    from infer.model_io import LoadedModel

log = logging.getLogger(__name__)

ENGINE_NAMES = ("torch", "torch-opt", "onnxruntime", "tensorrt")


class EngineError(RuntimeError):
    """An engine could not be built or could not run."""


class EngineUnavailable(EngineError):
    """The requested engine cannot run here (missing package or device)."""


class EngineInputError(EngineError, ValueError):
    """Frames or DPMs do not match what the engine was built for."""


class EngineOutOfMemory(EngineError):
    """The device ran out of memory for this batch of frames and planes."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return the torch device to use: CUDA when present and none was asked for."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable(
            f"device {str(device)!r} was requested but torch sees no CUDA GPU (torch {torch.__version__}); "
            "use device 'cpu' or install a CUDA build of torch on a machine with an NVIDIA GPU."
        )
    if dev.type not in ("cpu", "cuda"):
        raise EngineUnavailable(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'.")
    return dev


class Engine(ABC):
    """Frames (B, H, W) uint16 + the engine's K DPMs -> volumes (B, K, H, W) uint16, processed on `device`."""

    name: str = "engine"
    pipeline: CudaPipeline | None = None
    setup: str = ""
    """How this engine was set up (precision, compilation and its cache ...), for the startup line."""

    def __init__(
        self,
        model: LoadedModel,
        frame_shape: tuple[int, int],
        dpm: np.ndarray,
        batch: int = 1,
        device: str | torch.device | None = None,
    ) -> None:
        self.model = model
        self.device = resolve_device(device)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.batch = int(batch)
        if self.batch < 1:
            raise EngineInputError(f"batch must be at least 1 frame, got {batch}.")
        self.dpm = self._check_dpm(dpm)
        self.planes = self.dpm.shape[0]
        self.norm = model.manifest.normalisation
        self.axial_range_um = float(model.manifest.axial_range_um)

    def _check_dpm(self, dpm: np.ndarray) -> np.ndarray:
        """Validate shape, multiple-of-2**depth frame size and the trained axial range of the DPMs."""
        from infer.dpm import validate_dpm

        dpm = np.asarray(dpm, dtype=np.float32)
        if dpm.ndim == 2:
            dpm = dpm[None]
        h, w = self.frame_shape
        if dpm.ndim != 3 or dpm.shape[1:] != (h, w) or dpm.shape[0] < 1:
            raise EngineInputError(
                f"DPM stack has shape {dpm.shape} but the engine is built for frames of {h}x{w}: "
                f"pass a (K, {h}, {w}) float32 DPM in um (infer.dpm.uniform_dpm(planes_um, ({h}, {w})))."
            )
        multiple = 2 ** int(self.model.manifest.architecture.depth)
        if h % multiple or w % multiple:
            raise EngineInputError(
                f"frame size {h}x{w} is not a multiple of {multiple} (2**depth of this U-Net): crop or pad "
                f"the camera ROI to e.g. {h // multiple * multiple}x{w // multiple * multiple}."
            )
        try:
            validate_dpm(dpm, float(self.model.manifest.axial_range_um))
        except ValueError as exc:
            raise EngineInputError(
                f"{exc} Choose planes inside the model's trained axial range, or use a model trained "
                "for a larger range."
            ) from exc
        return np.ascontiguousarray(dpm)

    def check_frames(self, frames: np.ndarray) -> np.ndarray:
        """Return frames as a contiguous (b, H, W) uint16 array, b <= batch, or raise EngineInputError."""
        if not isinstance(frames, np.ndarray):
            raise EngineInputError(f"frames must be a numpy array, got {type(frames).__name__}.")
        if frames.dtype != np.uint16:
            raise EngineInputError(
                f"frames have dtype {frames.dtype} but engines take raw uint16 camera frames: pass the "
                "camera's uint16 data (do not normalise it first)."
            )
        if frames.ndim == 2:
            frames = frames[None]
        h, w = self.frame_shape
        if frames.ndim != 3 or frames.shape[1:] != (h, w):
            raise EngineInputError(
                f"frames have shape {frames.shape} but this engine was built for (B, {h}, {w}): build an "
                f"engine for frame_shape={tuple(frames.shape[-2:])} (or crop the camera ROI to {h}x{w})."
            )
        if not 1 <= frames.shape[0] <= self.batch:
            raise EngineInputError(
                f"got {frames.shape[0]} frames but the engine was built for batches of 1..{self.batch}: "
                f"split the frames or build the engine with batch={frames.shape[0]}."
            )
        return np.ascontiguousarray(frames)

    def run(self, frames: np.ndarray) -> np.ndarray:
        """Refocus uint16 frames (b, H, W), b <= batch, into uint16 volumes (b, K, H, W)."""
        frames = self.check_frames(frames)
        try:
            return self._run(frames)
        except torch.OutOfMemoryError as exc:
            raise self.out_of_memory(exc) from exc

    def run_with_device(self, frames: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Volumes on the host (to store, publish) and the same on the engine's device (to track there),
        computed once; on a GPU pipeline the device copy never goes through the host."""
        frames = self.check_frames(frames)
        try:
            if self.pipeline is not None:
                index = self.pipeline.submit(frames)
                on_device = self.pipeline.device_copy(index)
                return self.pipeline.collect(index), on_device
            volumes = self._run(frames)
            return volumes, torch.from_numpy(volumes).to(self.device)
        except torch.OutOfMemoryError as exc:
            raise self.out_of_memory(exc) from exc

    def run_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Refocus a stream of frame batches in order; on a GPU pipeline, copies overlap compute."""
        if self.pipeline is None:
            for frames in batches:
                yield self.run(frames)
            return
        try:
            yield from self.pipeline.run_many(self.check_frames(f) for f in batches)
        except torch.OutOfMemoryError as exc:
            raise self.out_of_memory(exc) from exc

    def out_of_memory(self, exc: BaseException) -> EngineOutOfMemory:
        """The error to raise when the device runs out of memory, naming the fixes."""
        h, w = self.frame_shape
        return EngineOutOfMemory(
            f"{self.name} on {self.device} ran out of memory for {self.batch} frame(s) x {self.planes} "
            f"planes of {h}x{w} ({exc}): use a smaller batch, fewer planes, or a leaner engine "
            "(tensorrt, or torch-opt in half precision)."
        )

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary of what this engine runs."""
        return {
            "engine": self.name,
            "device": str(self.device),
            "frame_shape": list(self.frame_shape),
            "planes": self.planes,
            "batch": self.batch,
            "model_digest": self.model.digest,
            "precision": self.precision,
        }

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        """Why this engine cannot run on `device` here, or None when it can."""
        return None

    @property
    def precision(self) -> str:
        """Arithmetic precision of the generator in this engine."""
        return "float32"

    def refocus(
        self,
        generator: Callable[[torch.Tensor], torch.Tensor],
        frames: torch.Tensor,
        dpm_um: torch.Tensor,
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        planes_per_call: int | None = None,
    ) -> torch.Tensor:
        """uint16 frames (b, H, W) on the device -> uint16 volumes (b, K, H, W): normalise, run, scale back.

        With `planes_per_call`, the generator sees at most that many planes of one frame at a time, so the
        result does not depend on how many frames are batched (live and replay agree bit for bit).
        """
        b, h, w = frames.shape
        x = network_input(to_normalised(frames, self.norm), dpm_um, self.axial_range_um).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        chunks = [x]
        if planes_per_call:
            chunks = [c for frame in x.split(self.planes) for c in frame.split(planes_per_call)]
        outputs = [generator(chunk) for chunk in chunks]
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return from_normalised(y[:, 0], self.norm).reshape(b, -1, h, w)

    @abstractmethod
    def _run(self, frames: np.ndarray) -> np.ndarray:
        """Backend work for validated frames (b, H, W) uint16 -> volumes (b, K, H, W) uint16."""


def engine_class(name: str) -> type[Engine]:
    """Import and return the engine class for `name` (one of ENGINE_NAMES)."""
    if name == "torch":
        from infer.engines.torch_eager import TorchEngine

        return TorchEngine
    if name == "torch-opt":
        from infer.engines.torch_opt import TorchOptEngine

        return TorchOptEngine
    if name == "onnxruntime":
        from infer.engines.onnxrt import OnnxRuntimeEngine

        return OnnxRuntimeEngine
    if name == "tensorrt":
        from infer.engines.tensorrt import TensorRTEngine

        return TensorRTEngine
    raise EngineUnavailable(f"unknown engine {name!r}: choose one of auto, {', '.join(ENGINE_NAMES)}.")


def engine_unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why engine `name` cannot run on `device` here, or None when it can."""
    return engine_class(name).unavailable_reason(device)


# Order for "auto", fastest first, per device type (measured with `deepz bench infer`, bench/results/).
AUTO_ORDER = {
    "cuda": (
        ("tensorrt", "a TensorRT fp16 engine is the fastest backend on NVIDIA GPUs"),
        ("torch-opt", "compiled torch fp16 + CUDA graphs is the fastest backend without TensorRT"),
        ("torch", "the eager float32 reference is the only other CUDA backend"),
    ),
    "cpu": (
        ("onnxruntime", "onnxruntime (fused float32 kernels) measured fastest on the CPU at full accuracy"),
        ("torch-opt", "torch-opt (channels-last, folded batch norm) is the fastest torch path on the CPU"),
        ("torch", "the eager torch reference always runs"),
    ),
}


def make_engine(
    name: str,
    model: LoadedModel,
    frame_shape: tuple[int, int],
    dpm: np.ndarray,
    batch: int = 1,
    device: str | torch.device | None = None,
    **options: object,
) -> Engine:
    """Build engine `name` ("auto" = fastest available, logged with the reason); never falls back silently.

    `options` are keyword arguments of that engine's class (e.g. torch-opt's precision), so they need an
    explicit name.
    """
    dev = resolve_device(device)
    if options and name == "auto":
        raise EngineInputError(
            f"engine options {sorted(options)} belong to one engine: name it (e.g. 'torch-opt') "
            "instead of 'auto'."
        )
    if name != "auto":
        reason = engine_unavailable_reason(name, dev)
        if reason is not None:
            raise EngineUnavailable(f"engine {name!r} is unavailable on {dev}: {reason}")
        engine = engine_class(name)(model, frame_shape, dpm, batch, dev, **options)
        log.info("engine %s on %s%s", name, dev, f": {engine.setup}" if engine.setup else "")
        return engine
    skipped = []
    for candidate, why in AUTO_ORDER[dev.type]:
        reason = engine_unavailable_reason(candidate, dev)
        if reason is None:
            engine = engine_class(candidate)(model, frame_shape, dpm, batch, dev)
            log.info(
                "engine auto -> %s on %s: %s%s%s", candidate, dev, why,
                f"; {engine.setup}" if engine.setup else "",
                f" (skipped: {'; '.join(skipped)})" if skipped else "",
            )
            return engine
        skipped.append(f"{candidate}: {reason}")
    raise EngineUnavailable(f"no engine can run on {dev}: {'; '.join(skipped)}")
