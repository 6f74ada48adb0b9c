"""Recordings in the viewer: real stores (storage writer and reader), playback, screenshots, bad paths."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import zarr  # noqa: E402
from PySide6 import QtCore, QtGui  # noqa: E402
from typer.testing import CliRunner  # noqa: E402
from view_data import (  # noqa: E402
    REC_FRAMES,
    REC_IDS,
    REC_SHAPE,
    REC_VOLUME_EVERY,
    small_states,
    write_recording,
)

from deepz.cli import app  # noqa: E402
from display.app import open_recording_window  # noqa: E402
from display.contrast import ContrastControl  # noqa: E402
from display.recording import RecordingAdapter  # noqa: E402
from display.screenshot import render_screenshot  # noqa: E402
from display.volume_views import VolumeViews  # noqa: E402
from storage import RecordingReader  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_recording(tmp_path_factory.mktemp("view") / "rec.zarr")


def test_adapter_serves_frame_newest_volume_tracks_and_trace_window(recording: Path) -> None:
    reader = RecordingReader(recording)
    adapter = RecordingAdapter(reader, trace_window=3)
    state = adapter.state(23)
    np.testing.assert_array_equal(state.frame, reader.frame(23))
    np.testing.assert_array_equal(state.volume, reader.volume(20))
    np.testing.assert_array_equal(state.track_ids, REC_IDS)
    tracks = reader.tracks()
    at_20 = tracks["t"] == 20
    np.testing.assert_allclose(state.track_positions_um[:, 2], tracks["x"][at_20])
    assert state.traces_dff.shape == (len(REC_IDS), 3)
    np.testing.assert_allclose(state.trace_t, [0.10, 0.15, 0.20])
    np.testing.assert_allclose(state.traces_dff[:, -1], np.sin(20 / 7 + np.arange(len(REC_IDS))), rtol=1e-6)
    assert state.stats["lost"] == 1 and state.stats["skipped"] == 5
    assert state.stats["input_hz"] == pytest.approx(100.0)
    assert state.stats["volume_hz"] == pytest.approx(100.0 / REC_VOLUME_EVERY, rel=0.1)
    assert adapter.default_t == REC_FRAMES - REC_VOLUME_EVERY
    before_any_volume = RecordingAdapter(reader).state(0)
    assert before_any_volume.volume is not None and before_any_volume.trace_t is not None


def test_playback_advances_and_pauses(recording: Path, qtbot) -> None:
    window, player = open_recording_window(RecordingReader(recording), t=0)
    qtbot.addWidget(window)
    window.show()
    player.speed_box.setCurrentText("10x")
    player.set_playing(True)
    qtbot.waitUntil(lambda: window.state.t >= 10, timeout=10_000)
    player.set_playing(False)
    t = window.state.t
    qtbot.wait(100)
    assert window.state.t == t and player.play_button.text() == "Play"
    player.seek(REC_FRAMES - 1)
    assert window.state.t == REC_FRAMES - 1 and window.state.volume is not None
    window.activateWindow()
    qtbot.waitActive(window)
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Left)
    assert window.state.t == REC_FRAMES - 2


def test_screenshot_has_the_requested_size_and_shows_data(recording: Path, tmp_path: Path, qtbot) -> None:
    out = render_screenshot(RecordingReader(recording), tmp_path / "shot.png", t=22, size=(1200, 800))
    image = QtGui.QImage(str(out)).convertToFormat(QtGui.QImage.Format.Format_RGB888)
    assert (image.width(), image.height()) == (1200, 800)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(800, image.bytesPerLine())[:, :3600]
    pixels = pixels.reshape(800, 1200, 3)
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 200  # colour maps and grey levels, not blank


def test_cli_screenshot(recording: Path, tmp_path: Path, qtbot) -> None:
    out = tmp_path / "cli.png"
    result = CliRunner().invoke(
        app, ["view", str(recording), "--screenshot", str(out), "--t", "12", "--size", "1300x700"]
    )
    assert result.exit_code == 0, result.output
    assert QtGui.QImage(str(out)).size().toTuple() == (1300, 700)
    result = CliRunner().invoke(app, ["view", str(recording), "--screenshot", str(out), "--size", "300x200"])
    assert result.exit_code == 2 and "smaller than the viewer's minimum" in result.output


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("plain folder", "not a Zarr v3 store"),
        ("foreign zarr", "written by another program"),
    ],
)
def test_bad_recordings_give_a_clear_message(kind: str, message: str, tmp_path: Path, qtbot) -> None:
    path = tmp_path / "bad.zarr"
    if kind == "plain folder":
        path.mkdir()
        (path / "notes.txt").write_text("not a recording")
    elif kind == "foreign zarr":
        zarr.open_group(path, mode="w").create_array("data", shape=(4, 4), dtype="uint16")
    for args in (["view", str(path)], ["view", str(path), "--screenshot", str(tmp_path / "x.png")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert message in result.output and "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_bad_time_and_arguments_are_rejected(recording: Path) -> None:
    result = CliRunner().invoke(
        app, ["view", str(recording), "--screenshot", "x.png", "--t", str(REC_FRAMES)]
    )
    assert result.exit_code == 2 and "outside the recording" in result.output
    result = CliRunner().invoke(app, ["view"])
    assert result.exit_code == 2 and "either a recording path" in result.output
    result = CliRunner().invoke(app, ["view", "--connect", "localhost:5557"])
    assert result.exit_code == 2 and "cannot connect to localhost:5557" in result.output


def test_bench_view_writes_json(tmp_path: Path, qtbot) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "view",
            "--json",
            str(out),
            "--updates",
            "3",
            "--size",
            "64",
            "--planes",
            "4",
            "--neurons",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(out.read_text())
    assert report["config"]["height"] == 64 and report["fps"] > 0 and report["view_paints_per_update"] > 0
    assert REC_SHAPE  # the bench builds its own data; recordings are not needed


def test_corrupt_chunk_is_reported_in_the_window(tmp_path: Path, qtbot) -> None:
    path = write_recording(tmp_path / "rec.zarr")
    chunk = path / "1" / "0" / "c" / "4" / "0" / "0" / "0"  # the volume of frame 20 (row 4)
    assert chunk.is_file()
    chunk.write_bytes(b"not a compressed chunk")
    window, player = open_recording_window(RecordingReader(path), t=12)
    qtbot.addWidget(window)
    player.seek(22)  # needs the volume stored at frame 20
    assert "cannot read frame 22" in window.status_label.text()
    assert window.state.t == 12  # the last good view stays up
    player.seek(30)
    assert window.state.t == 30 and window.state.volume is not None
    result = CliRunner().invoke(
        app, ["view", str(path), "--screenshot", str(tmp_path / "x.png"), "--t", "22"]
    )
    assert result.exit_code == 2 and "is corrupt" in result.output and not (tmp_path / "x.png").exists()


def test_single_plane_volumes_hide_the_axial_projections(qtbot) -> None:
    """A super-resolved image is a one-plane volume: XZ/YZ projections would only show stripes."""
    state = small_states()[0]
    views, contrast = VolumeViews(), ContrastControl("volume")
    qtbot.addWidget(contrast)
    views.show(state, z_index=0, max_projection=False, contrast=contrast, selected={}, show_labels=False)
    assert views.xz.plot.isVisible() and views.yz.plot.isVisible()
    single = dataclasses.replace(state, volume=state.volume[:1], meta=dict(state.meta, planes_um=[0.0]))
    views.show(single, z_index=0, max_projection=False, contrast=contrast, selected={}, show_labels=False)
    assert not views.xz.plot.isVisible() and not views.yz.plot.isVisible()
    assert views.xy.image.image.shape == state.volume.shape[1:]
