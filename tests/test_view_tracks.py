"""`deepz view` of a tracks store (`deepz track`'s REC.tracks.zarr): over its recording's images, or alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import zarr  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from deepz.cli import app  # noqa: E402
from deepz.lab.blobs import BlobConfig, BlobWorld  # noqa: E402
from display.app import dispose, open_recording_window  # noqa: E402
from display.markers import NeuronMarkers  # noqa: E402
from storage import RecordingReader, RecordingWriter  # noqa: E402
from wire.frames import FrameMeta  # noqa: E402

VOLUMES = 5
PLANES = np.arange(8, dtype=np.float64) - 4.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 5-volume recording of 5 moving blobs and its `deepz track` store, tracked by a relative path."""
    folder = tmp_path_factory.mktemp("view_tracks")
    world = BlobWorld(BlobConfig(shape=(8, 64, 64), voxel_um=(1.0, 0.5, 0.5), n_neurons=5, seed=4))
    src = folder / "rec.zarr"
    with RecordingWriter(src, frame_shape=(64, 64), pixel_size_um=0.5, planes_um=PLANES, volume_every=1) as w:
        for t in range(VOLUMES):
            vol = world.volume(t * 0.1).numpy().astype(np.uint16)
            w.write_frame(vol[4], FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
            w.write_volume(t, vol)
    cwd = Path.cwd()
    os.chdir(folder)  # tracked_from is then "rec.zarr": found beside the store from any directory
    try:
        result = CliRunner().invoke(app, ["track", "rec.zarr"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return src, folder / "rec.tracks.zarr"


def marked(markers: NeuronMarkers) -> dict[int, tuple[float, float]]:
    """Neuron ID -> marker position of every marker (plain and selected) on one view."""
    out = {}
    for item in (markers.points, markers.selected):
        x, y = item.getData()
        out.update(zip(item.data["data"].tolist(), zip(x.tolist(), y.tolist(), strict=True), strict=True))
    return out


def tracks_at(tracks: RecordingReader, t: int) -> dict[str, np.ndarray]:
    table = tracks.tracks()
    rows = table["t"] == t
    return {name: col[rows] for name, col in table.items()}


def assert_markers_and_traces(window, tracks: RecordingReader, t: int) -> None:
    now = tracks_at(tracks, t)
    ids = now["id"].tolist()
    assert len(ids) == 5
    xy, xz = marked(window.volume.markers["xy"]), marked(window.volume.markers["xz"])
    for i, neuron in enumerate(ids):
        np.testing.assert_allclose(xz[neuron], (now["x"][i], now["z"][i]), rtol=1e-5)
        if neuron in xy:  # the XY view marks the neurons near its plane (all of them without a volume)
            np.testing.assert_allclose(xy[neuron], (now["x"][i], now["y"][i]), rtol=1e-5)
    trace_ids, _, dff = tracks.traces()
    np.testing.assert_array_equal(window.traces.row_ids, np.sort(trace_ids))
    assert window.state.traces_dff.shape == (len(trace_ids), t + 1)
    np.testing.assert_allclose(window.state.traces_dff, dff[:, : t + 1])
    assert window.selected_ids and set(window.selected_ids) <= set(ids)  # the traces shown are tracked neurons


def test_tracks_over_the_source_recording(stores: tuple[Path, Path], qtbot) -> None:
    src, store = stores
    source, tracks = RecordingReader(src), RecordingReader(store)
    window, player = open_recording_window(source, t=3, tracks=tracks)
    qtbot.addWidget(window)
    np.testing.assert_array_equal(window.state.frame, source.frame(3))
    np.testing.assert_array_equal(window.state.volume, source.volume(3))
    np.testing.assert_array_equal(np.sort(window.state.track_ids), np.sort(tracks_at(tracks, 3)["id"]))
    assert_markers_and_traces(window, tracks, 3)
    assert f"tracks {store} over recording {src}" in window.status_label.text()
    dispose(window)


def test_tracks_alone_when_the_recording_is_gone(stores: tuple[Path, Path], qtbot) -> None:
    _, store = stores
    tracks = RecordingReader(store)
    window, player = open_recording_window(None, tracks=tracks)
    qtbot.addWidget(window)
    assert window.state.t == VOLUMES - 1 and player.slider.maximum() == VOLUMES - 1
    assert window.state.frame is None and window.state.volume is None
    assert_markers_and_traces(window, tracks, VOLUMES - 1)
    assert len(marked(window.volume.markers["xy"])) == 5  # no plane: every neuron is marked in XY
    table = tracks.tracks()
    (x0, x1), (y0, y1) = window.volume.xy.plot.getViewBox().viewRange()
    assert x0 < table["x"].min() and table["x"].max() < x1 and y0 < table["y"].min() and table["y"].max() < y1
    z0, z1 = window.volume.xz.plot.getViewBox().viewRange()[1]
    assert z0 < table["z"].min() and table["z"].max() < z1  # every neuron in view at any time
    player.seek(2)
    assert_markers_and_traces(window, tracks, 2)
    assert player.time_label.text() == "3/5  0.02 s"  # the source's frame interval (10 ms)
    assert "5 neurons over 5 time points, no images" in window.status_label.text()
    dispose(window)


def test_cli_views_a_tracks_store_with_and_without_its_recording(
    stores: tuple[Path, Path], tmp_path: Path, qtbot
) -> None:
    src, store = stores
    runner = CliRunner()
    out = tmp_path / "over.png"
    result = runner.invoke(app, ["view", str(store), "--screenshot", str(out), "--t", "2", "--size", "1200x800"])
    assert result.exit_code == 0, result.output
    assert "without images" not in result.output and out.is_file()
    moved = src.with_name("moved.zarr")
    src.rename(moved)  # the recording moved away: the tracks are shown alone, and the user is told why
    try:
        result = runner.invoke(app, ["view", str(store), "--screenshot", str(tmp_path / "alone.png")])
        assert result.exit_code == 0, result.output
        assert "tracked recording rec.zarr is not at hand" in result.output
        result = runner.invoke(app, ["view", str(store), "--screenshot", str(out), "--t", "5"])
        assert result.exit_code == 2 and "--t 5 is outside the recording (frames 0..4)" in result.output
    finally:
        moved.rename(src)
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(foreign, mode="w")
    result = runner.invoke(app, ["view", str(foreign)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "deepz view opens a recording (REC.zarr) or a tracks store" in lines[0]

