"""Model files: safetensors + manifest round trip, the shipped model, rejection of bad files."""

from __future__ import annotations

import json
import shutil
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
    g = DeepZGenerator(CONFIG)
    manifest = ModelManifest(
        name="tiny", architecture=Architecture.from_config(CONFIG),
        normalisation=Normalisation(offset_adu=100, scale_adu=1500), axial_range_um=10, axial_step_um=0.5,
    )
    return save_model(tmp_path / "m", g, manifest)


def test_round_trip_gives_the_same_network(model_dir: Path) -> None:
    loaded = load_model(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["weights_sha256"] == loaded.digest
    assert loaded.manifest.architecture.unet_config() == CONFIG
    assert not loaded.generator.training
    reloaded = load_model(model_dir)
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.generator(x), reloaded.generator(x))
    assert (model_dir / "weights.safetensors").read_bytes()[8:9] == b"{"  # safetensors JSON header, no pickle


def test_shipped_default_model_loads() -> None:
    loaded = load_model(default_model_path())
    cfg = loaded.manifest.architecture.unet_config()
    assert loaded.manifest.axial_range_um > 0 and loaded.manifest.modality == "widefield"
    with torch.no_grad():
        out = loaded.generator(torch.zeros(1, 2, 2**cfg.depth * 4, 2**cfg.depth * 4))
    assert torch.isfinite(out).all()


def test_truncated_weights_are_rejected(model_dir: Path) -> None:
    w = model_dir / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(model_dir)


def test_tampered_weights_are_rejected(model_dir: Path) -> None:
    w = model_dir / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its manifest"):
        load_model(model_dir)


def test_weights_of_another_architecture_are_rejected(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["architecture"]["base_channels"] = 8
    manifest["manifest_sha256"] = manifest_digest(manifest)  # a consistent manifest of another architecture
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        load_model(model_dir)


@pytest.mark.parametrize("text", ["{\"format_version\": 1, \"name\": \"x\"", "[]", "not json"])
def test_broken_manifests_are_rejected(model_dir: Path, text: str) -> None:
    (model_dir / "manifest.json").write_text(text)
    with pytest.raises(ModelFileError, match="not a valid Deep-Z manifest"):
        load_model(model_dir)


def test_missing_files_are_named(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="No model manifest"):
        load_model(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    (copy / "weights.safetensors").unlink()
    with pytest.raises(ModelFileError, match="Missing"):
        load_model(copy)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="format_version 99"):
        load_model(model_dir)
