"""The viewer with a live readout (real Qt widgets, offscreen): every reference neuron marked in XY/XZ/YZ with
its ID and its current dF/F and confidence, traces for all of them, and the last calibration in the status."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from view_data import message_arrays, small_states  # noqa: E402

from wire.messages import decode, encode  # noqa: E402


def _readout_state():
    """A snapshot as the pipeline publishes it with a readout: per-neuron dF/F and confidence (SNR), and
    calibration stats."""
    from display.state import ViewState

    base = small_states()[0]
    n = len(base.track_ids)
    dff = np.linspace(-0.2, 1.0, n).astype(np.float32)
    confidence = np.where(np.arange(n) % 2 == 0, 12.0, 0.0).astype(np.float32)  # SNR
    stats = {**base.stats, "last_calibration_host_s": time.time() - 12.0, "calibrations": 2,
             "reference_neurons": n, "calibration_pause_s": 0.6, "calibration_frames_cost": 60}
    arrays = {**message_arrays(base), "track_dff": dff, "track_confidence": confidence}
    message = decode([bytes(f) for f in encode(0, base.t, arrays, stats, base.meta)])
    return ViewState.from_message(message)


def test_every_reference_neuron_is_marked_with_its_readout(qtbot) -> None:
    from display.window import ViewerWindow

    window = ViewerWindow("live test")
    qtbot.addWidget(window)
    state = _readout_state()
    n = len(state.track_ids)
    np.testing.assert_array_equal(state.track_dff, np.linspace(-0.2, 1.0, n).astype(np.float32))
    window.mip_box.setChecked(True)  # the XY projection shows all neurons, not only those near one plane
    window.show_state(state)
    for view in ("xy", "xz", "yz"):
        markers = window.volume.markers[view]
        shown = set(markers.points.data["data"].tolist()) | set(markers.selected.data["data"].tolist())
        assert shown == set(state.track_ids.tolist())
    points = {int(p.data()): p for p in window.volume.markers["xz"].points.points()}
    low, high = min(points), max(points)  # dF/F rises with the ID in this state
    assert points[low].brush().color() != points[high].brush().color()
    alphas = {i: points[i].brush().color().alpha() for i in points}
    assert all(alphas[i] > alphas[i + 1] for i in points if i % 2 == 0 and i + 1 in points)  # doubt fades
    assert len(window.volume.markers["xy"].labels.data) == n  # every ID labelled
    assert window.traces.row_ids.tolist() == sorted(state.trace_ids.tolist())  # a raster row for each
    status = window.status_label.text()
    assert "calibrated 12 s ago (2 scans, 12 neurons, paused 0.6 s = 60 frames)" in status


def test_selected_neurons_show_their_current_value_and_confidence(qtbot) -> None:
    from display.window import ViewerWindow

    window = ViewerWindow("live test")
    qtbot.addWidget(window)
    state = _readout_state()
    window.show_state(state)
    window.toggle_selection(11)  # the first click replaces the automatic selection
    window.toggle_selection(4)
    text = window.readout_label.text()
    assert text.startswith(f"readout of {len(state.track_ids)} reference neurons")
    assert "#11 dF/F +1.00, SNR 0.0; #4 dF/F +0.24, SNR 12.0" in text
    window.show_state(dataclasses.replace(state, track_dff=None, track_confidence=None))
    assert window.readout_label.text() == ""  # volume tracking: no readout to show
