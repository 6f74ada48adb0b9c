"""The deepz_napari plugin in a headless napari (npe2 and ViewerModel, no GL): real stores and a real zmq stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from napari.components import ViewerModel  # noqa: E402

from storage import RecordingWriter  # noqa: E402
from wire.frames import FrameMeta  # noqa: E402
from storage.calibration import CalibrationStore, ScanRecord  # noqa: E402
from storage.stack_file import save_stack  # noqa: E402
from storage.synthetic import blob_volume  # noqa: E402
from wire.messages import Publisher  # noqa: E402

SHAPE = (32, 48)
PLANES = np.array([-3.0, 0.0, 3.0])
VOLUME_FRAMES = [0, 4, 8]
IDS = np.array([5, 9])
SCAN_Z = np.array([-1.0, 0.0, 1.0])


@pytest.fixture(scope="module")
def plugins() -> npe2.PluginManager:
    manager = npe2.PluginManager.instance()
    manager.discover()
    if "deepz-live" not in manager._manifests:
        pytest.fail("the deepz-live napari plugin is not installed: run `pip install -e .` (make install)")
    return manager


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("napari") / "rec.zarr"
    with RecordingWriter(
        path, frame_shape=SHAPE, pixel_size_um=0.5, planes_um=PLANES, volume_every=1, frame_interval_s=0.02
    ) as writer:
        for t in range(10):
            writer.write_frame(blob_volume(SHAPE, n_blobs=4, seed=t), FrameMeta(t, t, t * 0.02, t, 0, 5, 0, False))
            if t in VOLUME_FRAMES:
                writer.write_volume(t, np.full((3, *SHAPE), t, np.uint16))
                positions = np.array([[0.0, 2.0, 3.0], [1.0, 8.0, 9.0]]) + 0.1 * t
                writer.write_tracks(t, IDS, positions, np.array([100.0, 200.0]), np.array([0.1, 0.2]) * t)
        record = ScanRecord(0, "start", 0.0, SCAN_Z.tolist(), SCAN_Z.tolist(), 0.5, 0, 0.0, 0.1)
        CalibrationStore(path).write(record, np.ones((3, *SHAPE), np.uint16), IDS, [[0.0, 2.0, 3.0], [1.0, 8.0, 9.0]])
    return path


def _layers(path: Path, plugin: str = "deepz-live") -> dict[str, tuple]:
    return {meta["name"]: (data, meta, kind) for data, meta, kind in npe2.read([str(path)], plugin_name=plugin,
                                                                               stack=False)}  # fmt: skip


def test_reader_opens_a_recording_whole_at_its_physical_scale(plugins, recording: Path) -> None:
    layers = _layers(recording)
    assert set(layers) == {"raw", "volumes", "calibration 0", "calibration 0 reference", "tracks", "neurons"}
    raw, meta, kind = layers["raw"]
    assert kind == "image" and raw.shape == (10, 1, *SHAPE)  # the frame sits at z = 0, the focal plane
    assert meta["scale"] == pytest.approx([0.02, 1.0, 0.5, 0.5]) and meta["units"][0] == "second"
    volumes, meta, _ = layers["volumes"]
    np.testing.assert_array_equal(np.asarray(volumes)[:, 0, 0, 0], VOLUME_FRAMES)  # dense: computed ones only
    assert meta["scale"] == pytest.approx([0.08, 3.0, 0.5, 0.5]) and meta["translate"][:2] == pytest.approx([0, -3])
    scan, meta, _ = layers["calibration 0"]
    assert scan.shape == (3, *SHAPE) and meta["scale"] == pytest.approx([1.0, 0.5, 0.5])
    reference, meta, kind = layers["calibration 0 reference"]
    assert kind == "points" and meta["features"]["id"].tolist() == IDS.tolist()
    tracks, meta, kind = layers["tracks"]
    assert kind == "tracks" and tracks.shape == (6, 5)  # track_id, t, z, y, x: 2 neurons x 3 volumes
    assert tracks[:3, 0].tolist() == [5, 5, 5] and tracks[:3, 1].tolist() == VOLUME_FRAMES
    assert tracks[1, 2:] == pytest.approx([0.4, 2.4, 3.4]) and meta["scale"][0] == pytest.approx(0.02)
    traces = meta["metadata"]["deepz_traces"]
    assert traces["ids"].tolist() == IDS.tolist() and traces["time_s"] == pytest.approx([0.0, 0.08, 0.16])
    neurons, meta, kind = layers["neurons"]
    assert kind == "points" and meta["features"]["id"].tolist() == [5, 5, 5, 9, 9, 9]


def test_reader_opens_a_tracks_store(plugins, tmp_path: Path) -> None:
    path = tmp_path / "rec.tracks.zarr"  # what `deepz track` writes: tracks of another recording, no frames
    with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=0.5, frame_interval_s=0.05) as writer:
        for t in (10, 20):
            writer.write_tracks(t, IDS, np.ones((2, 3)) * t, np.ones(2), np.zeros(2))
    layers = _layers(path)
    assert set(layers) == {"tracks", "neurons"}
    tracks, meta, _ = layers["tracks"]
    assert tracks[:, 1].tolist() == [10, 20, 10, 20] and meta["scale"][0] == pytest.approx(0.05)
    assert meta["metadata"]["deepz_traces"]["time_s"] == pytest.approx([0.5, 1.0])


def test_layers_share_one_world_in_a_viewer_model(plugins, recording: Path) -> None:
    viewer = ViewerModel()
    for data, meta, kind in _layers(recording).values():
        viewer._add_layer_from_data(data, meta, kind)
    assert viewer.dims.axis_labels == ("t", "z", "y", "x")
    extent = {layer.name: layer.extent.world for layer in viewer.layers}
    assert extent["raw"][:, 0] == pytest.approx([0.0, 0.18])  # frames 0..9 at 50 Hz
    assert extent["volumes"][:, 0] == pytest.approx([0.0, 0.16])  # the volumes of frames 0, 4 and 8
    assert extent["volumes"][:, 1] == pytest.approx([-3.0, 3.0])  # z of the three planes
    assert extent["tracks"][:, 0] == pytest.approx([0.0, 0.16])


def test_napari_ome_zarr_opens_every_image_of_the_root(plugins, recording: Path) -> None:
    layers = npe2.read([str(recording)], plugin_name="napari-ome-zarr", stack=False)
    shapes = [data[0].shape for data, _, _ in layers]
    assert shapes == [(10, *SHAPE), (3, 3, *SHAPE), (3, *SHAPE)]
    assert [meta["scale"][0] for _, meta, _ in layers] == pytest.approx([0.02, 0.08, 1.0])


def test_reader_opens_focal_stacks_and_leaves_foreign_stores(plugins, tmp_path: Path) -> None:
    stack = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    for name in ("stack.zarr", "stack.ome.tif"):
        path = save_stack(tmp_path / name, stack, np.array([-1.5, -0.5, 0.5, 1.5]), pixel_size_um=0.25)
        data, meta, kind = _layers(path)[name]
        np.testing.assert_array_equal(data, stack)
        assert meta["scale"] == pytest.approx([1.0, 0.25, 0.25]) and meta["translate"][0] == -1.5
    import zarr

    zarr.create_group(tmp_path / "other.zarr", zarr_format=3)
    from deepz_napari.reader import get_reader

    assert get_reader(str(tmp_path / "other.zarr")) is None


def test_traces_widget_follows_the_tracks_layer(plugins, recording: Path, qtbot) -> None:
    from deepz_napari.traces import TracesWidget

    viewer = ViewerModel()
    widget = TracesWidget(viewer)
    qtbot.addWidget(widget)
    for data, meta, kind in _layers(recording).values():
        viewer._add_layer_from_data(data, meta, kind)
    assert widget.ids.tolist() == IDS.tolist() and widget.dff.shape == (2, 3)
    assert "2 neurons, 3 time points" in widget.label.text()


def test_live_widget_shows_a_real_zmq_stream(qtbot) -> None:
    from deepz_napari.live import LiveWidget

    publisher = Publisher("tcp://127.0.0.1:*")
    viewer = ViewerModel()
    widget = LiveWidget(viewer, address=publisher.address)
    qtbot.addWidget(widget)
    widget.toggle()
    arrays = {
        "frame": np.full(SHAPE, 7, np.uint16),
        "volume": np.full((3, *SHAPE), 9, np.uint16),
        "track_ids": IDS,
        "track_positions_um": np.array([[0.0, 2.0, 3.0], [1.0, 8.0, 9.0]], np.float32),
        "trace_ids": IDS,
        "traces_dff": np.zeros((2, 4), np.float32),
        "trace_t": np.arange(4, dtype=np.float64),
    }
    meta = {"planes_um": PLANES.tolist(), "pixel_size_um": 0.5}
    try:
        deadline = time.monotonic() + 10
        while not widget.shown and time.monotonic() < deadline:  # the first messages go before SUB joins
            publisher.publish(3, arrays, {"input_hz": 100.0}, meta)
            qtbot.wait(50)
        assert widget.shown and widget.rejected == 0
        assert viewer.layers["live frame"].data.shape == (1, *SHAPE)
        assert viewer.layers["live volume"].scale.tolist() == pytest.approx([3.0, 0.5, 0.5])
        assert viewer.layers["live volume"].translate[0] == -3.0
        assert viewer.layers["live neurons"].features["id"].tolist() == IDS.tolist()
        assert widget.traces.dff.shape == (2, 4) and "frame 3, 100 Hz" in widget.status.text()
    finally:
        widget.stop()
        publisher.close()
