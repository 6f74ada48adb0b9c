"""Live viewer: real zmq messages from a publisher thread into a real (offscreen) Qt window."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore  # noqa: E402
from view_data import message_arrays, small_states  # noqa: E402

from wire.messages import TOPIC, Publisher  # noqa: E402
from display import launch_viewer_process  # noqa: E402
from display.app import open_live_window  # noqa: E402

STATS = {
    "input_hz": 100.0,
    "volume_hz": 9.5,
    "latency_ms_p50": 41.0,
    "latency_ms_p99": 77.0,
    "lost": 2,
    "skipped": 5,
    "queue_depth": 1,
    "recording": "/data/run1.zarr",
}


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class PublisherThread:
    """Publishes snapshots every 10 ms from a background thread, as the pipeline does, until stopped."""

    def __init__(self, address: str, t0: int) -> None:
        self.address, self.t0 = address, t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.publisher = Publisher(address)  # bind here so a failure surfaces in the test

    def _run(self) -> None:
        states = small_states()
        t = self.t0
        while not self._stop.wait(0.01):
            state = states[t % len(states)]
            self.publisher.publish(t, message_arrays(state), STATS, state.meta)
            t += 1

    def __enter__(self) -> PublisherThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.publisher.close()


@pytest.fixture
def live(qtbot) -> Iterator[tuple]:
    address = _free_address()
    window, feed = open_live_window(address)
    qtbot.addWidget(window)
    window.show()
    yield address, window, feed
    feed.close()


def test_window_shows_published_messages_and_survives_publisher_restart(live, qtbot) -> None:
    address, window, feed = live
    with PublisherThread(address, t0=0):
        qtbot.waitUntil(lambda: feed.shown >= 3, timeout=10_000)
    state = window.state
    assert window.raw.image.image.shape == (64, 96)
    np.testing.assert_array_equal(window.volume.xy.image.image, state.volume[window.z_slider.value()])
    np.testing.assert_array_equal(window.volume.xz.image.image, state.volume.max(axis=1))
    np.testing.assert_array_equal(window.volume.yz.image.image, state.volume.max(axis=2).T)
    assert len(window.volume.markers["xz"].points.data) + len(window.volume.markers["xz"].selected.data) == 12
    assert window.traces.raster.image.shape == (12, 40)
    assert len(window.selected_ids) == 3 and set(window.traces._curves) == set(window.selected_ids)
    status = window.status_label.text()
    for text in (
        "input 100.0 Hz",
        "volumes 9.5 Hz",
        "p50 41",
        "p99 77",
        "lost 2",
        "skipped 5",
        "REC /data/run1.zarr",
    ):
        assert text in status

    restarted: list[PublisherThread] = []

    def rebound() -> bool:  # zmq frees a closed socket's port asynchronously: a new run may retry briefly
        try:
            restarted.append(PublisherThread(address, t0=1000))
        except OSError:
            return False
        return True

    qtbot.waitUntil(rebound, timeout=10_000)
    with restarted[0]:  # a new pipeline run on the same address
        qtbot.waitUntil(lambda: window.state.t >= 1000, timeout=10_000)


def test_bad_message_is_reported_not_fatal(live, qtbot) -> None:
    address, window, feed = live
    publisher = Publisher(address)
    state = small_states()[0]

    def sent_and_seen(frames: list[bytes] | None, seen) -> bool:
        if frames is None:
            publisher.publish(7, message_arrays(state), STATS, state.meta)
        else:
            publisher._socket.send_multipart(frames)
        return seen()

    try:
        qtbot.waitUntil(
            lambda: sent_and_seen(
                [TOPIC, b'{"v": 99}'], lambda: "rejected 1 bad message(s)" in window.status_label.text()
            ),
            timeout=10_000,
        )
        assert "version 99" in window.status_label.text()
        qtbot.waitUntil(lambda: sent_and_seen(None, lambda: feed.shown > 0), timeout=10_000)
    finally:
        publisher.close()


def test_clicking_a_neuron_selects_its_trace(qtbot) -> None:
    from display.window import ViewerWindow

    window = ViewerWindow("test")
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    state = small_states()[0]
    window.mip_box.setChecked(True)  # every neuron is drawn on the XY max projection
    window.show_state(state)
    qtbot.waitExposed(window)
    row = next(r for r, i in enumerate(state.track_ids.tolist()) if i not in window.selected_ids)
    target = int(state.track_ids[row])
    z, y, x = state.track_positions_um[row]
    plot = window.volume.xy.plot
    view_pos = window.images.mapFromScene(
        plot.getViewBox().mapViewToScene(QtCore.QPointF(float(x), float(y)))
    )
    qtbot.mouseClick(window.images.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=view_pos)
    assert window.selected_ids == [target]  # the first click replaces the automatic selection
    assert list(window.traces._curves) == [target]
    qtbot.mouseClick(window.images.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=view_pos)
    assert window.selected_ids == []

    row = 7  # raster rows are sorted by ID
    raster_view = window.traces.raster_plot.getViewBox()
    row_centre = window.traces.raster.mapToView(QtCore.QPointF(5.0, row + 0.5))
    pos = window.trace_view.mapFromScene(raster_view.mapViewToScene(row_centre))
    qtbot.mouseClick(window.trace_view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    assert window.selected_ids == [int(np.sort(state.trace_ids)[row])]


def test_viewer_process_runs_beside_the_publisher(tmp_path) -> None:
    address = _free_address()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with PublisherThread(address, t0=0):
        process = launch_viewer_process(address, env=env)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                process.wait(timeout=3)  # still showing data: it only exits when its window closes
        finally:
            process.terminate()
            process.wait(timeout=10)
