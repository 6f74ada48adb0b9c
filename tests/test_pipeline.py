"""The whole pipeline end to end: simulated microscope in UniMMCore -> shipped model -> Zarr store + tracks
-> a zmq subscriber in another process; replay of the recording; bad input through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepz.bench_pipeline import free_tcp_address
from deepz.config import load_config
from deepz.runner import run_pipeline
from storage import RecordingReader

SIZE, PLANES, RATE = 64, 4, 40.0


def _config(out: Path, address: str, **extra) -> object:
    return load_config(None, {
        "source": {"size": SIZE, "rate_hz": RATE, "neurons": 40, "seed": 3},
        "inference": {"planes": PLANES, "engine": "torch", "z_range_um": [-6.0, 6.0]},
        "recording": {"out": str(out), "overwrite": True},
        "publish": {"address": address, "max_hz": 20},
        "calibration": {"enabled": False},  # volume tracking (the readout: test_live_calibration.py)
        "view": False,
        **extra,
    })


def assert_same_volume(replayed: np.ndarray, live: np.ndarray) -> None:
    """Replay recomputes the live volume: identical except rare 1-ADU rounding flips.

    Concurrent torch work in other threads (the simulated camera draws its noise with torch) can change
    oneDNN's thread partitioning of a convolution, moving a value across a rounding boundary of the uint16
    output: seen on at most 1 voxel in 16384.
    """
    diff = np.abs(replayed.astype(np.int32) - live.astype(np.int32))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-3 * diff.size, (diff.max(), np.count_nonzero(diff))


def _probe(address: str, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepz.probe", address, "60", str(out), *flags])


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A 3 s live run with a measuring subscriber process attached."""
    tmp = tmp_path_factory.mktemp("live")
    address = free_tcp_address()
    probe_json = tmp / "probe.json"
    probe = _probe(address, probe_json)
    time.sleep(1.0)
    summary = run_pipeline(_config(tmp / "live.zarr", address, duration_s=3.0))
    probe.wait(timeout=60)
    return tmp / "live.zarr", summary, json.loads(probe_json.read_text())


def test_every_acquired_frame_is_recorded(live_run):
    path, summary, _ = live_run
    reader = RecordingReader(path)
    assert reader.complete
    assert summary["frames"] > 0 and summary["frames_lost"] == 0
    assert reader.n_frames == summary["frames"] == summary["recording_stats"]["frames_stored"]
    numbers = reader.metadata["image_number"]
    assert np.all(np.diff(numbers) == 1)  # no gaps in the camera's image numbers
    assert reader.attrs["summary"]["frames"] == summary["frames"]


def test_volumes_and_tracks_are_recorded_and_skips_are_marked(live_run):
    path, summary, _ = live_run
    reader = RecordingReader(path)
    # every computed volume is stored, or counted as not stored when the writer fell behind (a loaded machine)
    assert summary["volumes"] >= 1
    assert reader.volume_indices.size == summary["volumes"] - summary["volumes_not_stored"]
    skipped = reader.metadata["volume_skipped"]
    assert int(skipped.sum()) == summary["volumes_skipped"]
    assert not skipped[reader.volume_indices].any()  # a frame with a volume was not skipped
    volume = reader.volume(int(reader.volume_indices[0]))
    assert volume.shape == (PLANES, SIZE, SIZE) and volume.dtype == np.uint16 and volume.std() > 0
    tracks = reader.tracks()  # tracked volumes were computed (stored, or counted as not stored)
    assert set(np.unique(tracks["t"])) <= set(np.flatnonzero(~skipped).tolist())


def test_subscriber_process_receives_frames_and_volumes(live_run):
    _, _, probe = live_run
    assert probe["messages"] >= 1 and probe["distinct_volumes"] >= 1
    assert probe["frame_to_subscriber_ms"]["p50"] is not None


