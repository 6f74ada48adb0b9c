"""Export the generator to ONNX (dynamic batch and frame size) and cache exports on disk by model digest."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from infer.cache_seal import seal, seal_problem

if TYPE_CHECKING:
    from infer.model_io import LoadedModel

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "x"
OUTPUT_NAME = "y"


def cache_dir() -> Path:
    """Where exported and compiled engines live: $DEEPZ_CACHE_DIR, else ~/.cache/deepz-live."""
    root = os.environ.get("DEEPZ_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "deepz-live"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's per-pass INFO logs and internal FutureWarnings (nothing a user can act on)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(model: LoadedModel, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write the float32 generator as ONNX: input x (N, 2, H, W), output y (N, 1, H, W); N, H, W dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    multiple = 2 ** model.generator.config.depth
    example = torch.zeros(2, 2, 2 * multiple, 2 * multiple)
    n = torch.export.Dim("n", min=1, max=65536)
    h = torch.export.Dim("h", min=1, max=8192 // multiple)
    w = torch.export.Dim("w", min=1, max=8192 // multiple)
    tmp = path.with_suffix(".tmp.onnx")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model.generator.eval(), (example,), str(tmp),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamo=True, dynamic_shapes=({0: n, 2: multiple * h, 3: multiple * w},),
                external_data=False, verbose=False,
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_cache_path(model: LoadedModel) -> Path:
    """Where the model's ONNX export is cached: keyed by weights digest and opset."""
    return cache_dir() / "onnx" / f"{model.manifest.name}-{model.digest[:16]}-opset{OPSET}.onnx"


def cached_onnx(model: LoadedModel) -> Path:
    """The model's ONNX export from the cache, exported on first use and again whenever the cached file's seal
    (infer.cache_seal: the model digest and the file's sha256) does not hold."""
    path = onnx_cache_path(model)
    problem = seal_problem(path, model.digest)
    if problem is None:
        return path
    if path.exists():
        log.warning("cached ONNX graph %s %s: exporting the model again", path, problem)
    log.info("exporting %s (digest %s) to ONNX at %s", model.manifest.name, model.digest[:12], path)
    export_onnx(model, path)
    seal(path, model.digest, {"model": model.manifest.name, "opset": OPSET})
    return path
