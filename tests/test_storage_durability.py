"""Durability with real processes: a writer killed with SIGKILL, and a writer that hits a file-size limit."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage import RecordingReader

CHILD = r"""
import sys, time
import numpy as np
from storage import RecordingWriter, WriterBehindError, WriterError
from wire.frames import FrameMeta

path, backend, n_max = sys.argv[1], sys.argv[2], int(sys.argv[3])
writer = RecordingWriter(path, frame_shape=(128, 128), pixel_size_um=0.5, backend=backend,
                         commit_interval_s=0.05)
reported = -1
try:
    t = 0
    while t < n_max:
        frame = np.random.default_rng(t).poisson(200, (128, 128)).astype(np.uint16)
        try:
            writer.write_frame(frame, FrameMeta(t, t, t * 0.01, time.time(), 0.0, 10.0, 0, False))
            t += 1
        except WriterBehindError:
            time.sleep(0.002)
        stored = writer.stats.frames_stored
        if stored != reported:
            print("stored", stored, flush=True)
            reported = stored
    writer.close()
except WriterError as exc:
    print("stored", writer.stats.frames_stored, flush=True)
    print("error", str(exc).replace("\n", " "), flush=True)
"""


def _frame(t: int) -> np.ndarray:
    return np.random.default_rng(t).poisson(200, (128, 128)).astype(np.uint16)


def _start(path: Path, backend: str, n_max: int, **kwargs) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), backend, str(n_max)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
        **kwargs,
    )


def _check_frames(reader: RecordingReader, at_least: int) -> None:
    assert reader.n_frames >= at_least
    frames = reader.frames[:]
    for t in range(reader.n_frames):
        np.testing.assert_array_equal(frames[t], _frame(t))
    np.testing.assert_array_equal(reader.metadata["image_number"], np.arange(reader.n_frames))


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_kill_9_keeps_every_frame_reported_stored(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    path = tmp_path / "rec.zarr"
    child = _start(path, backend, 1_000_000)
    reported = 0
    for line in child.stdout:
        reported = int(line.split()[1])
        if reported >= 600:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL and reported >= 600

    reader = RecordingReader(path)
    _check_frames(reader, at_least=reported)
    assert not reader.complete
    assert "interrupted" in reader.stopped_reason


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_disk_full_stops_cleanly_and_keeps_what_was_stored(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    path = tmp_path / "rec.zarr"
    child = _start(path, backend, 5000, preexec_fn=_limit_file_size)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith("error") and "File too large" in lines[-1], lines[-1]
    reported = int(lines[-2].split()[1])
    assert reported > 0

    reader = RecordingReader(path)
    _check_frames(reader, at_least=reported)
    assert not reader.complete
    assert reader.stopped_reason.startswith("writer failed")
