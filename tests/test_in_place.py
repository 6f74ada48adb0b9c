"""A recording is never modified in place: replay, track and isotropic refuse an output that is their input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage import RecordingExistsError, RecordingReader, RecordingWriter
from wire.frames import FrameMeta
from storage.output_path import claim_output
from deepz.lab.blobs import BlobConfig, BlobWorld


def _digest(path: Path) -> str:
    """Content hash of every file under a store (names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A small recording with frames and volumes of blob neurons."""
    world = BlobWorld(BlobConfig(shape=(8, 64, 64), voxel_um=(1.0, 0.5, 0.5), n_neurons=5, seed=4))
    planes = np.arange(8, dtype=np.float64) - 4.0
    path = tmp_path_factory.mktemp("rec") / "rec.zarr"
    with RecordingWriter(path, frame_shape=(64, 64), pixel_size_um=0.325, planes_um=planes, volume_every=1) as w:
        for t in range(4):
            vol = world.volume(t * 0.1).numpy().astype(np.uint16)
            w.write_frame(vol[4], FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
            w.write_volume(t, vol)
    return path


def _deepz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepz", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "{rec}", "--out", "{rec}", "--overwrite"),
        ("replay", "{rec}", "--out", "{rec}/volumes", "--overwrite"),
        ("track", "{rec}", "--out", "{rec}", "--overwrite"),
        ("isotropic", "{rec}", "--out", "{rec}", "--overwrite"),
    ],
    ids=["replay", "replay-inside", "track", "isotropic"],
)
def test_output_over_the_input_is_refused_and_the_recording_is_untouched(recording: Path, args) -> None:
    before = _digest(recording)
    proc = _deepz(*(a.format(rec=recording) for a in args))
    assert proc.returncode == 2, proc.stderr
    assert "never modified in place" in proc.stderr and "Traceback" not in proc.stderr
    assert _digest(recording) == before
    reader = RecordingReader(recording)
    assert reader.complete and reader.n_frames == 4 and reader.frames[:].max() > 0


def test_a_symlink_to_the_input_is_the_input(recording: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.zarr"
    link.symlink_to(recording)
    with pytest.raises(RecordingExistsError, match="never modified in place"):
        claim_output(link, overwrite=True, inputs=[recording])
    with pytest.raises(RecordingExistsError, match="never modified in place"):
        claim_output(recording.parent, overwrite=True, inputs=[recording])  # a folder holding the input
    assert RecordingReader(recording).n_frames == 4
    claim_output(tmp_path / "new.zarr", overwrite=True, inputs=[recording])  # anything else is fine


def test_version_flag() -> None:
    proc = _deepz("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("deepz-live ")
