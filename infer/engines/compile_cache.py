"""torch.compile for the optimised engine: whether to compile here, and its compiled kernels cached on disk.

Compiling the U-Net (Inductor, autotuned Triton kernels) doubles the engine's rate on a GPU but takes minutes
cold. Its artifacts are saved after the first build (torch.compiler.save_cache_artifacts) under a key of
everything that shapes them (model digest, frame shape, planes, batch, precision, torch version, device name)
and loaded before the next build of the same key, so a second start is quick. A cache file runs only when its
seal (infer.cache_seal) says it was built from this model, unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import platform
from pathlib import Path

import torch

from infer.cache_seal import seal, seal_problem

log = logging.getLogger(__name__)


def compile_choice(device_type: str, requested: bool | None, triton_available: bool) -> tuple[bool, str]:
    """(compile?, why): compiled by default on CUDA when Triton is there; on request elsewhere."""
    if requested is False:
        return False, "compile turned off"
    if device_type == "cuda" and not triton_available:
        if requested:
            return False, "compile asked for, but Triton (torch.compile's GPU backend) is not installed"
        return False, "not compiled: Triton (torch.compile's GPU backend) is not installed"
    if requested:
        return True, "compile asked for"
    if device_type == "cuda":
        return True, "compiled by default on CUDA (about twice the eager fp16 rate, measured on an H200)"
    return False, "not compiled on the CPU by default (oneDNN eager kernels; --compile to try)"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def device_name(device: torch.device) -> str:
    """The GPU's name (compiled kernels are tuned for it), else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def compile_key(*, model_digest: str, frame_shape: tuple[int, int], planes: int, batch: int, precision: str,
                device: str, torch_version: str = torch.__version__) -> str:
    """The cache key of one compiled engine: a digest of everything its kernels depend on."""
    fields = {"model_digest": model_digest, "frame_shape": list(frame_shape), "planes": planes, "batch": batch,
              "precision": precision, "device": device, "torch": torch_version}  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


class CompileCache:
    """The compiled artifacts of one key in ``folder``: load before compiling, save after the first build."""

    def __init__(self, folder: Path, key: str, model_digest: str) -> None:
        self.path = folder / f"torch-compile-{key}.bin"
        self.model_digest = model_digest
        self.loaded = False

    def load(self) -> str:
        """Load the cached artifacts when their seal holds; returns what happened, for the startup line."""
        problem = seal_problem(self.path, self.model_digest)
        if problem is not None:
            return f"cold compile, cache {self.path.name} {problem}"
        try:
            torch.compiler.load_cache_artifacts(self.path.read_bytes())
        except Exception as exc:  # a cache from another build of torch: compile afresh, and overwrite it
            return f"cold compile, cache {self.path.name} did not load ({type(exc).__name__}: {exc})"
        self.loaded = True
        return f"compile cache {self.path}"

    def save(self) -> None:
        """Store the artifacts this process compiled (no-op when it loaded them and nothing is new)."""
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None or self.loaded:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(artifacts[0])
        tmp.replace(self.path)
        seal(self.path, self.model_digest)
        log.info("saved the compiled kernels to %s for the next start", self.path)
