"""Save and load Deep-Z models as safetensors weights + a JSON manifest; loading never unpickles."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from infer.manifest import FORMAT_VERSION, ModelManifest, manifest_digest
from infer.model import DeepZGenerator

WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"


class ModelFileError(Exception):
    """A model directory is missing, truncated, tampered with or does not match its manifest."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready generator (eval mode, CPU, float32), its manifest and the weights' sha256 digest."""

    generator: DeepZGenerator
    manifest: ModelManifest
    digest: str


def default_model_path() -> Path:
    """The small model shipped with the package."""
    return Path(__file__).resolve().parent / "models" / "default"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(path: str | Path, generator: DeepZGenerator, manifest: ModelManifest) -> Path:
    """Write path/weights.safetensors and path/manifest.json (with the weights' sha256); returns path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in generator.state_dict().items()
    }
    weights = path / WEIGHTS
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "deepz", "name": manifest.name})
    tmp.chmod(0o644)
    tmp.replace(weights)
    write_manifest(path, manifest.model_copy(update={"weights_sha256": file_sha256(weights)}))
    return path


def write_manifest(path: str | Path, manifest: ModelManifest) -> Path:
    """Write path/manifest.json sealed with its manifest_sha256 (every other field's digest); returns the file.

    The only way manifests are written, so every writer (training, evaluation results) keeps the seal valid.
    """
    file = Path(path) / MANIFEST
    data = json.loads(manifest.model_dump_json(exclude={"manifest_sha256"}))
    data["manifest_sha256"] = manifest_digest(data)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(file)
    return file


def load_manifest(path: str | Path) -> ModelManifest:
    """Read and validate path/manifest.json (or a manifest file itself)."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
        manifest = ModelManifest.model_validate(data)
    except FileNotFoundError as exc:
        raise ModelFileError(
            f"No model manifest at {file}. A model is a directory holding {MANIFEST} and {WEIGHTS}; "
            "pass such a directory (e.g. one written by `deepz train`)."
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise ModelFileError(
            f"The model manifest {file} is not a valid Deep-Z manifest ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}). It is truncated or edited by hand; re-export the model."
        ) from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ModelFileError(
            f"{file} has manifest format_version {manifest.format_version}; this software reads "
            f"{FORMAT_VERSION}. Use a matching deepz-live version or re-export the model."
        )
    if not manifest.manifest_sha256:
        raise ModelFileError(
            f"{file} has no manifest_sha256, so its fields cannot be checked; re-export the model."
        )
    if manifest_digest(data) != manifest.manifest_sha256:
        raise ModelFileError(
            f"{file} was edited after it was written (its fields no longer match its manifest_sha256 "
            f"{manifest.manifest_sha256[:12]}...): the optics, normalisation or weights digest it states cannot be "
            "trusted. Copy the model directory again or re-export the model."
        )
    return manifest


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load a model directory (default: the shipped model), checking digest and architecture."""
    path = Path(path) if path is not None else default_model_path()
    manifest = load_manifest(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelFileError(f"Missing {weights}: the model directory {path} is incomplete; copy it again.")
    if not manifest.weights_sha256:
        raise ModelFileError(
            f"{path / MANIFEST} has a blank weights_sha256, so {weights} cannot be checked; re-export the model."
        )
    digest = file_sha256(weights)
    if digest != manifest.weights_sha256:
        raise ModelFileError(
            f"{weights} does not match its manifest (sha256 {digest[:12]}... vs {manifest.weights_sha256[:12]}"
            "...): the file is truncated, corrupted or was replaced. Copy the model directory again."
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights} is not a readable safetensors file ({exc}); copy the model again.") from exc
    generator = DeepZGenerator(manifest.architecture.unet_config())
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"The weights in {weights} do not fit the architecture in its manifest "
            f"({manifest.architecture.model_dump()}): {str(exc).splitlines()[0]} Re-export the model."
        ) from exc
    generator.to("cpu", torch.float32).eval()
    return LoadedModel(generator=generator, manifest=manifest, digest=digest)
