"""A model runs only on the optics it was trained for: a 10x/0.4 NA, 0.65 um-pixel camera with the 20x/0.75 NA
model is refused (live through the CLI in a child process, replay), unless --allow-optics-mismatch, which
warns and records it in the recording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepz.config import load_config
from deepz.optics_check import CameraOptics, OpticsMismatchError, check_optics, optics_mismatches
from deepz.runner import run_pipeline
from infer.model_io import default_model_path, load_manifest
from storage import RecordingReader, RecordingWriter
from wire.frames import FrameMeta

ROOT = Path(__file__).resolve().parents[1]
SIM_10X = ROOT / "configs" / "sim-10x.toml"
LIVE = ("live", "--sim-config", str(SIM_10X), "--duration", "1", "--size", "64", "--planes", "2", "--no-track", "--engine", "torch",
        "--no-view", "--publish", "tcp://127.0.0.1:0")  # fmt: skip


def _deepz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepz", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)  # fmt: skip


def test_tolerance_and_unknown_figures() -> None:
    manifest = load_manifest(default_model_path())  # 20x / 0.75 NA, 520 nm, 0.325 um pixels
    assert optics_mismatches(manifest, CameraOptics(0.325 * 1.04, 0.75 * 0.96, 0.52)) == []
    assert optics_mismatches(manifest, CameraOptics(0.325 * 1.06)) == ["pixel size (um) 0.3445 vs 0.325"]
    assert optics_mismatches(manifest, CameraOptics(0.325, wavelength_um=0.6)) == ["wavelength (um) 0.6 vs 0.52"]
    with pytest.raises(OpticsMismatchError, match="--allow-optics-mismatch"):
        check_optics(manifest, CameraOptics(0.325, 0.4), allow_mismatch=False)
    superres = load_manifest(default_model_path().parent / "superres-na")  # inputs from a 10x / 0.4 NA camera
    assert optics_mismatches(superres, CameraOptics(0.65, 0.4, 0.52)) == []


def _config(out: Path, **inference: object):
    return load_config(None, {
        "source": {"sim_config": str(SIM_10X), "size": 64},
        "inference": {"planes": 2, "engine": "torch", **inference},
        "recording": {"out": str(out)},
        "tracking": {"enabled": False},
        "publish": {"address": "tcp://127.0.0.1:*"},
        "duration_s": 1.0,
        "view": False,
    })  # fmt: skip


def test_live_with_other_optics_is_refused_unless_allowed(tmp_path: Path) -> None:
    out = tmp_path / "rec.zarr"
    proc = _deepz(*LIVE, "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    for text in ("0.325 um pixels, NA 0.75", "0.65 um pixels, NA 0.4", "--allow-optics-mismatch"):
        assert text in proc.stderr
    assert not out.exists()

    run_pipeline(_config(out, allow_optics_mismatch=True))  # what --allow-optics-mismatch sets
    attrs = RecordingReader(out).attrs
    check = attrs["optics_check"]
    assert check["allowed_mismatch"] is True and check["camera"]["numerical_aperture"] == 0.4
    assert check["mismatches"] == ["pixel size (um) 0.65 vs 0.325", "NA 0.4 vs 0.75"]
    assert attrs["config"]["inference"]["allow_optics_mismatch"] is True


def test_replay_checks_the_recorded_pixel_size(tmp_path: Path) -> None:
    rec = tmp_path / "rec.zarr"
    with RecordingWriter(rec, frame_shape=(32, 32), pixel_size_um=0.65) as writer:  # a 10x camera
        for t in range(2):
            writer.write_frame(np.full((32, 32), 200, np.uint16), FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
    with pytest.raises(OpticsMismatchError, match=r"pixel size \(um\) 0.65 vs 0.325"):
        run_pipeline(_config(tmp_path / "replay.zarr"), replay_from=rec)
    assert not (tmp_path / "replay.zarr").exists()