def test_replay_reproduces_the_live_volumes_exactly(live_run, tmp_path):
    path, summary, _ = live_run
    cfg = _config(tmp_path / "replay.zarr", free_tcp_address())
    replay = run_pipeline(cfg, replay_from=path)
    live, again = RecordingReader(path), RecordingReader(tmp_path / "replay.zarr")
    assert replay["volumes"] == again.n_frames == live.n_frames  # replay computes every frame
    assert replay["volumes_skipped"] == 0
    for t in live.volume_indices:
        assert_same_volume(again.volume(int(t)), live.volume(int(t)))
    np.testing.assert_array_equal(again.frames[:], live.frames[:])


def test_replay_command_defaults_to_the_recorded_settings(live_run, tmp_path):
    path, _, _ = live_run
    out = tmp_path / "cli-replay.zarr"
    proc = subprocess.run([sys.executable, "-m", "deepz", "replay", str(path), "--out", str(out), "--no-track"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"recording: {out}" in proc.stdout
    live, again = RecordingReader(path), RecordingReader(out)
    np.testing.assert_array_equal(again.planes_um, live.planes_um)  # 4 planes over +/-6 um, as recorded
    assert again.attrs["replayed_from"] == str(path) and again.tracks()["t"].size == 0
    t = int(live.volume_indices[-1])
    assert_same_volume(again.volume(t), live.volume(t))


def test_stalled_subscriber_does_not_slow_acquisition(tmp_path):
    address = free_tcp_address()
    probe = _probe(address, tmp_path / "stalled.json", "--stall")
    time.sleep(1.0)
    try:
        summary = run_pipeline(_config(tmp_path / "stalled.zarr", address, duration_s=2.0))
    finally:
        probe.kill()
    assert summary["frames_lost"] == 0
    assert RecordingReader(tmp_path / "stalled.zarr").n_frames == summary["frames"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["live", "--planes", "0", "--no-view"], "planes"),
        (["live", "--mm-config", "/nonexistent/rig.cfg", "--no-view"], "does not exist"),
        (["live", "--z-range", "5", "-5", "--no-view"], "low < high"),
        (["live", "--volumes", "sometimes", "--no-view"], "every"),
        (["replay", "/nonexistent/rec.zarr", "--out", "/tmp/deepz-never.zarr"], "nonexistent"),
        (["replay", "/tmp/x.zarr"], "--out"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_code_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "deepz", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_reports_versions_engines_and_effective_config():
    proc = subprocess.run([sys.executable, "-m", "deepz", "info", "--json", "--config", "configs/demo.toml"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["engines"]["torch"] == "available"
    assert report["engines"]["tensorrt"].startswith("unavailable")
    assert report["config"]["inference"]["planes"] == 16 and report["config"]["duration_s"] == 15


@pytest.mark.parametrize("kind", ["tilt", "curved"])
def test_non_uniform_dpms_follow_the_requested_surface(kind):
    from deepz.wiring import planes_and_dpm

    cfg = load_config(None, {"inference": {"planes": 3, "dpm": kind, "tilt_um_per_mm": [0.0, 20.0],
                                           "curvature_um": 2.0}}).inference
    planes, dpm = planes_and_dpm(cfg, (64, 64), 0.325)
    assert dpm.shape == (3, 64, 64)
    np.testing.assert_allclose(dpm.mean(axis=(1, 2)) - planes, dpm[0].mean() - planes[0], atol=1e-4)
    if kind == "tilt":  # 20 um/mm along x: 64 px * 0.325 um = 20.8 um field -> 0.416 um across
        np.testing.assert_allclose(dpm[1, 0, -1] - dpm[1, 0, 0], 0.02 * 63 * 0.325, rtol=1e-4)
        assert np.allclose(dpm[1, :, 0], dpm[1, 0, 0])
    else:  # 2 um sag at the corners, none at the centre
        assert dpm[1, 0, 0] - dpm[1].min() == pytest.approx(2.0, rel=0.05)
