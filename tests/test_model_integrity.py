"""Integrity of a model's files: the manifest is sealed (an edited field or a blank weights digest is refused)
and the shipped models carry the seal. (Cached ONNX graphs: tests/test_engines_onnx.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from infer.manifest import Architecture, ModelManifest, Normalisation, manifest_digest
from infer.model import DeepZGenerator, UNetConfig
from infer.model_io import ModelFileError, default_model_path, load_model, save_model

CONFIG = UNetConfig(base_channels=4, depth=2, max_channels=8)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    manifest = ModelManifest(
        name="tiny", architecture=Architecture.from_config(CONFIG),
        normalisation=Normalisation(offset_adu=100, scale_adu=1500), axial_range_um=10, axial_step_um=0.5,
    )
    return save_model(tmp_path / "m", DeepZGenerator(CONFIG), manifest)


def _edit(model_dir: Path, edit, *, reseal: bool = False) -> None:
    file = model_dir / "manifest.json"
    data = json.loads(file.read_text())
    edit(data)
    if reseal:
        data["manifest_sha256"] = manifest_digest(data)
    file.write_text(json.dumps(data, indent=2))


def test_blank_weights_digest_is_refused(model_dir: Path) -> None:
    _edit(model_dir, lambda d: d.update(weights_sha256=""), reseal=True)
    with pytest.raises(ModelFileError, match="blank weights_sha256"):
        load_model(model_dir)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["optics"].update(pixel_size_um=0.65),
        lambda d: d["normalisation"].update(scale_adu=3000.0),
        lambda d: d.update(weights_sha256=""),
        lambda d: d.update(axial_range_um=20.0),
    ],
    ids=["optics", "normalisation", "blank-weights-digest", "axial-range"],
)
def test_edited_manifest_is_detected(model_dir: Path, edit) -> None:
    _edit(model_dir, edit)
    with pytest.raises(ModelFileError, match="was edited after it was written"):
        load_model(model_dir)


def test_unsealed_manifest_is_refused(model_dir: Path) -> None:
    _edit(model_dir, lambda d: d.pop("manifest_sha256"))
    with pytest.raises(ModelFileError, match="no manifest_sha256"):
        load_model(model_dir)


@pytest.mark.parametrize("name", ["default", "superres-na", "superres-confocal"])
def test_shipped_models_are_sealed_and_load(name: str) -> None:
    loaded = load_model(default_model_path().parent / name)
    assert loaded.manifest.manifest_sha256 and loaded.manifest.weights_sha256 == loaded.digest
